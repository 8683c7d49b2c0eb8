/* mode=selftest: CPU/PIO checks, then each virtio device kind: init, write, read back, verify. */
#include "virtio.h"

static inline void raw_outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 raw_inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void check_cpu(void) {
	u64 cs, fl;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	__asm__ volatile("pushfq; popq %0" : "=r"(fl));
	if ((cs & 3) == 3) pass("cpu.cpl3");
	else fail("cpu.cpl3", "cs=0x%x", cs);
	printf("RESULT rflags=0x%x iopl=%u\n", fl, (fl >> 12) & 3);
	/* 8250 scratch register (base+7): raw IN/OUT from CPL3 (trapped and replayed if IOPL is not honoured). */
	u64 before = gp_replays;
	raw_outb(SERIAL_PORT + 7, 0xa5);
	u8 a = raw_inb(SERIAL_PORT + 7);
	raw_outb(SERIAL_PORT + 7, 0x5a);
	u8 b = raw_inb(SERIAL_PORT + 7);
	if (a == 0xa5 && b == 0x5a) pass("pio.scratch");
	else fail("pio.scratch", "read 0x%x 0x%x", (u64)a, (u64)b);
	printf("RESULT pio_replayed=%u\n", gp_replays - before);
	/* Memory: a page written and read back through the bump allocator. */
	u8 *p = alloc(8192, 4096);
	for (int i = 0; i < 8192; i++) p[i] = (u8)(i * 7 + 3);
	int bad = 0;
	for (int i = 0; i < 8192; i++) bad += p[i] != (u8)(i * 7 + 3);
	if (!bad) pass("mem.rw");
	else fail("mem.rw", "%u bytes differ", (u64)bad);
}

/* ---- virtio-blk ---- */
struct blk_req { u32 type, reserved; u64 sector; };
#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_T_GET_ID 8

int blk_io(struct vq *q, u32 type, u64 sector, void *buf, u32 len, u8 *status_out) {
	struct blk_req *h = alloc(sizeof *h, 16);
	u8 *st = alloc(1, 1);
	h->type = type;
	h->sector = sector;
	*st = 0xff;
	struct vbuf b[3] = {{(u64)h, 16, 0}, {(u64)buf, len, type != BLK_T_OUT}, {(u64)st, 1, 1}};
	vq_send(q, b, 3);
	u32 id, ulen;
	int r = vq_wait(q, &id, &ulen, poll_budget);
	if (status_out) *status_out = *st;
	return r;
}

void selftest_blk(struct vdev *d);
void selftest_blk_ro(struct vdev *d);
extern u64 blk_seed;

/* ---- virtio-rng ---- */
static void selftest_rng(struct vdev *d) {
	struct vq q;
	int r = vdev_init(d, 0);
	if (r || vq_setup(d, &q, 0, 64)) { fail("rng.init", "step %d", (i64)r); return; }
	vdev_driver_ok(d);
	pass("rng.init");
	u8 *a = alloc(64, 64), *b = alloc(64, 64);
	struct vbuf ba = {(u64)a, 64, 1}, bb = {(u64)b, 64, 1};
	u32 la = 0, lb = 0;
	vq_send(&q, &ba, 1);
	int ra = vq_wait(&q, NULL, &la, poll_budget);
	vq_send(&q, &bb, 1);
	int rb = vq_wait(&q, NULL, &lb, poll_budget);
	if (ra != 1 || rb != 1 || la == 0 || lb == 0 || la > 64 || lb > 64) {
		fail("rng.read", "poll %d/%d len %u/%u", (i64)ra, (i64)rb, (u64)la, (u64)lb);
		return;
	}
	int zeros = 0;
	for (u32 i = 0; i < la; i++) zeros += a[i] == 0;
	if (zeros == (int)la || (la == lb && !memcmp(a, b, la))) fail("rng.read", "entropy looks constant");
	else pass("rng.read");
	vdev_reset(d);
}

