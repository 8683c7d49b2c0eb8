/*
 * selftest's virtio-blk checks: data that proves itself. Every 8-byte word the
 * guest writes is blk_pat(sector, word, variant), a hash of the printed seed
 * (RESULT seed=, settable with seed=), the sector, the word's index in the
 * sector and a variant (0 = data that must end up on the disk, 1 = a write
 * that must be refused, 2 = a write to the read-only disk). A misplaced,
 * shifted or stale sector cannot match. The guest prints every range it wrote
 * (RESULT blk.wrote=<sector>:<count>) and every range it tried and had refused
 * (RESULT blk.refused= / blk.ro.refused=) so the host re-reads the image file
 * after the run and checks them (src/blk-image.ts).
 */
#include "virtio.h"
#include "packed.h"

struct blk_req { u32 type, reserved; u64 sector; };
#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_UNKNOWN 0xff
#define S_OK 0
#define S_IOERR 1
#define S_UNSUPP 2
#define BLK_F_RO (1ull << 5)
#define BLK_F_FLUSH (1ull << 9)

u64 blk_seed;

u64 blk_pat(u64 sector, u64 word, u64 variant) {
	u64 z = blk_seed + (sector * 64 + word) * 0x9e3779b97f4a7c15ull + variant * 0xd1b54a32d192ed03ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
static void fill(u8 *buf, u64 sector, u64 nsec, u64 variant) {
	u64 *w = (u64 *)buf;
	for (u64 s = 0; s < nsec; s++)
		for (u64 k = 0; k < 64; k++) w[s * 64 + k] = blk_pat(sector + s, k, variant);
}
/* Returns the byte offset of the first word that differs, or -1. */
static i64 check(const u8 *buf, u64 sector, u64 nsec, u64 variant) {
	const u64 *w = (const u64 *)buf;
	for (u64 s = 0; s < nsec; s++)
		for (u64 k = 0; k < 64; k++)
			if (w[s * 64 + k] != blk_pat(sector + s, k, variant)) return (i64)((s * 64 + k) * 8);
	return -1;
}

/* One request: header, the data segments, status. Checks used.id against the head. */
struct seg { u8 *p; u32 len; };
static struct blk_req *hdr;
static u8 *stb;
static int id_mismatch;
static int req(struct vq *q, u32 type, u64 sector, const struct seg *segs, int nseg, u8 *st, u32 *ulen) {
	struct vbuf b[16];
	hdr->type = type;
	hdr->reserved = 0;
	hdr->sector = sector;
	*stb = 0xee;
	b[0] = (struct vbuf){(u64)hdr, 16, 0};
	for (int i = 0; i < nseg; i++) b[1 + i] = (struct vbuf){(u64)segs[i].p, segs[i].len, type != T_OUT};
	b[1 + nseg] = (struct vbuf){(u64)stb, 1, 1};
	u16 head = vq_send(q, b, nseg + 2);
	u32 id = 0xffffffff, len = 0xffffffff;
	int r = vq_wait(q, &id, &len, poll_budget);
	*st = *stb;
	if (ulen) *ulen = len;
	if (r == 1 && id != head) { id_mismatch++; fail("blk.used-id", "used.id %u for head %u", (u64)id, (u64)head); return -3; }
	return r;
}
static int req1(struct vq *q, u32 type, u64 sector, u8 *buf, u32 len, u8 *st, u32 *ulen) {
	struct seg s = {buf, len};
	return req(q, type, sector, &s, len ? 1 : 0, st, ulen);
}

/* Writes nsec sectors of variant 0 at sector and reads them back through other buffers. */
static int write_read(struct vq *q, u64 sector, u64 nsec, u8 *w, u8 *r, const char *check_name) {
	u8 st;
	u32 ulen;
	u32 n = (u32)(nsec * 512);
	fill(w, sector, nsec, 0);
	int rc = req1(q, T_OUT, sector, w, n, &st, &ulen);
	if (rc != 1 || st != S_OK) { fail(check_name, "write at %u: wait %d status %u", sector, (i64)rc, (u64)st); return -1; }
	printf("RESULT blk.wrote=%u:%u\n", sector, nsec);
	if (ulen != 1) { fail("blk.used-len", "write of %u bytes: used.len %u (want 1: the status byte)", (u64)n, (u64)ulen); return -1; }
	memset(r, 0x5a, n);
	rc = req1(q, T_IN, sector, r, n, &st, &ulen);
	if (rc != 1 || st != S_OK) { fail(check_name, "read at %u: wait %d status %u", sector, (i64)rc, (u64)st); return -1; }
	if (ulen != n + 1) { fail("blk.used-len", "read of %u bytes: used.len %u (want %u)", (u64)n, (u64)ulen, (u64)n + 1); return -1; }
	i64 bad = check(r, sector, nsec, 0);
	if (bad >= 0) { fail(check_name, "sector %u: data differs at byte %u of the range", sector, (u64)bad); return -1; }
	return 0;
}


/* Requests published, the device reset before they (all) complete: nothing may be written afterwards. */
static void reset_in_flight(struct vdev *d, struct vq *q, u64 cap, u64 want) {
	enum { N = 16 };
	u8 *bufs = alloc(N * 4096ull, 4096);
	struct blk_req *hs = alloc(N * sizeof *hs, 16);
	u8 *sts = alloc(N, 16);
	/* The first half is notified; the second half is published after the notification and
	 * never notified (a device that polls, or one that re-reads the old rings after the
	 * reset, would still write into those buffers). */
	for (int i = 0; i < N; i++) {
		hs[i] = (struct blk_req){T_IN, 0, (cap / N) * (u64)i};
		struct vbuf b[3] = {{(u64)&hs[i], 16, 0}, {(u64)(bufs + 4096ull * i), 4096, 1}, {(u64)&sts[i], 1, 1}};
		vq_add_at(q, (u16)(3 * i), b, 3);
		if (i == N / 2 - 1) vq_kick(q);
	}
	u16 done_before = (u16)(__atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE) - q->last_used);
	vdev_reset(d);
	printf("RESULT blk.reset_in_flight=%u completed_before_reset=%u\n", (u64)N, (u64)done_before);
	if (vdev_status(d) != 0) { fail("blk.reset-in-flight", "status 0x%x after reset", (u64)vdev_status(d)); return; }
	memset(bufs, 0xc3, N * 4096ull);
	memset(sts, 0xc3, N);
	u64 t = rdtsc();
	while (rdtsc() - t < 50000000ull) pause_();
	for (u64 i = 0; i < N * 4096ull; i++)
		if (bufs[i] != 0xc3) { fail("blk.reset-in-flight", "buffer byte %u written after the reset", i); return; }
	for (int i = 0; i < N; i++)
		if (sts[i] != 0xc3) { fail("blk.reset-in-flight", "status of request %u written after the reset", (u64)i); return; }
	if (vdev_init(d, want)) { fail("blk.reset-in-flight", "re-init failed"); return; }
	if (vq_setup(d, q, 0, 128)) { fail("blk.reset-in-flight", "queue set-up after reset failed"); return; }
	vdev_driver_ok(d);
	pass("blk.reset-in-flight");
}

