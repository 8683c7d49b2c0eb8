/*
 * mode=bench-irq: what an interrupt costs on this VMM and host, in TSC cycles.
 *   irq_ipi:    n self-IPIs (fixed vector, "self" shorthand), each waited for:
 *               the ICR write (an exit), delivery, the CPL0 handler, EOI, iretq;
 *   irq_null:   n LAPIC writes that deliver nothing (TPR = 0): the exit alone;
 *   blk_poll / blk_irq: n virtio-blk GET_ID requests at queue depth 1,
 *               completion found by polling the used ring vs by the interrupt
 *               (handler: INTERRUPT_STATUS read, INTERRUPT_ACK write, EOI).
 * The handler's share is irq_ipi - irq_null and blk_irq - blk_poll.
 */
#include "virtio.h"

int blk_io(struct vq *q, u32 type, u64 sector, void *buf, u32 len, u8 *status_out);

static u64 blk_round(struct vdev *d, u64 n, int irq) {
	vq_use_irq = irq;
	struct vq q;
	if (vdev_init(d, 0) || vq_setup(d, &q, 0, 64)) { fail("bench-irq.blk", "init"); return 0; }
	if (irq && !q.irq) { fail("bench-irq.blk", "not routed"); return 0; }
	vdev_driver_ok(d);
	void *mark = alloc_mark();
	char *id = alloc(20, 4);
	u64 t0 = rdtsc();
	for (u64 i = 0; i < n; i++) {
		u8 st;
		int r = blk_io(&q, 8, 0, id, 20, &st);
		if (r != 1 || st) { fail("bench-irq.blk", "request %u: wait %d status %u", i, (i64)r, (u64)st); return 0; }
		if ((i & 63) == 63) alloc_reset(mark);
	}
	u64 t = rdtsc() - t0;
	alloc_reset(mark);
	vdev_reset(d);
	return t;
}

int mode_bench_irq(void) {
	u64 n = cmdline_u64("n", 2000);
	printf("RESULT tsc_mark=%u\n", rdtsc());
	if (irq_setup((int)cmdline_u64("x2apic", 1))) return 1;
	u64 t0 = rdtsc();
	for (u64 i = 0; i < n; i++) irq_null_write();
	u64 t_null = rdtsc() - t0;
	u64 before = irq_counts.ipi;
	t0 = rdtsc();
	for (u64 i = 0; i < n; i++) {
		u64 want = irq_counts.ipi + 1;
		irq_self_ipi();
		u64 s = rdtsc();
		while (irq_counts.ipi < want && rdtsc() - s < poll_budget) pause_();
	}
	u64 t_ipi = rdtsc() - t0;
	u64 got = irq_counts.ipi - before;
	printf("RESULT irq_null_n=%u\nRESULT irq_null_cycles=%u\nRESULT irq_ipi_n=%u\nRESULT irq_ipi_cycles=%u\n", n, t_null, got, t_ipi);
	if (got != n) fail("bench-irq.ipi", "%u of %u self-IPIs arrived", got, n);
	struct vdev *d = vdev_find(VIRTIO_ID_BLOCK, 0);
	if (d) {
		irq_route(d);
		u64 nb = cmdline_u64("nblk", n);
		u64 tp = blk_round(d, nb, 0);
		u64 ti = blk_round(d, nb, 1);
		printf("RESULT blk_poll_n=%u\nRESULT blk_poll_cycles=%u\nRESULT blk_irq_n=%u\nRESULT blk_irq_cycles=%u\n", nb, tp, nb, ti);
		irq_unroute(d);
	}
	printf("RESULT tsc_mark=%u\n", rdtsc());
	return failures ? 1 : 0;
}