/* ---- virtio-console (port 0, no MULTIPORT): the host side echoes what it receives ---- */
static void selftest_console(struct vdev *d) {
	struct vq rx, tx;
	int r = vdev_init(d, 0);
	if (r || vq_setup(d, &rx, 0, 64) || vq_setup(d, &tx, 1, 64)) { fail("console.init", "step %d", (i64)r); return; }
	u8 *rbuf = alloc(4 * 256, 64);
	for (int i = 0; i < 4; i++) {
		struct vbuf b = {(u64)(rbuf + 256 * i), 256, 1};
		vq_add_at(&rx, (u16)i, &b, 1);
	}
	rx.next_desc = 4;
	vdev_driver_ok(d);
	vq_kick(&rx);
	pass("console.init");
	char *msg = alloc(64, 64);
	const char *m = "ts-vmm virtio-console echo 0123456789abcdef\n";
	usize n = strlen(m);
	memcpy(msg, m, n);
	msg[27] = (char)('a' + rdtsc() % 26); /* vary per run */
	msg[n - 1] = 0;
	printf("RESULT console.sent=\"%s\"\n", msg); /* the host checks its peer received exactly this */
	msg[n - 1] = '\n';
	struct vbuf tb = {(u64)msg, (u32)n, 0};
	vq_send(&tx, &tb, 1);
	if (vq_wait(&tx, NULL, NULL, poll_budget) != 1) { fail("console.write", "tx not used"); return; }
	pass("console.write");
	char got[128];
	usize have = 0;
	while (have < n) {
		u32 id, len;
		int pr = vq_wait(&rx, &id, &len, poll_budget);
		if (pr != 1) break;
		if (id >= 4 || len > 256 || have + len > sizeof got) { fail("console.echo", "bad used id %u len %u", (u64)id, (u64)len); return; }
		memcpy(got + have, rbuf + 256 * id, len);
		have += len;
		struct vbuf b = {(u64)(rbuf + 256 * id), 256, 1};
		vq_add_at(&rx, (u16)id, &b, 1);
		vq_kick(&rx);
	}
	if (have == n && !memcmp(got, msg, n)) pass("console.echo");
	else fail("console.echo", "got %u of %u bytes back", (u64)have, (u64)n);
	vdev_reset(d);
}

/* ---- virtio-net: ARP who-has 10.0.2.2 from 10.0.2.15; expects the peer's reply ---- */
#define NET_F_MAC (1ull << 5)
static void selftest_net(struct vdev *d) {
	struct vq rx, tx;
	int r = vdev_init(d, NET_F_MAC);
	if (r || vq_setup(d, &rx, 0, 64) || vq_setup(d, &tx, 1, 64)) { fail("net.init", "step %d", (i64)r); return; }
	u8 mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
	if (d->features & NET_F_MAC)
		for (int i = 0; i < 6; i++) mac[i] = vcfg8(d, (u32)i);
	u8 *rbuf = alloc(8 * 2048, 64);
	for (int i = 0; i < 8; i++) {
		struct vbuf b = {(u64)(rbuf + 2048 * i), 2048, 1};
		vq_add_at(&rx, (u16)i, &b, 1);
	}
	vdev_driver_ok(d);
	vq_kick(&rx);
	printf("RESULT net.mac=%x:%x:%x:%x:%x:%x\n", (u64)mac[0], (u64)mac[1], (u64)mac[2], (u64)mac[3], (u64)mac[4], (u64)mac[5]);
	pass("net.init");
	/* virtio_net_hdr (12 bytes with VERSION_1) + Ethernet + ARP */
	u8 *f = alloc(12 + 42, 64);
	u8 *e = f + 12;
	memset(e, 0xff, 6);
	memcpy(e + 6, mac, 6);
	e[12] = 0x08; e[13] = 0x06;
	u8 arp[28] = {0, 1, 8, 0, 6, 4, 0, 1};
	memcpy(arp + 8, mac, 6);
	arp[14] = 10; arp[15] = 0; arp[16] = 2; arp[17] = 15;
	arp[24] = 10; arp[25] = 0; arp[26] = 2; arp[27] = 2;
	memcpy(e + 14, arp, 28);
	struct vbuf tb = {(u64)f, 12 + 42, 0};
	vq_send(&tx, &tb, 1);
	if (vq_wait(&tx, NULL, NULL, poll_budget) != 1) { fail("net.tx", "tx not used"); return; }
	pass("net.tx");
	for (int tries = 0; tries < 8; tries++) {
		u32 id, len;
		if (vq_wait(&rx, &id, &len, poll_budget) != 1) break;
		if (id >= 8 || len > 2048) { fail("net.arp-reply", "bad used id %u len %u", (u64)id, (u64)len); return; }
		const u8 *p = rbuf + 2048 * id + 12;
		if (len >= 12 + 42 && p[12] == 8 && p[13] == 6 && p[20] == 0 && p[21] == 2 && p[28] == 10 && p[29] == 0 &&
		    p[30] == 2 && p[31] == 2 && !memcmp(p + 32, mac, 6)) {
			printf("RESULT net.peer_mac=%x:%x:%x:%x:%x:%x\n", (u64)p[22], (u64)p[23], (u64)p[24], (u64)p[25], (u64)p[26], (u64)p[27]);
			pass("net.arp-reply");
			vdev_reset(d);
			return;
		}
		struct vbuf b = {(u64)(rbuf + 2048 * id), 2048, 1};
		vq_add_at(&rx, (u16)id, &b, 1);
		vq_kick(&rx);
	}
	fail("net.arp-reply", "no ARP reply from 10.0.2.2");
	vdev_reset(d);
}