/* More than 65536 requests on one queue, so avail.idx and used.idx wrap (polling, batched). */
static void wrap(struct vdev *d, u64 want, u64 total) {
	int save = vq_use_irq;
	vq_use_irq = 0;
	struct vq q;
	void *mark = alloc_mark();
	if (vdev_init(d, want) || vq_setup(d, &q, 0, 256)) { vq_use_irq = save; fail("blk.wrap", "init"); return; }
	vq_use_irq = save;
	vdev_driver_ok(d);
	enum { BATCH = 64 };
	struct blk_req *hs = alloc(BATCH * sizeof *hs, 16);
	u8 *sts = alloc(BATCH, 16);
	u8 *ids = alloc(BATCH * 20ull, 16);
	u64 done = 0, bad = 0;
	u8 seen[BATCH];
	while (done < total) {
		for (int i = 0; i < BATCH; i++) {
			hs[i] = (struct blk_req){T_GET_ID, 0, 0};
			sts[i] = 0xee;
			struct vbuf b[3] = {{(u64)&hs[i], 16, 0}, {(u64)(ids + 20 * i), 20, 1}, {(u64)&sts[i], 1, 1}};
			vq_add_at(&q, (u16)(3 * i), b, 3);
			seen[i] = 0;
		}
		vq_kick(&q);
		for (int i = 0; i < BATCH; i++) {
			u32 id, len;
			int r = vq_poll(&q, &id, &len, poll_budget);
			if (r != 1) { fail("blk.wrap", "after %u requests: wait %d, avail.idx %u used.idx %u", done, (i64)r, (u64)q.avail_idx, (u64)q.used->idx); return; }
			if (id % 3 || id / 3 >= BATCH || seen[id / 3]++) { bad++; continue; }
			if (sts[id / 3] != S_OK) bad++;
		}
		done += BATCH;
	}
	printf("RESULT blk.wrap_requests=%u avail_idx=%u used_idx=%u\n", done, (u64)q.avail_idx, (u64)q.used->idx);
	if (bad) fail("blk.wrap", "%u bad completions (unknown/duplicate id or status)", bad);
	else if (done < 65537) fail("blk.wrap", "only %u requests", done);
	else pass("blk.wrap");
	vdev_reset(d);
	alloc_reset(mark);
}


