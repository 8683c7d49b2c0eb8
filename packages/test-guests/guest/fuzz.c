/*
 * mode=fuzz: malformed descriptor chains and queue set-ups sent to virtio-blk,
 * each between valid write/read-back requests whose data is checked, and each
 * JUDGED. Every case lists the outcomes a correct device may show:
 *   ERR      the chain comes back on the used ring with a non-OK status (or
 *            with its status untouched: the device could not even parse it);
 *   RESET    the device sets DEVICE_NEEDS_RESET (then a reset must bring it back);
 *   OK_DATA  the request was doable after all, completed OK, and its data is right;
 *   (queue-size case) QueueReady stays 0, NEEDS_RESET, or the odd size works.
 * Anything else FAILs the case: no response (the chain vanished), a completion
 * with status OK for a request that could not have been done, wrong data, a
 * write outside the buffers (guard pages and the device-readable header are
 * checked), or a device that does not work afterwards (after=stalled).
 * Cases with indirect descriptors negotiate VIRTIO_F_INDIRECT_DESC and are
 * skipped when the device does not offer it; two valid indirect chains are sent.
 *
 * Output per case: RESULT fuzz.<case>=<reaction>, RESULT fuzz.<case>.after=<state>,
 * RESULT fuzz.<case>.verdict=pass|fail|skip (a FAIL fuzz.<case> line says why).
 */
#include "virtio.h"

int blk_io(struct vq *q, u32 type, u64 sector, void *buf, u32 len, u8 *status_out);
struct blk_req { u32 type, reserved; u64 sector; };
#define B 40 /* first descriptor index used by malformed chains */
#define FAR (1ull << 40) /* an address far outside guest memory */

static u64 cap;
static int corrupt;

static int setup(struct vdev *d, struct vq *q, u64 want) {
	if (vdev_init(d, want) || vq_setup(d, q, 0, 64)) return -1;
	vdev_driver_ok(d);
	return 0;
}

/* 1 = ok, 0 = no answer/error status, -1 = wrong data */
static int valid_rw(struct vq *q) {
	u8 *w = alloc(4096, 4096), *r = alloc(4096, 4096);
	u64 salt = rand64();
	for (int i = 0; i < 4096; i++) w[i] = (u8)(salt >> ((i & 7) * 8)) + (u8)i;
	u64 sector = (rand64() % (cap / 8)) * 8;
	u8 st;
	if (blk_io(q, 1, sector, w, 4096, &st) != 1 || st) return 0;
	if (blk_io(q, 0, sector, r, 4096, &st) != 1 || st) return 0;
	return memcmp(w, r, 4096) ? -1 : 1;
}

static void setd(struct vq *q, u16 i, u64 addr, u32 len, u16 flags, u16 next) {
	q->desc[i].addr = addr; q->desc[i].len = len; q->desc[i].flags = flags; q->desc[i].next = next;
}
static void seti(struct vring_desc *t, int i, u64 addr, u32 len, u16 flags, u16 next) {
	t[i].addr = addr; t[i].len = len; t[i].flags = flags; t[i].next = next;
}

struct ctx { struct vq *q; struct blk_req *h; u8 *st; u8 *data; u64 wsector; };