/* ---- virtio-balloon: config write/read back, inflate then deflate one page ---- */
static void selftest_balloon(struct vdev *d) {
	struct vq inf, def;
	int r = vdev_init(d, 0);
	if (r || vq_setup(d, &inf, 0, 64) || vq_setup(d, &def, 1, 64)) { fail("balloon.init", "step %d", (i64)r); return; }
	vdev_driver_ok(d);
	pass("balloon.init");
	printf("RESULT balloon.num_pages=%u\n", (u64)vcfg32(d, 0));
	/*
	 * Configuration-change interrupt: with balloon_config_wait=1 the host
	 * changes the balloon target (QEMU: QMP `balloon`) when it sees the line
	 * below; the device must raise INTERRUPT_STATUS bit 1 and num_pages must
	 * change. Without it nothing on the host side would change the config.
	 */
	if (cmdline_u64("balloon_config_wait", 0)) {
		volatile struct irq_dev *s = irq_of(d);
		u32 n0 = vcfg32(d, 0), gen0 = vr(d, VIRTIO_MMIO_CONFIG_GENERATION);
		u64 c0 = s ? s->config : 0;
		print("RESULT balloon.config-wait=1\n");
		u64 t = rdtsc();
		if (s) while (s->config == c0 && rdtsc() - t < 2 * poll_budget) pause_();
		else while (vcfg32(d, 0) == n0 && rdtsc() - t < 2 * poll_budget) pause_();
		u32 n1 = vcfg32(d, 0), gen1 = vr(d, VIRTIO_MMIO_CONFIG_GENERATION);
		printf("RESULT balloon.num_pages_after=%u config_irqs=%u generation=%u->%u\n", (u64)n1, s ? s->config - c0 : 0, (u64)gen0, (u64)gen1);
		if (n1 == n0) fail("balloon.config-change", "num_pages stayed %u", (u64)n0);
		else if (s && s->config == c0) fail("balloon.config-change", "num_pages changed to %u without a configuration-change interrupt", (u64)n1);
		else pass("balloon.config-change");
	} else skip("balloon.config-change", "the host changes no config (balloon_config_wait=1 asks it to)");
	vcfg32w(d, 4, 1);
	u32 actual = vcfg32(d, 4);
	if (actual == 1) pass("balloon.config-actual");
	else fail("balloon.config-actual", "wrote 1, read %u", (u64)actual);
	/*
	 * Inflate balloon_mib= (default 16) MiB of touched RAM at 32 MiB (free in
	 * selftest; one heap page instead when the PVH memory map says RAM ends
	 * below; without a memory map the guest assumes the harness's 64 MiB),
	 * then deflate and reuse it. The marker lines let the host sample the VMM's RSS
	 * (src/peer-checks.ts watchBalloon); the guest waits after each so the
	 * sample sees the right state.
	 */
	u64 bytes = cmdline_u64("balloon_mib", 16) << 20;
	u8 *region = (u8 *)(32ull << 20);
	if (ram_top && ram_top < (32ull << 20) + bytes) bytes = 0;
	u32 npages = (u32)(bytes >> 12);
	u32 *pfns = alloc(4ull * (npages ? npages : 1), 4096);
	if (!npages) { pfns[0] = (u32)((u64)alloc(4096, 4096) >> 12); npages = 1; region = NULL; }
	else for (u32 i = 0; i < npages; i++) { memset(region + 4096ull * i, (int)(i | 1), 4096); pfns[i] = (u32)(((u64)region >> 12) + i); }
	printf("RESULT balloon.touched=%u\n", (u64)npages * 4096);
	u64 t = rdtsc();
	while (rdtsc() - t < 650000000ull) pause_(); /* ~0.25 s for the host to sample */
	struct vbuf b = {(u64)pfns, 4 * npages, 0};
	vq_send(&inf, &b, 1);
	int ri = vq_wait(&inf, NULL, NULL, poll_budget);
	printf("RESULT balloon.inflated=%u\n", (u64)npages * 4096);
	t = rdtsc();
	while (rdtsc() - t < 650000000ull) pause_(); /* ~0.25 s for the host to sample */
	vq_send(&def, &b, 1);
	int rd = vq_wait(&def, NULL, NULL, poll_budget);
	int reuse_bad = 0;
	if (region) {
		for (u32 i = 0; i < npages; i += 17) region[4096ull * i + 5] = (u8)i;
		for (u32 i = 0; i < npages; i += 17) reuse_bad += region[4096ull * i + 5] != (u8)i;
	}
	if (ri == 1 && rd == 1 && !reuse_bad) pass("balloon.inflate-deflate");
	else fail("balloon.inflate-deflate", "wait %d/%d, %u pages unusable after deflate", (i64)ri, (i64)rd, (u64)reuse_bad);
	vcfg32w(d, 4, 0);
	vdev_reset(d);
}