/*
 * Driver-side suppression without EVENT_IDX: with VRING_AVAIL_F_NO_INTERRUPT set
 * the device should not interrupt (virtio 1.2, 2.7.7: SHOULD NOT; every VMM we
 * know honours it). Skipped when EVENT_IDX is negotiated (the flag is ignored then).
 */
static void no_interrupt(struct vq *q) {
	volatile struct irq_dev *s = irq_of(q->dev);
	if (!q->irq || !s || q->event_idx) { skip("blk.no-interrupt", q->event_idx ? "EVENT_IDX negotiated" : "polling"); return; }
	q->avail->flags = VRING_AVAIL_F_NO_INTERRUPT;
	mb();
	u64 before = s->count;
	u8 *buf = alloc(32, 16);
	u8 st;
	hdr->type = T_GET_ID;
	hdr->sector = 0;
	*stb = 0xee;
	struct vbuf b[3] = {{(u64)hdr, 16, 0}, {(u64)buf, 20, 1}, {(u64)stb, 1, 1}};
	vq_send(q, b, 3);
	int r = vq_poll(q, NULL, NULL, poll_budget);
	st = *stb;
	u64 t = rdtsc();
	while (rdtsc() - t < 20000000ull) pause_();
	u64 got = s->count - before;
	q->avail->flags = 0;
	q->irq_seen = s->count;
	q->covered = q->last_used;
	if (r == 1 && st == S_OK && got == 0) pass("blk.no-interrupt");
	else fail("blk.no-interrupt", "wait %d status %u, %u interrupts with VRING_AVAIL_F_NO_INTERRUPT set", (i64)r, (u64)st, got);
}

