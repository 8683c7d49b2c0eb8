/*
 * mode=ticker: a guest that keeps working until told how long, for pause/resume
 * and snapshot/restore tests. Each tick i (ticks=N of them, spin=CYCLES of TSC
 * between ticks):
 *   - checks the TSC did not go backwards (a restore that loses the TSC shows),
 *   - writes u64 i into a heap page (i % 64) and keeps a running sum,
 *   - with a virtio-blk device: writes 4 KiB block (i % blocks) with the tick's
 *     pattern (u32 i, u32 salt, then (i * 13 + j) & 0xff), reads it back and
 *     compares (completion by interrupt unless irq=0),
 *   - with a virtio-console, -balloon, -rtc or -vsock device: looks at each
 *     (ticker-devs.c: a console write, a balloon ack, an rtc read and alarm,
 *     vsock events and reconnects),
 *   - prints "RESULT tick=<i>".
 * At the end it re-reads the 64 heap pages (the memory written before a
 * snapshot must be there after the restore), checks the interrupt counts, and
 * prints "RESULT ticker.sum=<sum>" and PASS ticker.
 */
#include "virtio.h"

int blk_io(struct vq *q, u32 type, u64 sector, void *buf, u32 len, u8 *status_out);
void ticker_devs_init(void);
void ticker_devs_tick(u64 i);

#define PAGES 64

int mode_ticker(void) {
	u64 n = cmdline_u64("ticks", 100);
	u64 spin = cmdline_u64("spin", 20000000);
	u32 salt = (u32)cmdline_u64("salt", 0);
	int use_irq = (int)cmdline_u64("irq", 1);
	struct vdev *d = vdev_find(VIRTIO_ID_BLOCK, 0);
	struct vq q;
	u64 blocks = 0;
	if (d) {
		if (use_irq) {
			if (irq_setup((int)cmdline_u64("x2apic", 1)) == 0) vq_use_irq = 1;
			else { fail("ticker.irq", "irq setup failed"); use_irq = 0; }
		}
		if (vdev_init(d, 0) || (use_irq && irq_route(d)) || vq_setup(d, &q, 0, 64)) { fail("ticker.init", "blk init"); return 1; }
		vdev_driver_ok(d);
		blocks = vcfg64(d, 0) / 8;
		if (blocks > cmdline_u64("blocks", 1024)) blocks = cmdline_u64("blocks", 1024);
		if (!blocks) { fail("ticker.init", "the disk is smaller than 4 KiB"); return 1; }
	}
	ticker_devs_init();
	u64 *pages = alloc(PAGES * 4096, 4096);
	u8 *w = alloc(4096, 4096), *r = alloc(4096, 4096);
	u64 sum = 0, last = rdtsc(), missing0 = vq_missing_irqs;
	for (u64 i = 0; i < n; i++) {
		u64 t = rdtsc();
		if (t < last) fail("ticker.tsc", "tick %u: the TSC went back from 0x%x to 0x%x", i, last, t);
		last = t;
		pages[(i % PAGES) * 512] = i;
		sum += i * 2654435761ull;
		if (d) {
			void *mark = alloc_mark();
			u64 b = i % blocks;
			for (int j = 0; j < 4096; j++) w[j] = (u8)(i * 13 + (u64)j);
			*(u32 *)w = (u32)i;
			*(u32 *)(w + 4) = salt;
			u8 st;
			int rc = blk_io(&q, 1, b * 8, w, 4096, &st);
			if (rc != 1 || st) { fail("ticker.blk", "tick %u: write of block %u: rc %d status %u", i, b, (u64)(i64)rc, (u64)st); return 1; }
			memset(r, 0, 4096);
			rc = blk_io(&q, 0, b * 8, r, 4096, &st);
			if (rc != 1 || st) { fail("ticker.blk", "tick %u: read of block %u: rc %d status %u", i, b, (u64)(i64)rc, (u64)st); return 1; }
			if (memcmp(w, r, 4096)) { fail("ticker.blk", "tick %u: block %u read back differs", i, b); return 1; }
			alloc_reset(mark);
		}
		ticker_devs_tick(i);
		printf("RESULT tick=%u\n", i);
		while (rdtsc() - t < spin) pause_();
	}
	for (u64 p = 0; p < PAGES && p < n; p++) {
		u64 want = n - 1 - ((n - 1 - p) % PAGES);
		if (pages[p * 512] != want) fail("ticker.memory", "page %u holds %u, want %u", p, pages[p * 512], want);
	}
	u64 want_sum = 0;
	for (u64 i = 0; i < n; i++) want_sum += i * 2654435761ull;
	if (sum != want_sum) fail("ticker.sum", "running sum 0x%x, want 0x%x", sum, want_sum);
	printf("RESULT ticker.sum=0x%x\n", sum);
	if (d && use_irq) {
		volatile struct irq_dev *s = irq_of(d);
		u64 missing = vq_missing_irqs - missing0;
		printf("RESULT ticker.irq=count:%u,used:%u,missing:%u\n", s ? s->count : 0, s ? s->used : 0, missing);
		if (!s || s->used < 2 * n || missing) fail("ticker.irq", "%u used-buffer interrupts for %u requests, %u completions without one", s ? s->used : 0, 2 * n, missing);
	}
	if (!failures) pass("ticker");
	return failures ? 1 : 0;
}