/*
 * ---- virtio-vsock: guest CID from config; a REQUEST to an unbound host port must come back as RST;
 * with vsock_port=P, a stream to host port P (the host echoes): REQUEST/RESPONSE, bytes both ways,
 * SHUTDOWN answered by RST ----
 */
struct vsock_hdr {
	u64 src_cid, dst_cid;
	u32 src_port, dst_port, len;
	u16 type, op;
	u32 flags, buf_alloc, fwd_cnt;
} __attribute__((packed));
#define VSOCK_OP_REQUEST 1
#define VSOCK_OP_RESPONSE 2
#define VSOCK_OP_RST 3
#define VSOCK_OP_SHUTDOWN 4
#define VSOCK_OP_RW 5
#define VSOCK_GUEST_PORT 40002

#define VSOCK_MAX_SEND 64
static u8 *vsock_pkt; /* header + VSOCK_MAX_SEND bytes, reused: vsock_send waits until the device took it */

/* Sends one packet (header + len <= VSOCK_MAX_SEND bytes of data) on tx and waits for the device to take it. */
static void vsock_send(struct vq *tx, u64 cid, u32 dst_port, u16 op, u32 flags, const void *data, u32 len, u32 fwd_cnt) {
	if (!vsock_pkt) vsock_pkt = alloc(sizeof(struct vsock_hdr) + VSOCK_MAX_SEND, 8);
	if (len > VSOCK_MAX_SEND) len = VSOCK_MAX_SEND;
	u8 *p = vsock_pkt;
	struct vsock_hdr *h = (struct vsock_hdr *)p;
	memset(h, 0, sizeof *h);
	h->src_cid = cid; h->dst_cid = 2; h->src_port = VSOCK_GUEST_PORT; h->dst_port = dst_port;
	h->len = len; h->type = 1; h->op = op; h->flags = flags; h->buf_alloc = 65536; h->fwd_cnt = fwd_cnt;
	if (len) memcpy(p + sizeof *h, data, len);
	struct vbuf b = {(u64)p, (u32)(sizeof *h + len), 0};
	vq_send(tx, &b, 1);
	vq_wait(tx, NULL, NULL, poll_budget);
}

/* Next rx packet for VSOCK_GUEST_PORT (others, e.g. credit updates to it, are returned too); re-posts the buffer. */
static int vsock_recv(struct vq *rx, u8 *rbuf, struct vsock_hdr *h, u8 *data, u32 cap, u32 *dlen) {
	u32 id, len;
	if (vq_wait(rx, &id, &len, poll_budget) != 1 || id >= 4 || len < sizeof *h || len > 1024) return 0;
	memcpy(h, rbuf + 1024 * id, sizeof *h);
	u32 n = len - (u32)sizeof *h;
	if (n > cap) n = cap;
	memcpy(data, rbuf + 1024 * id + sizeof *h, n);
	*dlen = n;
	struct vbuf b = {(u64)(rbuf + 1024 * id), 1024, 1};
	vq_add_at(rx, (u16)id, &b, 1);
	vq_kick(rx);
	return 1;
}