/* EVENT_IDX: 8 requests with used_event = last_used + 7 must bring exactly one interrupt. */
static void event_idx(struct vq *q) {
	volatile struct irq_dev *s = irq_of(q->dev);
	if (!q->event_idx || !q->irq || !s) { skip("blk.event-idx", q->event_idx ? "polling" : "VIRTIO_F_EVENT_IDX not offered"); return; }
	enum { N = 8 };
	u8 *ids = alloc(N * 20, 16);
	struct blk_req *hs = alloc(N * sizeof *hs, 16);
	u8 *sts = alloc(N, 16);
	VQ_USED_EVENT(q) = (u16)(q->last_used + N - 1);
	u64 before = s->used;
	for (int i = 0; i < N; i++) {
		hs[i] = (struct blk_req){T_GET_ID, 0, 0};
		struct vbuf b[3] = {{(u64)&hs[i], 16, 0}, {(u64)(ids + 20 * i), 20, 1}, {(u64)&sts[i], 1, 1}};
		vq_add_at(q, (u16)((q->next_desc + 3 * i) % q->num), b, 3);
	}
	q->next_desc = (u16)((q->next_desc + 3 * N) % q->num);
	vq_kick(q);
	u64 t = rdtsc();
	while ((u16)(__atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE) - q->last_used) < N && rdtsc() - t < poll_budget) pause_();
	t = rdtsc();
	while (s->used == before && rdtsc() - t < poll_budget) pause_();
	t = rdtsc();
	while (rdtsc() - t < 20000000ull) pause_(); /* let a second, wrong interrupt arrive */
	u64 got = s->used - before;
	u16 done = (u16)(q->used->idx - q->last_used);
	for (int i = 0; i < N; i++) {
		u32 id, len;
		if (vq_wait(q, &id, &len, poll_budget) != 1) break;
	}
	if (done == N && got == 1) pass("blk.event-idx");
	else fail("blk.event-idx", "%u of %u completed, %u interrupts (want 1, after the last)", (u64)done, (u64)N, got);
}

/* A buffer above 4 GiB and one across 2 GiB (a region boundary for VMMs that split RAM there). */
static void high_buffers(struct vq *q, u64 sector) {
	if (ram_top < 0x100000000ull + (2ull << 20)) { skip("blk.high-buffer", "RAM ends below 4 GiB"); return; }
	u8 *hi = (u8 *)(0x100000000ull + 0x1000);          /* above 4 GiB */
	u8 *across = (u8 *)(0x80000000ull - 2048);          /* 2 GiB - 2 KiB .. 2 GiB + 2 KiB */
	u8 st;
	u32 ulen;
	fill(hi, sector, 8, 0);
	struct seg w[2] = {{hi, 2048}, {hi + 2048, 2048}};
	int r = req(q, T_OUT, sector, w, 2, &st, &ulen);
	if (r != 1 || st) { fail("blk.high-buffer", "write from 0x%x: wait %d status %u", (u64)hi, (i64)r, (u64)st); return; }
	printf("RESULT blk.wrote=%u:8\n", sector);
	memset(across, 0x77, 4096);
	r = req1(q, T_IN, sector, across, 4096, &st, &ulen);
	if (r != 1 || st || ulen != 4097) { fail("blk.high-buffer", "read into 0x%x: wait %d status %u len %u", (u64)across, (i64)r, (u64)st, (u64)ulen); return; }
	i64 bad = check(across, sector, 8, 0);
	if (bad >= 0) { fail("blk.high-buffer", "data read across 2 GiB differs at byte %u", (u64)bad); return; }
	pass("blk.high-buffer");
}


/* One request on a packed queue, waited for; checks the buffer id. */
static int preq(struct pvq *q, u16 id, u32 type, u64 sector, const struct seg *segs, int nseg, struct blk_req *h, u8 *st, u32 *ulen) {
	struct vbuf b[16];
	*h = (struct blk_req){type, 0, sector};
	*st = 0xee;
	b[0] = (struct vbuf){(u64)h, 16, 0};
	for (int i = 0; i < nseg; i++) b[1 + i] = (struct vbuf){(u64)segs[i].p, segs[i].len, type != T_OUT};
	b[1 + nseg] = (struct vbuf){(u64)st, 1, 1};
	if (pvq_add(q, id, b, nseg + 2)) return -4;
	pvq_kick(q);
	u16 got = 0xffff;
	int r = pvq_wait(q, &got, ulen, poll_budget);
	if (r == 1 && got != id) return -3;
	return r;
}

