/*
 * mode=fuzz: malformed descriptor chains and queue setups sent to virtio-blk,
 * each between valid write/read-back requests whose data is checked. The
 * device's reaction is reported, not judged: a device may complete the chain
 * with an error status, ignore it, or mark itself broken (DEVICE_NEEDS_RESET).
 * A FAIL is printed only when a valid request returns wrong data (silent
 * corruption) or the device stops working without saying so.
 *
 * Output per case: RESULT fuzz.<case>=<reaction> and RESULT fuzz.<case>.after=<state>.
 */
#include "virtio.h"

int blk_io(struct vq *q, u32 type, u64 sector, void *buf, u32 len, u8 *status_out);
struct blk_req { u32 type, reserved; u64 sector; };
#define B 40 /* first descriptor index used by malformed chains */
#define FAR (1ull << 40) /* an address far outside guest memory */

static u64 cap;
static int corrupt;

static u64 fuzz_features; /* fuzz_features= on the command line, e.g. 0x10000000 for INDIRECT_DESC */

static int setup(struct vdev *d, struct vq *q) {
	if (vdev_init(d, fuzz_features) || vq_setup(d, q, 0, 64)) return -1;
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

struct ctx { struct vq *q; struct blk_req *h; u8 *st; u8 *data; };

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

static const struct { const char *name; void (*fn)(struct ctx *); } cases[] = {
	{"next_out_of_table", c_next_out_of_table},
	{"loop", c_loop},
	{"nested_indirect", c_nested_indirect},
	{"indirect_len_not_multiple_of_16", c_indirect_len_not_multiple_of_16},
	{"indirect_len_zero", c_indirect_len_zero},
	{"indirect_with_next", c_indirect_with_next},
	{"indirect_table_outside_memory", c_indirect_table_outside_memory},
	{"len_sum_past_4g", c_len_sum_past_4g},
	{"buffer_outside_memory", c_buffer_outside_memory},
	{"buffer_wraps_2_64", c_buffer_wraps_2_64},
	{"header_device_writable", c_header_device_writable},
	{"avail_idx_ahead", c_avail_idx_ahead},
	{"desc_table_outside_memory", c_desc_table_outside_memory},
};

static void after(const char *name, struct vdev *d, struct vq *q) {
	u32 s = vdev_status(d);
	if (s & VIRTIO_STATUS_NEEDS_RESET) { printf("RESULT fuzz.%s.after=needs_reset\n", name); return; }
	int r = valid_rw(q);
	if (r == 1) printf("RESULT fuzz.%s.after=ok\n", name);
	else if (r == -1) { corrupt++; fail("fuzz.after", "%s: valid request returned wrong data", name); }
	else printf("RESULT fuzz.%s.after=stalled status=0x%x\n", name, (u64)vdev_status(d));
}

/* The queue-size case needs its own setup: QueueNum = 100 (not a power of two). */
static void case_queue_size(struct vdev *d) {
	struct vq q;
	if (setup(d, &q)) { fail("fuzz.setup", "queue_size_not_power_of_2"); return; }
	vdev_reset(d);
	vdev_init(d, fuzz_features);
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
	if (r == -1) { corrupt++; fail("fuzz.after", "queue_size_not_power_of_2: wrong data"); }
	printf("RESULT fuzz.queue_size_not_power_of_2=%s status=0x%x\n",
	       !ready ? "rejected" : r == 1 ? "accepted_and_works" : "accepted_then_stalled", (u64)vdev_status(d));
}

int mode_fuzz(void) {
	struct vdev *d = vdev_find(VIRTIO_ID_BLOCK, 0);
	if (!d) { fail("fuzz", "needs a virtio-blk device"); return 1; }
	u64 budget = cmdline_u64("fuzz_budget", 300000000ull);
	fuzz_features = cmdline_u64("fuzz_features", 0);
	srand64(cmdline_u64("seed", rdtsc()));
	int ncases = 0;
	for (usize i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		void *mark = alloc_mark();
		struct vq q;
		if (setup(d, &q)) { fail("fuzz.setup", "%s: device init failed", cases[i].name); continue; }
		if (!cap) cap = vcfg64(d, 0);
		if (cap < 64) { fail("fuzz", "disk too small"); return 1; }
		int before = valid_rw(&q);
		if (before == 1) printf("PASS fuzz.%s.valid-before\n", cases[i].name);
		else { fail("fuzz.valid-before", "%s: %d", cases[i].name, (i64)before); continue; }
		struct ctx c = {&q, alloc(sizeof(struct blk_req), 16), alloc(1, 1), alloc(4096, 4096)};
		c.h->type = 0; c.h->sector = 0; *c.st = 0xee;
		cases[i].fn(&c);
		vq_kick(&q);
		u32 id = 0, len = 0;
		int r = vq_poll(&q, &id, &len, budget);
		u32 s = vdev_status(d);
		if (r == 1) printf("RESULT fuzz.%s=completed id=%u len=%u blk_status=%u\n", cases[i].name, (u64)id, (u64)len, (u64)*c.st);
		else if (r == -1 || (s & VIRTIO_STATUS_NEEDS_RESET)) printf("RESULT fuzz.%s=needs_reset status=0x%x\n", cases[i].name, (u64)s);
		else printf("RESULT fuzz.%s=no_response status=0x%x\n", cases[i].name, (u64)s);
		after(cases[i].name, d, &q);
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
	if (setup(d, &q) || valid_rw(&q) != 1) fail("fuzz.recovers-after-reset", "device does not work after reset");
	else pass("fuzz.recovers-after-reset");
	printf("RESULT fuzz_cases=%u\n", (u64)ncases);
	return corrupt || failures ? 1 : 0;
}