static void selftest_vsock_stream(struct vq *rx, struct vq *tx, u8 *rbuf, u64 cid, u32 port) {
	struct vsock_hdr g;
	u8 data[128];
	u32 n = 0;
	vsock_send(tx, cid, port, VSOCK_OP_REQUEST, 0, NULL, 0, 0);
	int ok = 0;
	for (int i = 0; i < 8 && !ok; i++) {
		if (!vsock_recv(rx, rbuf, &g, data, sizeof data, &n)) break;
		if (g.dst_port != VSOCK_GUEST_PORT) continue;
		if (g.op == VSOCK_OP_RESPONSE) ok = 1;
		else if (g.op == VSOCK_OP_RST) break;
	}
	if (!ok) { fail("vsock.connect", "no RESPONSE from host port %u", (u64)port); return; }
	pass("vsock.connect");
	char msg[48];
	const char *m = "ts-vmm vsock ping 0123456789";
	usize len = strlen(m);
	memcpy(msg, m, len + 1);
	msg[18] = (char)('a' + rdtsc() % 26); /* vary per run */
	printf("RESULT vsock.sent=\"%s\"\n", msg); /* the host checks its peer received exactly this */
	vsock_send(tx, cid, port, VSOCK_OP_RW, 0, msg, (u32)len, 0);
	char got[64];
	usize have = 0;
	for (int i = 0; i < 16 && have < len; i++) {
		if (!vsock_recv(rx, rbuf, &g, data, sizeof data, &n)) break;
		if (g.dst_port != VSOCK_GUEST_PORT || g.op != VSOCK_OP_RW) continue;
		if (have + n > sizeof got) break;
		memcpy(got + have, data, n);
		have += n;
	}
	if (have == len && !memcmp(got, msg, len)) pass("vsock.echo");
	else { fail("vsock.echo", "got %u of %u bytes back", (u64)have, (u64)len); return; }
	/* vsock_rtts=N (bench): N round trips of 64 bytes, each sent once the last one came back; the host times them. */
	u32 fwd = (u32)have;
	u64 rtts = cmdline_u64("vsock_rtts", 0), done = 0;
	char ping[64];
	memset(ping, 'R', sizeof ping);
	for (; done < rtts; done++) {
		vsock_send(tx, cid, port, VSOCK_OP_RW, 0, ping, sizeof ping, fwd);
		u32 back = 0;
		for (int i = 0; i < 16 && back < sizeof ping; i++) {
			if (!vsock_recv(rx, rbuf, &g, data, sizeof data, &n)) break;
			if (g.dst_port == VSOCK_GUEST_PORT && g.op == VSOCK_OP_RW) back += n;
		}
		fwd += back;
		if (back != sizeof ping) break;
	}
	if (rtts) printf("RESULT vsock.rtts=%u\n", done);
	vsock_send(tx, cid, port, VSOCK_OP_SHUTDOWN, 3, NULL, 0, fwd);
	for (int i = 0; i < 8; i++) {
		if (!vsock_recv(rx, rbuf, &g, data, sizeof data, &n)) break;
		if (g.dst_port == VSOCK_GUEST_PORT && g.op == VSOCK_OP_RST) { pass("vsock.close"); return; }
	}
	fail("vsock.close", "no RST after SHUTDOWN");
}

static void selftest_vsock(struct vdev *d) {
	struct vq rx, tx, ev;
	int r = vdev_init(d, 0);
	if (r || vq_setup(d, &rx, 0, 64) || vq_setup(d, &tx, 1, 64) || vq_setup(d, &ev, 2, 64)) {
		fail("vsock.init", "step %d", (i64)r);
		return;
	}
	u8 *rbuf = alloc(4 * 1024, 64);
	for (int i = 0; i < 4; i++) {
		struct vbuf b = {(u64)(rbuf + 1024 * i), 1024, 1};
		vq_add_at(&rx, (u16)i, &b, 1);
	}
	vdev_driver_ok(d);
	vq_kick(&rx);
	u64 cid = vcfg64(d, 0);
	u64 want = cmdline_u64("vsock_cid", 0);
	printf("RESULT vsock.cid=%u\n", cid);
	if (cid < 3 || (want && cid != want)) { fail("vsock.cid", "cid %u, expected %u", cid, want); return; }
	pass("vsock.cid");
	struct vsock_hdr *h = alloc(sizeof *h, 8);
	h->src_cid = cid; h->dst_cid = 2; h->src_port = 40000; h->dst_port = 9; h->type = 1; h->op = 1; h->buf_alloc = 65536;
	struct vbuf tb = {(u64)h, sizeof *h, 0};
	vq_send(&tx, &tb, 1);
	vq_wait(&tx, NULL, NULL, poll_budget);
	u32 id, len;
	if (vq_wait(&rx, &id, &len, poll_budget) == 1 && id < 4 && len >= sizeof *h) {
		const struct vsock_hdr *g = (const struct vsock_hdr *)(rbuf + 1024 * id);
		if (g->op == 3 && g->dst_port == 40000) pass("vsock.rst");
		else fail("vsock.rst", "op %u dst_port %u", (u64)g->op, (u64)g->dst_port);
		struct vbuf b = {(u64)(rbuf + 1024 * id), 1024, 1};
		vq_add_at(&rx, (u16)id, &b, 1);
		vq_kick(&rx);
	} else fail("vsock.rst", "no reply");
	u64 port = cmdline_u64("vsock_port", 0);
	if (port) selftest_vsock_stream(&rx, &tx, rbuf, cid, (u32)port);
	else skip("vsock.echo", "no vsock_port= on the command line");
	vdev_reset(d);
}