/*
 * blk.packed: VIRTIO_F_RING_PACKED negotiated, a 64-entry packed ring; 48
 * write/read-back pairs at random sectors (3 descriptors each, so the ring and
 * its wrap counters wrap many times), a 7-descriptor write, then 16 reads in
 * flight at once completed in whatever order the device chooses.
 */
static void packed_check(struct vdev *d, u64 cap) {
	if (!vdev_offers(d, 34)) { skip("blk.packed", "VIRTIO_F_RING_PACKED not offered"); return; }
	struct pvq q;
	if (vdev_init(d, VIRTIO_F_RING_PACKED) || !(d->features & VIRTIO_F_RING_PACKED) || pvq_setup(d, &q, 0, 64, vq_use_irq)) {
		fail("blk.packed", "init: status 0x%x", (u64)vdev_status(d));
		return;
	}
	vdev_driver_ok(d);
	enum { N = 16 };
	struct blk_req *hs = alloc(N * sizeof *hs, 16);
	u8 *sts = alloc(N, 16);
	u8 *w = alloc(4096, 4096), *r = alloc(N * 4096ull, 4096);
	u64 sectors[N];
	u8 st;
	u32 ulen;
	for (int i = 0; i < 48; i++) {
		u64 s = 8 + rand64() % (cap - 24);
		if (i < N) sectors[i] = s;
		fill(w, s, 8, 0);
		struct seg sw = {w, 4096}, sr = {r, 4096};
		int rc = preq(&q, (u16)(i % N), T_OUT, s, &sw, 1, &hs[0], &sts[0], &ulen);
		if (rc != 1 || sts[0] != S_OK || ulen != 1) { fail("blk.packed", "write %u: wait %d status %u len %u", (u64)i, (i64)rc, (u64)sts[0], (u64)ulen); return; }
		printf("RESULT blk.wrote=%u:8\n", s);
		memset(r, 0, 4096);
		rc = preq(&q, (u16)((i + 7) % N), T_IN, s, &sr, 1, &hs[0], &sts[0], &ulen);
		if (rc != 1 || sts[0] != S_OK || ulen != 4097) { fail("blk.packed", "read %u: wait %d status %u len %u", (u64)i, (i64)rc, (u64)sts[0], (u64)ulen); return; }
		if (check(r, s, 8, 0) >= 0) { fail("blk.packed", "read %u: data differs", (u64)i); return; }
	}
	/* a 7-descriptor write (5 data segments) */
	u64 ms = sectors[0];
	fill(w, ms, 8, 0);
	struct seg sw[5] = {{w, 512}, {w + 512, 1024}, {w + 1536, 512}, {w + 2048, 1536}, {w + 3584, 512}};
	int rc = preq(&q, 3, T_OUT, ms, sw, 5, &hs[0], &st, &ulen);
	if (rc != 1 || st != S_OK) { fail("blk.packed", "multi-segment write: wait %d status %u", (i64)rc, (u64)st); return; }
	/* 16 reads in flight */
	for (int i = 0; i < N; i++) {
		hs[i] = (struct blk_req){T_IN, 0, sectors[i]};
		sts[i] = 0xee;
		struct vbuf b[3] = {{(u64)&hs[i], 16, 0}, {(u64)(r + 4096ull * i), 4096, 1}, {(u64)&sts[i], 1, 1}};
		if (pvq_add(&q, (u16)i, b, 3)) { fail("blk.packed", "ring full at %u", (u64)i); return; }
	}
	pvq_kick(&q);
	u32 seen = 0;
	for (int k = 0; k < N; k++) {
		u16 id;
		rc = pvq_wait(&q, &id, &ulen, poll_budget);
		if (rc != 1 || id >= N || (seen >> id & 1)) { fail("blk.packed", "in-flight read %u: wait %d id %u", (u64)k, (i64)rc, (u64)id); return; }
		seen |= 1u << id;
		if (sts[id] != S_OK || ulen != 4097 || check(r + 4096ull * id, sectors[id], 8, 0) >= 0) {
			fail("blk.packed", "in-flight read id %u: status %u len %u or data differs", (u64)id, (u64)sts[id], (u64)ulen);
			return;
		}
	}
	printf("RESULT blk.packed_kicks=%u suppressed=%u\n", q.kicks, q.kicks_suppressed);
	pass("blk.packed");
}