/* Each builder writes a malformed chain (or queue state) and publishes it. */
static void c_next_out_of_table(struct ctx *c) {
	setd(c->q, B, (u64)c->h, 16, VIRTQ_DESC_F_NEXT, (u16)(c->q->num + 5));
	vq_publish(c->q, B);
}
static void c_loop(struct ctx *c) {
	setd(c->q, B, (u64)c->h, 16, VIRTQ_DESC_F_NEXT, B + 1);
	setd(c->q, B + 1, (u64)c->data, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, B);
	vq_publish(c->q, B);
}
static void c_nested_indirect(struct ctx *c) {
	struct vring_desc *t = alloc(16 * 3, 16), *t2 = alloc(16 * 3, 16);
	seti(t2, 0, (u64)c->h, 16, VIRTQ_DESC_F_NEXT, 1);
	seti(t2, 1, (u64)c->data, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
	seti(t2, 2, (u64)c->st, 1, VIRTQ_DESC_F_WRITE, 0);
	seti(t, 0, (u64)t2, 48, VIRTQ_DESC_F_INDIRECT, 0);
	setd(c->q, B, (u64)t, 16, VIRTQ_DESC_F_INDIRECT, 0);
	vq_publish(c->q, B);
}
static struct vring_desc *valid_table(struct ctx *c, u32 datalen) {
	struct vring_desc *t = alloc(16 * 3, 16);
	seti(t, 0, (u64)c->h, 16, VIRTQ_DESC_F_NEXT, 1);
	seti(t, 1, (u64)c->data, datalen, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
	seti(t, 2, (u64)c->st, 1, VIRTQ_DESC_F_WRITE, 0);
	return t;
}
/* Valid indirect chains: a read of sector 0 (4 KiB in two data descriptors) and a write. */
static void c_valid_indirect_read(struct ctx *c) {
	struct vring_desc *t = alloc(16 * 4, 16);
	seti(t, 0, (u64)c->h, 16, VIRTQ_DESC_F_NEXT, 1);
	seti(t, 1, (u64)c->data, 1024, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
	seti(t, 2, (u64)c->data + 1024, 3072, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 3);
	seti(t, 3, (u64)c->st, 1, VIRTQ_DESC_F_WRITE, 0);
	setd(c->q, B, (u64)t, 64, VIRTQ_DESC_F_INDIRECT, 0);
	vq_publish(c->q, B);
}
static void c_valid_indirect_write(struct ctx *c) {
	struct vring_desc *t = alloc(16 * 4, 16);
	c->h->type = 1;
	c->h->sector = c->wsector;
	for (int i = 0; i < 4096; i++) c->data[i] = (u8)(c->wsector * 31 + (u64)i * 7 + (u64)(i >> 8));
	seti(t, 0, (u64)c->h, 16, VIRTQ_DESC_F_NEXT, 1);
	seti(t, 1, (u64)c->data, 2560, VIRTQ_DESC_F_NEXT, 2);
	seti(t, 2, (u64)c->data + 2560, 1536, VIRTQ_DESC_F_NEXT, 3);
	seti(t, 3, (u64)c->st, 1, VIRTQ_DESC_F_WRITE, 0);
	setd(c->q, B, (u64)t, 64, VIRTQ_DESC_F_INDIRECT, 0);
	vq_publish(c->q, B);
}
static void c_indirect_len_not_multiple_of_16(struct ctx *c) {
	setd(c->q, B, (u64)valid_table(c, 512), 40, VIRTQ_DESC_F_INDIRECT, 0);
	vq_publish(c->q, B);
}
static void c_indirect_len_zero(struct ctx *c) {
	setd(c->q, B, (u64)valid_table(c, 512), 0, VIRTQ_DESC_F_INDIRECT, 0);
	vq_publish(c->q, B);
}
static void c_indirect_with_next(struct ctx *c) {
	setd(c->q, B, (u64)valid_table(c, 512), 48, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, B + 1);
	setd(c->q, B + 1, (u64)c->st, 1, VIRTQ_DESC_F_WRITE, 0);
	vq_publish(c->q, B);
}
static void c_indirect_table_outside_memory(struct ctx *c) {
	setd(c->q, B, FAR, 48, VIRTQ_DESC_F_INDIRECT, 0);
	vq_publish(c->q, B);
}
/* 256 device-writable 16 MiB buffers over guest RAM at 32-48 MiB: 4 GiB + 1 byte in total. */
static void c_len_sum_past_4g(struct ctx *c) {
	int n = 258;
	struct vring_desc *t = alloc(16ull * (u64)n, 16);
	seti(t, 0, (u64)c->h, 16, VIRTQ_DESC_F_NEXT, 1);
	for (int i = 1; i <= 256; i++) seti(t, i, 32ull << 20, 16u << 20, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, (u16)(i + 1));
	seti(t, 257, (u64)c->st, 1, VIRTQ_DESC_F_WRITE, 0);
	setd(c->q, B, (u64)t, 16u * (u32)n, VIRTQ_DESC_F_INDIRECT, 0);
	vq_publish(c->q, B);
}
static void chain3(struct ctx *c, u64 daddr, u32 dlen, u16 hflags) {
	setd(c->q, B, (u64)c->h, 16, VIRTQ_DESC_F_NEXT | hflags, B + 1);
	setd(c->q, B + 1, daddr, dlen, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, B + 2);
	setd(c->q, B + 2, (u64)c->st, 1, VIRTQ_DESC_F_WRITE, 0);
	vq_publish(c->q, B);
}
static void c_buffer_outside_memory(struct ctx *c) { chain3(c, FAR, 4096, 0); }
static void c_buffer_wraps_2_64(struct ctx *c) { chain3(c, 0xfffffffffffff000ull, 0x2000, 0); }
/* Verdict self-check (fuzz_selfcheck=1 only): a valid read whose buffer is the end of the
 * guard page before c->data, so a correct device writes "outside the buffers" as the
 * checker sees them; the verdict must be fail. */
static void c_selfcheck_guard(struct ctx *c) { chain3(c, (u64)c->data - 512, 512, 0); }
static void c_header_device_writable(struct ctx *c) { chain3(c, (u64)c->data, 512, VIRTQ_DESC_F_WRITE); }
static void c_avail_idx_ahead(struct ctx *c) {
	c->q->avail_idx = (u16)(c->q->avail_idx + c->q->num + 3);
	__atomic_store_n(&c->q->avail->idx, c->q->avail_idx, __ATOMIC_RELEASE);
}
/* Re-point the enabled queue's descriptor table outside memory, then publish a valid chain. */
static void c_desc_table_outside_memory(struct ctx *c) {
	struct vdev *d = c->q->dev;
	vw(d, VIRTIO_MMIO_QUEUE_SEL, 0);
	vw(d, VIRTIO_MMIO_QUEUE_READY, 0);
	vw(d, VIRTIO_MMIO_QUEUE_DESC_LOW, 0);
	vw(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, (u32)(FAR >> 32));
	vw(d, VIRTIO_MMIO_QUEUE_READY, 1);
	chain3(c, (u64)c->data, 512, 0);
}

#define ERR 1
#define RESET 2
#define OK_DATA 4
#define IND 1   /* needs VIRTIO_F_INDIRECT_DESC */
#define WRITE 2 /* the case writes c->data to c->wsector: OK_DATA means it is on the disk */
#define SELFCHECK 4 /* only with fuzz_selfcheck=1: tests the verdict logic, must fail */
/* data_len: bytes of c->data the chain reads from sector 0 (compared for OK_DATA). */
static const struct { const char *name; void (*fn)(struct ctx *); int accept; int flags; u32 data_len; } cases[] = {
	{"next_out_of_table", c_next_out_of_table, ERR | RESET, 0, 0},
	{"loop", c_loop, ERR | RESET, 0, 0},
	{"nested_indirect", c_nested_indirect, ERR | RESET, IND, 0},
	{"indirect_len_not_multiple_of_16", c_indirect_len_not_multiple_of_16, ERR | RESET, IND, 0},
	{"indirect_len_zero", c_indirect_len_zero, ERR | RESET, IND, 0},
	/* NEXT beside INDIRECT is a driver error, but the table itself is a valid 512-byte read. */
	{"indirect_with_next", c_indirect_with_next, ERR | RESET | OK_DATA, IND, 512},
	{"indirect_table_outside_memory", c_indirect_table_outside_memory, ERR | RESET, IND, 0},
	{"len_sum_past_4g", c_len_sum_past_4g, ERR | RESET, IND, 0},
	{"buffer_outside_memory", c_buffer_outside_memory, ERR | RESET, 0, 0},
	{"buffer_wraps_2_64", c_buffer_wraps_2_64, ERR | RESET, 0, 0},
	{"header_device_writable", c_header_device_writable, ERR | RESET, 0, 0},
	{"avail_idx_ahead", c_avail_idx_ahead, ERR | RESET, 0, 0},
	{"desc_table_outside_memory", c_desc_table_outside_memory, ERR | RESET, 0, 0},
	{"valid_indirect_read", c_valid_indirect_read, OK_DATA, IND, 4096},
	{"valid_indirect_write", c_valid_indirect_write, OK_DATA, IND | WRITE, 0},
	{"selfcheck_guard", c_selfcheck_guard, ERR | RESET | OK_DATA, SELFCHECK, 0},
};

static int fuzz_failed;
static void verdict_fail(const char *name, const char *why) {
	char check[64];
	usize n = strlen(name);
	memcpy(check, "fuzz.", 5);
	memcpy(check + 5, name, n + 1);
	fail(check, "%s", why);
	printf("RESULT fuzz.%s.verdict=fail\n", name);
	fuzz_failed++;
}

/* The queue-size case needs its own setup: QueueNum = 100 (not a power of two). */
static void case_queue_size(struct vdev *d) {
	struct vq q;
	if (setup(d, &q, 0)) { fail("fuzz.setup", "queue_size_not_power_of_2"); return; }
	vdev_reset(d);
	vdev_init(d, 0);
	u16 num = 100;
	u8 *mem = alloc(16384, 4096);
	q.num = num; q.avail_idx = 0; q.last_used = 0; q.next_desc = 0;
	q.desc = (volatile struct vring_desc *)mem;
	q.avail = (volatile struct vring_avail *)(mem + 4096);
	q.used = (volatile struct vring_used *)(mem + 8192);
	q.avail->flags = VRING_AVAIL_F_NO_INTERRUPT;
	vw(d, VIRTIO_MMIO_QUEUE_SEL, 0);
	vw(d, VIRTIO_MMIO_QUEUE_NUM, num);
	vw(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (u32)(u64)q.desc); vw(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
	vw(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (u32)(u64)q.avail); vw(d, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 0);
	vw(d, VIRTIO_MMIO_QUEUE_USED_LOW, (u32)(u64)q.used); vw(d, VIRTIO_MMIO_QUEUE_USED_HIGH, 0);
	vw(d, VIRTIO_MMIO_QUEUE_READY, 1);
	u32 ready = vr(d, VIRTIO_MMIO_QUEUE_READY);
	vdev_driver_ok(d);
	int r = ready ? valid_rw(&q) : 0;
	u32 s = vdev_status(d);
	printf("RESULT fuzz.queue_size_not_power_of_2=%s status=0x%x\n",
	       !ready ? "rejected" : r == 1 ? "accepted_and_works" : (s & VIRTIO_STATUS_NEEDS_RESET) ? "needs_reset" : "accepted_then_stalled", (u64)s);
	/* Accepted: rejected (QueueReady stays 0), NEEDS_RESET, or the odd size works. */
	if (r == -1) { corrupt++; verdict_fail("queue_size_not_power_of_2", "accepted, and a valid request returned wrong data"); }
	else if (ready && r != 1 && !(s & VIRTIO_STATUS_NEEDS_RESET)) verdict_fail("queue_size_not_power_of_2", "accepted, then stalled");
	else printf("RESULT fuzz.queue_size_not_power_of_2.verdict=pass\n");
}

#define GUARD 0xa5
int mode_fuzz(void) {
	struct vdev *d = vdev_find(VIRTIO_ID_BLOCK, 0);
	if (!d) { fail("fuzz", "needs a virtio-blk device"); return 1; }
	u64 budget = cmdline_u64("fuzz_budget", 300000000ull);
	u64 seed = cmdline_u64("seed", rdtsc());
	srand64(seed);
	printf("RESULT seed=%u\n", seed);
	int indirect = vdev_offers(d, 28);
	printf("RESULT fuzz.indirect_offered=%u\n", (u64)indirect);
	int ncases = 0;
	for (usize i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char *name = cases[i].name;
		if ((cases[i].flags & SELFCHECK) && !cmdline_u64("fuzz_selfcheck", 0)) continue;
		if ((cases[i].flags & IND) && !indirect) {
			printf("SKIP fuzz.%s VIRTIO_F_INDIRECT_DESC not offered\nRESULT fuzz.%s.verdict=skip\n", name, name);
			continue;
		}
		void *mark = alloc_mark();
		struct vq q;
		if (setup(d, &q, (cases[i].flags & IND) ? VIRTIO_F_INDIRECT_DESC : 0)) { verdict_fail(name, "device init failed"); continue; }
		if (!cap) cap = vcfg64(d, 0);
		if (cap < 64) { fail("fuzz", "disk too small"); return 1; }
		int before = valid_rw(&q);
		if (before == 1) printf("PASS fuzz.%s.valid-before\n", name);
		else {
			if (before == -1) corrupt++;
			verdict_fail(name, before ? "the valid request before the case returned wrong data" : "the valid request before the case failed");
			vdev_reset(d);
			alloc_reset(mark);
			continue;
		}
		/* sector 0 as it is now: what an OK read in the case must return */
		u8 *ref = alloc(4096, 4096), st0;
		if (blk_io(&q, 0, 0, ref, 4096, &st0) != 1 || st0) { verdict_fail(name, "reading the reference sector failed"); vdev_reset(d); alloc_reset(mark); continue; }
		/* the data page sits between two guard pages */
		u8 *area = alloc(3 * 4096, 4096);
		memset(area, GUARD, 3 * 4096);
		struct ctx c = {&q, alloc(sizeof(struct blk_req), 16), alloc(1, 1), area + 4096, 8 + (rand64() % (cap / 8 - 2)) * 8};
		c.h->type = 0; c.h->sector = 0; *c.st = 0xee;
		cases[i].fn(&c);
		struct blk_req hcopy = *c.h;
		vq_kick(&q);
		u32 id = 0, len = 0;
		int r = vq_poll(&q, &id, &len, budget);
		u32 s = vdev_status(d);
		u8 bst = *c.st;
		int outcome = 0; /* ERR, RESET, OK_DATA, or 0 = never acceptable (why says what) */
		const char *why = "";
		if (r == 1) {
			printf("RESULT fuzz.%s=completed id=%u len=%u blk_status=%u\n", name, (u64)id, (u64)len, (u64)bst);
			if (id != B) why = "completed with a used.id that is not the chain's head";
			else if (bst != 0) outcome = ERR;
			else if (cases[i].data_len && memcmp(c.data, ref, cases[i].data_len)) why = "completed with status OK, but the data is not sector 0's";
			else if (!cases[i].data_len && !(cases[i].flags & WRITE)) why = "completed with status OK a request that could not have been done";
			else outcome = OK_DATA;
		} else if (r == -1 || (s & VIRTIO_STATUS_NEEDS_RESET)) {
			printf("RESULT fuzz.%s=needs_reset status=0x%x\n", name, (u64)s);
			outcome = RESET;
		} else {
			printf("RESULT fuzz.%s=no_response status=0x%x\n", name, (u64)s);
			why = "no response: the chain neither completed nor did the device ask for a reset";
		}
		/* writes outside the buffers: the guard pages, the data page past a short read, the header */
		u64 outside = 0;
		for (u64 k = 0; k < 4096; k++) outside += (area[k] != GUARD) + (area[8192 + k] != GUARD);
		if (cases[i].data_len && cases[i].data_len < 4096)
			for (u64 k = cases[i].data_len; k < 4096; k++) outside += c.data[k] != GUARD;
		if (memcmp(&hcopy, c.h, sizeof hcopy)) outside++;
		/* afterwards a valid request must work (after a reset if the device asked for one) */
		const char *after;
		int rr;
		if ((s & VIRTIO_STATUS_NEEDS_RESET) || outcome == RESET) {
			vdev_reset(d);
			struct vq q2;
			rr = setup(d, &q2, 0) ? 0 : valid_rw(&q2);
			after = rr == 1 ? "recovered_after_reset" : rr == -1 ? "wrong_data_after_reset" : "stalled_after_reset";
		} else {
			rr = valid_rw(&q);
			after = rr == 1 ? "ok" : rr == -1 ? "wrong_data" : "stalled";
		}
		if (rr == -1) corrupt++;
		if (rr == 1 && (cases[i].flags & WRITE) && outcome == OK_DATA) {
			u8 *chk = alloc(4096, 4096), st1;
			struct vq q3;
			vdev_reset(d);
			if (setup(d, &q3, 0) || blk_io(&q3, 0, c.wsector, chk, 4096, &st1) != 1 || st1 || memcmp(chk, c.data, 4096)) {
				outcome = 0;
				why = "completed with status OK, but the data is not on the disk";
			}
		}
		printf("RESULT fuzz.%s.after=%s status=0x%x\n", name, after, (u64)vdev_status(d));
		if (outside) verdict_fail(name, "the device wrote outside the chain's buffers");
		else if (!outcome) verdict_fail(name, why);
		else if (!(cases[i].accept & outcome))
			verdict_fail(name, outcome == ERR ? "an error status for a valid request" : outcome == RESET ? "NEEDS_RESET for a valid request" : "completed OK");
		else if (rr != 1) verdict_fail(name, "the device does not work afterwards");
		else printf("RESULT fuzz.%s.verdict=pass\n", name);
		vdev_reset(d);
		alloc_reset(mark);
		ncases++;
	}
	void *mark = alloc_mark();
	case_queue_size(d);
	vdev_reset(d);
	alloc_reset(mark);
	ncases++;
	/* Finally the device must work again after a reset. */
	struct vq q;
	if (setup(d, &q, 0) || valid_rw(&q) != 1) fail("fuzz.recovers-after-reset", "device does not work after reset");
	else pass("fuzz.recovers-after-reset");
	printf("RESULT fuzz_cases=%u fuzz_failed=%u\n", (u64)ncases, (u64)fuzz_failed);
	return corrupt || failures ? 1 : 0;
}