/* ---- virtio-rtc (virtio 1.4): CFG, CLOCK_CAP and READ of every clock; an alarm a few ms ahead and its notification ---- */
#define RTC_F_ALARM (1ull << 0)
#define RTC_REQ_READ 0x0001
#define RTC_REQ_CFG 0x1000
#define RTC_REQ_CLOCK_CAP 0x1001
#define RTC_REQ_SET_ALARM 0x1004
#define RTC_NOTIF_ALARM 0x2000
#define RTC_CLOCK_UTC 0
#define RTC_CLOCK_TAI 1
#define RTC_CLOCK_MONOTONIC 2
#define RTC_FLAG_ALARM_CAP 1
#define RTC_S_ENODEV 3
#define RTC_MAX_CLOCKS 8
static inline u16 get16(const u8 *p) { return (u16)(p[0] | p[1] << 8); }
static inline u64 get64(const u8 *p) { u64 v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }
static inline void put16(u8 *p, u16 v) { p[0] = (u8)v; p[1] = (u8)(v >> 8); }
static inline void put64(u8 *p, u64 v) { for (int i = 0; i < 8; i++) p[i] = (u8)(v >> 8 * i); }

/* One requestq round trip: the request (type, clock id at 8, rlen bytes) out, wlen response bytes back. Returns the used length or -1. */
static int rtc_call(struct vq *q, u8 *req, u32 rlen, u8 *resp, u32 wlen) {
	memset(resp, 0xee, wlen);
	struct vbuf b[2] = {{(u64)req, rlen, 0}, {(u64)resp, wlen, 1}};
	vq_send(q, b, 2);
	u32 len;
	return vq_wait(q, NULL, &len, poll_budget) == 1 ? (int)len : -1;
}
static int rtc_simple(struct vq *q, u8 *req, u16 type, u16 clock, u8 *resp, u32 wlen) {
	memset(req, 0, 24);
	put16(req, type);
	put16(req + 8, clock);
	return rtc_call(q, req, type == RTC_REQ_CFG ? 8 : 16, resp, wlen);
}