/*
 * Configuration change (blk_config_wait=1): the host resizes the disk (QEMU:
 * QMP block_resize) when it sees the line below; the device must raise a
 * configuration-change interrupt and report the new capacity.
 */
static void config_change(struct vdev *d, u64 want, u64 cap) {
	struct vq q;
	if (vdev_init(d, want) || vq_setup(d, &q, 0, 64)) { fail("blk.config-change", "init"); return; }
	vdev_driver_ok(d);
	volatile struct irq_dev *s = irq_of(d);
	u64 c0 = s ? s->config : 0;
	print("RESULT blk.config-wait=1\n");
	u64 t = rdtsc();
	if (s) while (s->config == c0 && rdtsc() - t < 2 * poll_budget) pause_();
	else while (vcfg64(d, 0) == cap && rdtsc() - t < 2 * poll_budget) pause_();
	u64 cap1 = vcfg64(d, 0);
	printf("RESULT blk.capacity_after=%u config_irqs=%u\n", cap1, s ? s->config - c0 : 0);
	if (cap1 == cap) fail("blk.config-change", "capacity stayed %u sectors", cap);
	else if (s && s->config == c0) fail("blk.config-change", "capacity changed to %u without a configuration-change interrupt", cap1);
	else pass("blk.config-change");
	vdev_reset(d);
}

