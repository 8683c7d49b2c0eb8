/* mode=bench-exits, mode=bench-blk and mode=bench-net. Times are raw TSC cycles: both VMMs run
 * on the host's TSC, so the harness compares cycles directly and converts them
 * to time with the host's KVM_GET_TSC_KHZ. */
#include "virtio.h"

int blk_io(struct vq *q, u32 type, u64 sector, void *buf, u32 len, u8 *status_out);

static void report_tsc_khz(void) {
	u32 a, b, c, d;
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
	u32 maxleaf = a;
	if (maxleaf >= 0x15) {
		__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x15), "c"(0));
		if (a && b && c) { printf("RESULT tsc_khz=%u\n", (u64)c / 1000 * b / a); return; }
	}
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000000), "c"(0));
	if (a >= 0x40000010) {
		__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0x40000010), "c"(0));
		if (a) { printf("RESULT tsc_khz=%u\n", (u64)a); return; }
	}
	print("RESULT tsc_khz=unknown\n");
}

int mode_bench_exits(void) {
	u64 n = cmdline_u64("n", 20000), npio = cmdline_u64("npio", 2000);
	report_tsc_khz();
	printf("RESULT tsc_mark=%u\n", rdtsc());
	volatile u32 *mmio = (volatile u32 *)(u64)BENCH_MMIO;
	u64 t0 = rdtsc();
	for (u64 i = 0; i < n; i++) *mmio = (u32)i;
	u64 t1 = rdtsc();
	printf("RESULT exits_mmio_write_n=%u\nRESULT exits_mmio_write_cycles=%u\n", n, t1 - t0);
	t0 = rdtsc();
	for (u64 i = 0; i < n; i++) (void)*mmio;
	t1 = rdtsc();
	printf("RESULT exits_mmio_read_n=%u\nRESULT exits_mmio_read_cycles=%u\n", n, t1 - t0);
	/* PIO from CPL3: a raw OUT (trapped as #GP and replayed at CPL0 when IOPL is not honoured). */
	u64 before = gp_replays;
	t0 = rdtsc();
	for (u64 i = 0; i < npio; i++) __asm__ volatile("outb %0, %1" ::"a"((u8)i), "Nd"((u16)BENCH_PORT));
	t1 = rdtsc();
	printf("RESULT exits_pio_raw_n=%u\nRESULT exits_pio_raw_cycles=%u\nRESULT exits_pio_raw_replayed=%u\n", npio, t1 - t0,
	       gp_replays - before);
	/* PIO through the syscall gate. */
	t0 = rdtsc();
	for (u64 i = 0; i < npio; i++) syscall3(SYS_OUTB, BENCH_PORT, (long)(i & 0xff), 0);
	t1 = rdtsc();
	printf("RESULT exits_pio_gate_n=%u\nRESULT exits_pio_gate_cycles=%u\n", npio, t1 - t0);
	/* Queue notifications (ioeventfd-backed in QEMU: no user-space exit) on a blk
	 * queue with nothing new in the avail ring. */
	struct vdev *d = vdev_find(VIRTIO_ID_BLOCK, 0);
	struct vq q;
	if (d && !vdev_init(d, 0) && !vq_setup(d, &q, 0, 64)) {
		vdev_driver_ok(d);
		t0 = rdtsc();
		for (u64 i = 0; i < n; i++) vw(d, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
		t1 = rdtsc();
		printf("RESULT exits_notify_n=%u\nRESULT exits_notify_cycles=%u\n", n, t1 - t0);
		/* Exits on real device registers. QueueNotify with queue index 1: virtio-blk
		 * has one queue here, so no ioeventfd is registered for that value (QEMU
		 * matches its notify eventfds on the queue index) and the write reaches the
		 * VMM's virtio-mmio handler, which finds no such queue and ignores it. Then a
		 * config-space read (capacity, low half) and a ConfigGeneration read, both
		 * answered by the device model in user space. The four loops (with queue 0's
		 * ioeventfd notify again) run interleaved in ROUNDS rounds so that a load
		 * change on the host hits them alike; totals and the fastest round of each
		 * are printed. */
		enum { ROUNDS = 10 };
		static const char *const names[] = {"notify_rounds", "notify_user", "config_read", "config_gen_read"};
		u64 total[4] = {0, 0, 0, 0}, best[4] = {~0ull, ~0ull, ~0ull, ~0ull};
		u64 per = n / ROUNDS ? n / ROUNDS : 1;
		u32 sink = 0;
		for (u32 r = 0; r < ROUNDS; r++) {
			for (u32 k = 0; k < 4; k++) {
				t0 = rdtsc();
				for (u64 i = 0; i < per; i++) {
					if (k == 0) vw(d, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
					else if (k == 1) vw(d, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
					else if (k == 2) sink ^= vcfg32(d, 0);
					else sink ^= vr(d, VIRTIO_MMIO_CONFIG_GENERATION);
				}
				t1 = rdtsc();
				total[k] += t1 - t0;
				if (t1 - t0 < best[k]) best[k] = t1 - t0;
			}
		}
		for (u32 k = 0; k < 4; k++) {
			printf("RESULT exits_%s_n=%u\nRESULT exits_%s_cycles=%u\n", names[k], per * ROUNDS, names[k], total[k]);
			printf("RESULT exits_%s_round_n=%u\nRESULT exits_%s_best_round_cycles=%u\n", names[k], per, names[k], best[k]);
		}
		printf("RESULT exits_config_sink=%u\n", (u64)sink);
		vdev_reset(d);
	}
	printf("RESULT tsc_mark=%u\n", rdtsc());
	return 0;
}

struct blk_req { u32 type, reserved; u64 sector; };
#define QD_MAX 32

/* Random 4 KiB reads keeping `qd` requests in flight; descriptors 3k..3k+2 belong to slot k. */
static int run_qd(struct vq *q, u64 blocks, u32 qd, u64 ops, u64 *cycles) {
	struct blk_req *hdr = alloc(sizeof(struct blk_req) * QD_MAX, 64);
	u8 *st = alloc(QD_MAX, 64);
	u8 *buf = alloc(4096ull * QD_MAX, 4096);
	u64 submitted = 0, done = 0;
	u64 t0 = rdtsc();
	for (u32 k = 0; k < qd && submitted < ops; k++, submitted++) {
		hdr[k].type = 0;
		hdr[k].sector = (rand64() % blocks) * 8;
		st[k] = 0xff;
		struct vbuf b[3] = {{(u64)&hdr[k], 16, 0}, {(u64)(buf + 4096ull * k), 4096, 1}, {(u64)&st[k], 1, 1}};
		vq_add_at(q, (u16)(3 * k), b, 3);
	}
	int unkicked = 1;
	while (done < ops) {
		/* Batch notifies: kick only when no completion is waiting to be handled. */
		if (unkicked && __atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE) == q->last_used) {
			vq_kick(q);
			unkicked = 0;
		}
		u32 id, len;
		int r = vq_poll(q, &id, &len, poll_budget);
		if (r != 1) { fail("blk.bench", "poll %d after %u of %u", (i64)r, done, ops); return -1; }
		u32 k = id / 3;
		if (k >= qd || id % 3 || st[k] != 0) { fail("blk.bench", "used id %u status %u", (u64)id, (u64)(k < qd ? st[k] : 0)); return -1; }
		done++;
		if (submitted < ops) {
			hdr[k].sector = (rand64() % blocks) * 8;
			st[k] = 0xff;
			vq_publish(q, (u16)(3 * k));
			submitted++;
			unkicked = 1;
		}
	}
	*cycles = rdtsc() - t0;
	return 0;
}

int mode_bench_blk(void) {
	struct vdev *d = vdev_find(VIRTIO_ID_BLOCK, 0);
	if (!d) { fail("blk.bench", "no virtio-blk device"); return 1; }
	struct vq q;
	int r = vdev_init(d, 0);
	if (r || vq_setup(d, &q, 0, 128)) { fail("blk.init", "step %d", (i64)r); return 1; }
	vdev_driver_ok(d);
	u64 blocks = vcfg64(d, 0) / 8;
	if (blocks < 1) { fail("blk.capacity", "too small"); return 1; }
	report_tsc_khz();
	printf("RESULT blk.blocks_4k=%u\n", blocks);
	printf("RESULT tsc_mark=%u\n", rdtsc());
	u64 ops1 = cmdline_u64("qd1_ops", 3000), ops32 = cmdline_u64("qd32_ops", 20000), cyc;
	/* warm_ops: QD1 reads before the timed runs, not timed (a VMM that compiles its data path
	 * while it runs, as a JIT does, pays that in the first requests, not in a steady state). */
	u64 warm = cmdline_u64("warm_ops", 0);
	if (warm && run_qd(&q, blocks, 1, warm, &cyc)) return 1;
	if (warm) printf("RESULT blk_warm_ops=%u\nRESULT blk_warm_cycles=%u\n", warm, cyc);
	if (run_qd(&q, blocks, 1, ops1, &cyc)) return 1;
	printf("RESULT blk_qd1_ops=%u\nRESULT blk_qd1_cycles=%u\n", ops1, cyc);
	if (run_qd(&q, blocks, 32, ops32, &cyc)) return 1;
	printf("RESULT blk_qd32_ops=%u\nRESULT blk_qd32_cycles=%u\n", ops32, cyc);
	printf("RESULT tsc_mark=%u\n", rdtsc());
	vdev_reset(d);
	return 0;
}

/* One guest-to-host run of bench-net: n frames from the qd frame buffers, qd in flight, kicked
 * only when no completion is waiting. Returns 0 with the TSC cycles first submit to last
 * completion in *cyc; every submitted frame has completed when it returns 0. */
static int net_tx_run(struct vq *tx, u8 *frames, u32 chain, u64 qd, u64 n, u64 *cyc) {
	u64 submitted = 0, done = 0;
	u64 t0 = rdtsc();
	for (u32 k = 0; k < qd && submitted < n; k++, submitted++) {
		struct vbuf b = {(u64)(frames + 2048ull * k), chain, 0};
		vq_add_at(tx, (u16)k, &b, 1);
	}
	int unkicked = 1;
	while (done < n) {
		if (unkicked && __atomic_load_n(&tx->used->idx, __ATOMIC_ACQUIRE) == tx->last_used) {
			vq_kick(tx);
			unkicked = 0;
		}
		u32 id, len;
		int pr = vq_poll(tx, &id, &len, poll_budget);
		if (pr != 1) { fail("net.bench", "poll %d after %u of %u", (i64)pr, done, n); return 1; }
		if (id >= qd) { fail("net.bench", "used id %u", (u64)id); return 1; }
		done++;
		if (submitted < n) {
			vq_publish(tx, (u16)id);
			submitted++;
			unkicked = 1;
		}
	}
	*cyc = rdtsc() - t0;
	return 0;
}

/* mode=bench-net: guest-to-host throughput. n frames of `size` bytes (an Ethernet header
 * with the local experimental ethertype 0x88b5, then a pattern) each behind a zero 12-byte
 * virtio_net_hdr, `qd` in flight on the transmit queue, kicked only when no completion is
 * waiting (as bench-blk). The host's kernel drops the frames after counting them.
 * warm=N first sends N frames the same way, not timed (as bench-blk's warm_ops: a VMM that
 * compiles its data path while it runs, as a JIT does, pays that in the first frames). */
int mode_bench_net(void) {
	struct vdev *d = vdev_find(VIRTIO_ID_NET, 0);
	if (!d) { fail("net.bench", "no virtio-net device"); return 1; }
	struct vq rx, tx;
	int r = vdev_init(d, 0);
	if (r || vq_setup(d, &rx, 0, 64) || vq_setup(d, &tx, 1, 64)) { fail("net.init", "step %d", (i64)r); return 1; }
	vdev_driver_ok(d);
	u64 n = cmdline_u64("n", 20000), size = cmdline_u64("size", 1514), qd = cmdline_u64("qd", 32);
	u64 warm = cmdline_u64("warm", 0);
	if (size < 60 || size > 1514 || qd < 1 || qd > 64) { fail("net.bench", "size 60..1514, qd 1..64"); return 1; }
	u32 chain = (u32)(12 + size);
	u8 *frames = alloc(2048ull * qd, 64);
	for (u64 k = 0; k < qd; k++) {
		u8 *f = frames + 2048 * k;
		memset(f, 0, 12);
		memset(f + 12, 0xff, 6);
		f[18] = 0x02; f[19] = 0; f[20] = 0; f[21] = 0; f[22] = 0; f[23] = (u8)k;
		f[24] = 0x88; f[25] = 0xb5;
		for (u64 i = 14; i < size; i++) f[12 + i] = (u8)i;
	}
	report_tsc_khz();
	printf("RESULT tsc_mark=%u\n", rdtsc());
	u64 cyc;
	if (warm) {
		if (net_tx_run(&tx, frames, chain, qd, warm, &cyc)) return 1;
		printf("RESULT net_tx_warm_frames=%u\nRESULT net_tx_warm_cycles=%u\n", warm, cyc);
	}
	u64 kicks0 = tx.kicks;
	if (net_tx_run(&tx, frames, chain, qd, n, &cyc)) return 1;
	printf("RESULT net_tx_frames=%u\nRESULT net_tx_frame_bytes=%u\nRESULT net_tx_cycles=%u\n", n, size, cyc);
	printf("RESULT net_tx_kicks=%u\n", tx.kicks - kicks0); /* notifications sent in the timed run (the device's NO_NOTIFY is not honoured here) */
	printf("RESULT tsc_mark=%u\n", rdtsc());
	vdev_reset(d);
	return 0;
}

/* mode=bench-net-rx: host-to-guest throughput. `qd` receive buffers of 12 + 1514 bytes
 * are posted; the guest prints RESULT net_rx_ready=1 and the host's sender (outside) starts
 * sending frames of the local experimental ethertype 0x88b5 carrying a 32-bit sequence
 * number after the Ethernet header. Each used buffer is counted and posted again; the
 * queue is kicked only when no completion is waiting (as bench-net). Other frames (the
 * host's own traffic) are counted apart. The run ends after n frames, or when no frame
 * came for idle_cycles after the first. Timed from the first frame to the last. */
int mode_bench_net_rx(void) {
	struct vdev *d = vdev_find(VIRTIO_ID_NET, 0);
	if (!d) { fail("net.bench", "no virtio-net device"); return 1; }
	struct vq rx, tx;
	int r = vdev_init(d, 0);
	u64 n = cmdline_u64("n", 20000), size = cmdline_u64("size", 1514), qd = cmdline_u64("qd", 64);
	u64 idle = cmdline_u64("idle_cycles", 1000000000ull);
	if (size < 60 || size > 1514 || qd < 1 || qd > 256) { fail("net.bench", "size 60..1514, qd 1..256"); return 1; }
	vq_honour_no_notify = 1; /* as a Linux driver: no kick while the device says it is looking anyway */
	if (r || vq_setup(d, &rx, 0, (u16)qd) || vq_setup(d, &tx, 1, 64)) { fail("net.init", "step %d", (i64)r); return 1; }
	if (qd > rx.num) qd = rx.num; /* the device's queue may be smaller */
	u8 *bufs = alloc(2048ull * qd, 64);
	for (u64 k = 0; k < qd; k++) {
		struct vbuf b = {(u64)(bufs + 2048ull * k), 12 + 1514, 1};
		vq_add_at(&rx, (u16)k, &b, 1);
	}
	vdev_driver_ok(d);
	vq_kick(&rx);
	report_tsc_khz();
	printf("RESULT tsc_mark=%u\n", rdtsc());
	printf("RESULT net_rx_ready=1\n");
	u64 got = 0, other = 0, bad = 0, nb_bad = 0, first = 0, last = 0, tenth = 0, waits0 = 0, wait_cycles0 = 0;
	u32 next_seq = 0, out_of_order = 0;
	int unkicked = 0;
	while (got < n) {
		if (unkicked && __atomic_load_n(&rx.used->idx, __ATOMIC_ACQUIRE) == rx.last_used) {
			vq_kick(&rx);
			unkicked = 0;
		}
		u32 id, len;
		/* before the first frame the sender is still starting: wait up to poll_budget */
		int pr = vq_poll(&rx, &id, &len, got ? idle : poll_budget);
		if (pr == 0) break;
		if (pr != 1) { fail("net.bench", "rx poll %d after %u frames", (i64)pr, got); return 1; }
		u64 t = rdtsc();
		if (id >= qd) { fail("net.bench", "used id %u", (u64)id); return 1; }
		const u8 *h = bufs + 2048ull * id, *f = h + 12;
		if (len >= 12 + 18 && f[12] == 0x88 && f[13] == 0xb5) {
			if (!got) { first = t; waits0 = vq_poll_waits; wait_cycles0 = vq_poll_wait_cycles; }
			if (got == n / 10) tenth = t;
			last = t;
			got++;
			/* whole length and samples of the sender's pattern (byte i = i) */
			if (len != 12 + size || f[18] != 18 || f[size / 2] != (u8)(size / 2) || f[size - 1] != (u8)(size - 1)) bad++;
			/* num_buffers (header bytes 10-11) must be 1 without MRG_RXBUF; QEMU 7.2 does not set it: counted apart */
			if (h[10] != 1 || h[11] != 0) nb_bad++;
			u32 seq = (u32)f[14] | (u32)f[15] << 8 | (u32)f[16] << 16 | (u32)f[17] << 24;
			if (seq != next_seq) out_of_order++;
			next_seq = seq + 1;
		} else {
			other++;
		}
		vq_publish(&rx, (u16)id);
		unkicked = 1;
	}
	printf("RESULT net_rx_frames=%u\nRESULT net_rx_frame_bytes=%u\nRESULT net_rx_cycles=%u\n", got, size, last - first);
	printf("RESULT net_rx_other=%u\nRESULT net_rx_bad_len=%u\nRESULT net_rx_seq_gaps=%u\n", other, bad, (u64)out_of_order); /* bad_len: wrong length or payload */
	printf("RESULT net_rx_kicks=%u\nRESULT net_rx_qd=%u\nRESULT net_rx_num_buffers_bad=%u\n", rx.kicks, qd, nb_bad);
	/* After the first frame: how often the guest found no frame waiting, and the cycles it spun for one (the last wait is the idle timeout when frames are missing) */
	printf("RESULT net_rx_waits=%u\nRESULT net_rx_wait_cycles=%u\n", vq_poll_waits - waits0, vq_poll_wait_cycles - wait_cycles0);
	/* The first tenth of the frames alone (a JIT-compiled VMM's warm-up shows there) */
	if (tenth) printf("RESULT net_rx_tenth_cycles=%u\n", tenth - first);
	printf("RESULT tsc_mark=%u\n", rdtsc());
	vdev_reset(d);
	return got == n && !bad ? 0 : 3;
}