static void selftest_rtc(struct vdev *d) {
	struct vq q, aq;
	int r = vdev_init(d, RTC_F_ALARM);
	int alarm = (d->features & RTC_F_ALARM) != 0;
	if (r || vq_setup(d, &q, 0, 64) || (alarm && vq_setup(d, &aq, 1, 16))) { fail("rtc.init", "step %d", (i64)r); return; }
	vdev_driver_ok(d);
	pass("rtc.init");
	u8 *req = alloc(24, 8), *resp = alloc(24, 8);
	int n = rtc_simple(&q, req, RTC_REQ_CFG, 0, resp, 16);
	u32 clocks = n == 16 && resp[0] == 0 ? get16(resp + 8) : 0;
	printf("RESULT rtc.clocks=%u alarm_feature=%u\n", (u64)clocks, (u64)alarm);
	if (n != 16 || resp[0] != 0 || clocks == 0 || clocks > RTC_MAX_CLOCKS) { fail("rtc.cfg", "len %d status %u clocks %u", (i64)n, (u64)resp[0], (u64)clocks); vdev_reset(d); return; }
	pass("rtc.cfg");
	/* Each clock: its capabilities, then two readings around a ~1 ms spin. */
	int bad = 0, utc = -1, tai = -1, mono = -1, alarm_clock = -1;
	u64 first[RTC_MAX_CLOCKS];
	for (u32 c = 0; c < clocks; c++) {
		n = rtc_simple(&q, req, RTC_REQ_CLOCK_CAP, (u16)c, resp, 16);
		if (n != 16 || resp[0] != 0) { fail("rtc.clock-cap", "clock %u: len %d status %u", (u64)c, (i64)n, (u64)resp[0]); bad++; continue; }
		u8 type = resp[8], flags = resp[10];
		int n1 = rtc_simple(&q, req, RTC_REQ_READ, (u16)c, resp, 16);
		u64 v1 = get64(resp + 8), st1 = resp[0];
		u64 t = rdtsc();
		while (rdtsc() - t < 3000000ull) pause_();
		int n2 = rtc_simple(&q, req, RTC_REQ_READ, (u16)c, resp, 16);
		u64 v2 = get64(resp + 8), st2 = resp[0];
		printf("RESULT rtc.clock.%u=type:%u,flags:%u,ns:%u,later:%u\n", (u64)c, (u64)type, (u64)flags, v1, v2);
		if (n1 != 16 || n2 != 16 || st1 || st2) { fail("rtc.read", "clock %u: len %d/%d status %u/%u", (u64)c, (i64)n1, (i64)n2, st1, st2); bad++; continue; }
		first[c] = v1;
		if (type == RTC_CLOCK_UTC && utc < 0) utc = (int)c;
		if (type == RTC_CLOCK_TAI && tai < 0) tai = (int)c;
		if (type == RTC_CLOCK_MONOTONIC && mono < 0) { mono = (int)c; if (v2 <= v1) { fail("rtc.monotonic", "%u then %u", v1, v2); bad++; } }
		if ((flags & RTC_FLAG_ALARM_CAP) && (alarm_clock < 0 || type == RTC_CLOCK_MONOTONIC)) alarm_clock = (int)c;
	}
	if (!bad) pass("rtc.read");
	if (mono >= 0 && !bad) pass("rtc.monotonic");
	/* UTC: close to the host's time when the harness passed it (rtc_host_s=), else at least 2020..2100. */
	if (utc < 0) fail("rtc.utc", "no UTC clock");
	else {
		u64 s = first[utc] / 1000000000ull, host = cmdline_u64("rtc_host_s", 0);
		u64 diff = host > s ? host - s : s - host;
		printf("RESULT rtc.utc_s=%u host_s=%u\n", s, host);
		if (host ? diff > 120 : (s < 1577836800ull || s > 4102444800ull)) fail("rtc.utc", "UTC %u s, host %u s", s, host);
		else pass("rtc.utc");
		if (tai >= 0) {
			u64 off = first[tai] - first[utc]; /* TAI was read after UTC */
			printf("RESULT rtc.tai_minus_utc_ms=%u\n", off / 1000000ull);
			if (off < 37000000000ull || off > 38000000000ull) fail("rtc.tai", "TAI - UTC = %u ns", off);
			else pass("rtc.tai");
		}
	}
	/* A clock id past num_clocks is ENODEV, with the full response length. */
	n = rtc_simple(&q, req, RTC_REQ_READ, (u16)clocks, resp, 16);
	if (n == 16 && resp[0] == RTC_S_ENODEV) pass("rtc.bad-clock");
	else fail("rtc.bad-clock", "len %d status %u", (i64)n, (u64)resp[0]);
	if (!alarm || alarm_clock < 0) { skip("rtc.alarm", "no VIRTIO_RTC_F_ALARM or no clock with an alarm"); vdev_reset(d); return; }
	/* Alarm: buffers on the alarmq, then SET_ALARM 5 ms ahead; the notification must name the clock and come after the alarm time. */
	u8 *nb = alloc(4 * 16, 16);
	for (int i = 0; i < 4; i++) {
		struct vbuf b = {(u64)(nb + 16 * i), 16, 1};
		vq_add_at(&aq, (u16)i, &b, 1);
	}
	aq.next_desc = 4;
	vq_kick(&aq);
	rtc_simple(&q, req, RTC_REQ_READ, (u16)alarm_clock, resp, 16);
	u64 at = get64(resp + 8) + 5000000ull;
	memset(req, 0, 24);
	put16(req, RTC_REQ_SET_ALARM);
	put64(req + 8, at);
	put16(req + 16, (u16)alarm_clock);
	req[18] = 1; /* VIRTIO_RTC_FLAG_ALARM_ENABLED */
	n = rtc_call(&q, req, 24, resp, 8);
	if (n != 8 || resp[0] != 0) { fail("rtc.alarm", "SET_ALARM len %d status %u", (i64)n, (u64)resp[0]); vdev_reset(d); return; }
	u32 id = 0, len = 0;
	int w = vq_wait(&aq, &id, &len, poll_budget);
	rtc_simple(&q, req, RTC_REQ_READ, (u16)alarm_clock, resp, 16);
	u64 after = get64(resp + 8);
	if (w != 1 || id >= 4 || len != 16) fail("rtc.alarm", "no notification (wait %d id %u len %u)", (i64)w, (u64)id, (u64)len);
	else if (get16(nb + 16 * id) != RTC_NOTIF_ALARM || get16(nb + 16 * id + 8) != alarm_clock) fail("rtc.alarm", "notification type 0x%x clock %u", (u64)get16(nb + 16 * id), (u64)get16(nb + 16 * id + 8));
	else if (after < at) fail("rtc.alarm", "notified %u ns before the alarm time", at - after);
	else { printf("RESULT rtc.alarm_clock=%u late_us=%u\n", (u64)alarm_clock, (after - at) / 1000); pass("rtc.alarm"); }
	/* Clear the alarm (the spec's advice before giving the device up): time 0, disabled. */
	memset(req, 0, 24);
	put16(req, RTC_REQ_SET_ALARM);
	put16(req + 16, (u16)alarm_clock);
	rtc_call(&q, req, 24, resp, 8);
	vdev_reset(d);
}