void selftest_blk(struct vdev *d) {
	u64 want = BLK_F_FLUSH | BLK_F_RO | VIRTIO_F_EVENT_IDX;
	int r = vdev_init(d, want);
	struct vq q;
	if (r || vq_setup(d, &q, 0, 128)) { fail("blk.init", "step %d status 0x%x", (i64)r, (u64)vdev_status(d)); return; }
	vdev_driver_ok(d);
	u64 cap = vcfg64(d, 0);
	printf("RESULT blk.capacity_sectors=%u features=0x%x\n", cap, d->features);
	if (cap < 1024) { fail("blk.capacity", "%u sectors (want >= 1024)", cap); return; }
	pass("blk.init");
	hdr = alloc(sizeof *hdr, 16);
	stb = alloc(1, 1);
	u8 *w = alloc(8192, 4096), *rd = alloc(8192, 4096);
	u8 st;
	u32 ulen;

	/* GET_ID: status OK, a NUL-padded string of at most 20 bytes; blk_serial= names the expected one. */
	char *id = alloc(32, 16);
	memset(id, 0xcc, 32);
	r = req1(&q, T_GET_ID, 0, (u8 *)id, 20, &st, &ulen);
	char want_id[24];
	int has_want = cmdline_get("blk_serial", want_id, sizeof want_id);
	if (r != 1 || st != S_OK) fail("blk.get-id", "wait %d status %u", (i64)r, (u64)st);
	else if (id[20] != (char)0xcc || ulen < 1 || ulen > 21) fail("blk.get-id", "used.len %u, or wrote past 20 bytes", (u64)ulen);
	else {
		char s[21];
		memcpy(s, id, 20);
		s[20] = 0;
		printf("RESULT blk.id=\"%s\"\n", s);
		if (has_want && strncmp(s, want_id, 21)) fail("blk.get-id", "id \"%s\", want \"%s\"", s, want_id);
		else pass("blk.get-id");
	}

	/* Spread: sector 0, the last 8 sectors, and a random 8-sector range in each 16th of the disk. */
	int bad = 0;
	bad |= write_read(&q, 0, 8, w, rd, "blk.write-read");
	bad |= write_read(&q, cap - 8, 8, w, rd, "blk.write-read");
	u64 slice = cap / 16;
	for (u64 i = 0; i < 16 && !bad; i++) bad |= write_read(&q, i * slice + rand64() % (slice - 8), 8, w, rd, "blk.write-read");
	if (!bad && !id_mismatch) pass("blk.write-read");

	/* Multi-segment: 5 data descriptors out, 4 back in, split differently, at odd offsets in their pages. */
	u64 ms = 8 + rand64() % (cap - 24);
	u8 *mw = alloc(16384, 4096), *mr = alloc(16384, 4096);
	fill(w, ms, 8, 0);
	u32 wl[5] = {512, 1024, 512, 1536, 512}, rl[4] = {1536, 512, 1024, 1024};
	struct seg sw[5], sr[4];
	u32 off = 0;
	for (int i = 0; i < 5; i++) { sw[i] = (struct seg){mw + 3000 * i + 8, wl[i]}; memcpy(sw[i].p, w + off, wl[i]); off += wl[i]; }
	for (int i = 0; i < 4; i++) sr[i] = (struct seg){mr + 3900 * i + 24, rl[i]};
	r = req(&q, T_OUT, ms, sw, 5, &st, &ulen);
	if (r != 1 || st != S_OK || ulen != 1) fail("blk.multi-segment", "write (7 descriptors): wait %d status %u len %u", (i64)r, (u64)st, (u64)ulen);
	else {
		printf("RESULT blk.wrote=%u:8\n", ms);
		r = req(&q, T_IN, ms, sr, 4, &st, &ulen);
		off = 0;
		for (int i = 0; i < 4; i++) { memcpy(rd + off, sr[i].p, rl[i]); off += rl[i]; }
		i64 b = check(rd, ms, 8, 0);
		if (r != 1 || st != S_OK || ulen != 4097) fail("blk.multi-segment", "read (6 descriptors): wait %d status %u len %u", (i64)r, (u64)st, (u64)ulen);
		else if (b >= 0) fail("blk.multi-segment", "data differs at byte %u", (u64)b);
		else pass("blk.multi-segment");
	}

	/* FLUSH */
	if (!(d->features & BLK_F_FLUSH)) fail("blk.flush", "VIRTIO_BLK_F_FLUSH not offered");
	else {
		r = req1(&q, T_FLUSH, 0, NULL, 0, &st, &ulen);
		if (r == 1 && st == S_OK && ulen == 1) pass("blk.flush");
		else fail("blk.flush", "wait %d status %u len %u", (i64)r, (u64)st, (u64)ulen);
	}

	/* An unknown request type must be UNSUPP. */
	r = req1(&q, T_UNKNOWN, 0, rd, 512, &st, &ulen);
	if (r == 1 && st == S_UNSUPP) pass("blk.unsupported-type");
	else fail("blk.unsupported-type", "type 0x%x: wait %d status %u (want 2)", (u64)T_UNKNOWN, (i64)r, (u64)st);

	/* Past and straddling the end: IOERR; a refused straddling write leaves the last sectors alone. */
	r = req1(&q, T_IN, cap, rd, 4096, &st, &ulen);
	if (r == 1 && st == S_IOERR) pass("blk.read-past-end");
	else fail("blk.read-past-end", "wait %d status %u", (i64)r, (u64)st);
	r = req1(&q, T_IN, cap - 4, rd, 4096, &st, &ulen);
	if (r == 1 && st == S_IOERR) pass("blk.read-straddling-end");
	else fail("blk.read-straddling-end", "wait %d status %u", (i64)r, (u64)st);
	fill(w, cap - 4, 8, 1);
	u8 stw;
	r = req1(&q, T_OUT, cap - 4, w, 4096, &stw, &ulen);
	printf("RESULT blk.refused=%u:4\n", cap - 4);
	int r2 = req1(&q, T_IN, cap - 8, rd, 4096, &st, &ulen);
	if (r != 1 || stw != S_IOERR) fail("blk.write-straddling-end", "wait %d status %u (want 1)", (i64)r, (u64)stw);
	else if (r2 != 1 || st != S_OK) fail("blk.write-straddling-end", "read-back of the last sectors: wait %d status %u", (i64)r2, (u64)st);
	else if (check(rd, cap - 8, 8, 0) >= 0) fail("blk.write-straddling-end", "the refused write changed the last sectors");
	else pass("blk.write-straddling-end");

	printf("RESULT blk.kicks=%u suppressed=%u\n", q.kicks, q.kicks_suppressed); /* NO_NOTIFY / avail_event honoured */
	event_idx(&q);
	high_buffers(&q, 8 + rand64() % (cap - 24));
	reset_in_flight(d, &q, cap, want);
	/* After the reset the device works again and still holds the data. */
	r = req1(&q, T_IN, 0, rd, 4096, &st, &ulen);
	if (r == 1 && st == S_OK && check(rd, 0, 8, 0) < 0) pass("blk.after-reset");
	else fail("blk.after-reset", "wait %d status %u", (i64)r, (u64)st);
	vdev_reset(d);
	/* Without EVENT_IDX: an interrupt-driven request, then VRING_AVAIL_F_NO_INTERRUPT honoured. */
	struct vq q2;
	if (vdev_init(d, BLK_F_FLUSH) || vq_setup(d, &q2, 0, 64)) fail("blk.no-interrupt", "re-init without EVENT_IDX failed");
	else {
		vdev_driver_ok(d);
		r = req1(&q2, T_IN, 0, rd, 4096, &st, &ulen);
		if (r != 1 || st != S_OK || check(rd, 0, 8, 0) >= 0) fail("blk.no-interrupt", "request before: wait %d status %u", (i64)r, (u64)st);
		else no_interrupt(&q2);
	}
	vdev_reset(d);
	packed_check(d, cap);
	vdev_reset(d);
	if (cmdline_u64("blk_config_wait", 0)) config_change(d, want, cap);
	else skip("blk.config-change", "the host changes no config (blk_config_wait=1 asks it to)");
	u64 nwrap = cmdline_u64("blk_wrap", 66000);
	if (nwrap) wrap(d, want, nwrap);
	else skip("blk.wrap", "blk_wrap=0");
}

/* The second blk device, attached read-only: VIRTIO_BLK_F_RO offered, writes refused, reads work. */
void selftest_blk_ro(struct vdev *d) {
	struct vq q;
	int save = vq_use_irq;
	vq_use_irq = 0;
	int r = vdev_init(d, BLK_F_RO);
	if (r || vq_setup(d, &q, 0, 64)) { vq_use_irq = save; fail("blk.ro", "init step %d", (i64)r); return; }
	vq_use_irq = save;
	vdev_driver_ok(d);
	if (!hdr) { hdr = alloc(sizeof *hdr, 16); stb = alloc(1, 1); }
	if (d->features & BLK_F_RO) pass("blk.ro.feature");
	else fail("blk.ro.feature", "VIRTIO_BLK_F_RO not offered by the second (read-only) disk");
	u64 cap = vcfg64(d, 0);
	u8 *w = alloc(4096, 4096);
	u8 st;
	u32 ulen;
	u64 s = cap > 64 ? 8 + rand64() % (cap - 24) : 0;
	fill(w, s, 8, 2);
	r = req1(&q, T_OUT, s, w, 4096, &st, &ulen);
	printf("RESULT blk.ro.refused=%u:8\n", s);
	if (r == 1 && st != S_OK) pass("blk.ro.write-refused");
	else fail("blk.ro.write-refused", "wait %d status %u", (i64)r, (u64)st);
	memset(w, 0, 4096);
	r = req1(&q, T_IN, s, w, 4096, &st, &ulen);
	if (r == 1 && st == S_OK && check(w, s, 8, 2) >= 0) pass("blk.ro.read");
	else fail("blk.ro.read", "wait %d status %u (or the refused data is there)", (i64)r, (u64)st);
	vdev_reset(d);
}