static const struct { u32 id; const char *name; void (*fn)(struct vdev *); } kinds[] = {
	{VIRTIO_ID_BLOCK, "blk", selftest_blk},       {VIRTIO_ID_RNG, "rng", selftest_rng},
	{VIRTIO_ID_CONSOLE, "console", selftest_console}, {VIRTIO_ID_NET, "net", selftest_net},
	{VIRTIO_ID_VSOCK, "vsock", selftest_vsock},   {VIRTIO_ID_BALLOON, "balloon", selftest_balloon},
	{VIRTIO_ID_RTC, "rtc", selftest_rtc},
};

/*
 * Interrupt verdict for one device after its checks: at least one interrupt
 * with INTERRUPT_STATUS bit 0 and no completion that had to be found without
 * its interrupt. Interrupts that find INTERRUPT_STATUS already 0 are counted
 * (`empty`) but allowed: with an edge-triggered IOAPIC pin, a VMM that
 * re-asserts a line that is still high delivers a second edge (KVM does).
 */
static void check_irq(const char *kind, struct vdev *d, u64 missing_before) {
	volatile struct irq_dev *s = irq_of(d);
	char name[32];
	usize n = strlen(kind);
	memcpy(name, kind, n);
	memcpy(name + n, ".irq", 5);
	if (!s) { fail(name, "irq %u could not be routed through the IOAPIC", (u64)d->irq); return; }
	u64 missing = vq_missing_irqs - missing_before;
	printf("RESULT irq.%s=count:%u,used:%u,config:%u,empty:%u,status_or:0x%x,missing:%u\n", kind, s->count, s->used,
	       s->config, s->empty, s->status_or, missing);
	/* A line that stays asserted after INTERRUPT_ACK (level pins) shows up as a storm of empty interrupts. */
	if (s->used == 0 || missing) fail(name, "%u interrupts (%u used-buffer), %u completions without one", s->count, s->used, missing);
	else if (s->empty > 16 + s->used) fail(name, "%u interrupts found INTERRUPT_STATUS 0 (%u used-buffer): the line stays asserted after INTERRUPT_ACK", s->empty, s->used);
	else pass(name);
}

static struct vdev *blk_rw;

int mode_selftest(void) {
	blk_seed = cmdline_u64("seed", rdtsc());
	srand64(blk_seed);
	printf("RESULT seed=%u\n", blk_seed);
	vq_honour_no_notify = 1;
	check_cpu();
	vdev_list();
	int use_irq = (int)cmdline_u64("irq", 1);
	if (use_irq) {
		if (irq_setup((int)cmdline_u64("x2apic", 1)) == 0) { vq_use_irq = 1; pass("irq.setup"); }
		else use_irq = 0;
	} else skip("irq", "polling (irq=0)");
	for (usize k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
		struct vdev *d = vdev_find(kinds[k].id, 0);
		if (kinds[k].id == VIRTIO_ID_BLOCK) {
			/* blk: the first disk that does not offer VIRTIO_BLK_F_RO (read-only ones are checked below). */
			struct vdev *e;
			for (int n = 0; (e = vdev_find(VIRTIO_ID_BLOCK, n)); n++)
				if (e->version == 2 && !vdev_offers(e, 5)) { d = e; break; }
			blk_rw = d;
		}
		if (!d) { skip(kinds[k].name, "absent"); continue; }
		if (d->version != 2) { fail(kinds[k].name, "virtio-mmio version %u (want 2)", (u64)d->version); continue; }
		u64 missing = vq_missing_irqs;
		if (use_irq && irq_route(d)) fail("irq.route", "%s irq %u", kinds[k].name, (u64)d->irq);
		kinds[k].fn(d);
		if (use_irq) check_irq(kinds[k].name, d, missing);
		if (use_irq) irq_unroute(d);
	}
	/* Further blk disks: read-only ones (VIRTIO_BLK_F_RO offered) get the refusal checks. */
	for (int n = 0; vdev_find(VIRTIO_ID_BLOCK, n); n++) {
		struct vdev *ro = vdev_find(VIRTIO_ID_BLOCK, n);
		if (ro->version == 2 && ro != blk_rw) selftest_blk_ro(ro);
	}
	if (use_irq) {
		printf("RESULT irq.other=%u last=0x%x spurious=%u\n", irq_counts.other, irq_counts.last_other, irq_counts.spurious);
		if (irq_counts.other) fail("irq.unexpected", "%u interrupts on unrouted vectors (last 0x%x)", irq_counts.other, irq_counts.last_other);
	}
	printf("RESULT failures=%u\n", (u64)failures);
	return failures ? 1 : 0;
}
