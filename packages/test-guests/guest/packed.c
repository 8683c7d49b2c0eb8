/*
 * Packed virtqueues (virtio 1.2, 2.8) for the blk check `blk.packed`: the
 * descriptor ring, the driver and device event-suppression areas, avail/used
 * wrap counters, chains with NEXT, buffer ids in every descriptor. Only what
 * the check needs: no indirect tables, the driver never reuses an id that is
 * still in flight.
 */
#include "virtio.h"
#include "packed.h"

#define PF_NEXT 1
#define PF_WRITE 2
#define PF_AVAIL (1u << 7)
#define PF_USED (1u << 15)

int pvq_setup(struct vdev *d, struct pvq *q, u16 index, u16 num, int irq) {
	vw(d, VIRTIO_MMIO_QUEUE_SEL, index);
	if (vr(d, VIRTIO_MMIO_QUEUE_READY)) return -1;
	u32 nmax = vr(d, VIRTIO_MMIO_QUEUE_NUM_MAX);
	if (!nmax) return -2;
	if (num > nmax) num = (u16)nmax;
	memset(q, 0, sizeof *q);
	q->dev = d;
	q->index = index;
	q->num = num;
	q->avail_wrap = 1;
	q->used_wrap = 1;
	u8 *mem = alloc(16ull * num + 4096 * 2, 4096);
	q->desc = (volatile struct pvirtq_desc *)mem;
	q->driver = (volatile struct pvirtq_event *)(mem + ((16ull * num + 4095) & ~4095ull));
	q->device = (volatile struct pvirtq_event *)((u8 *)q->driver + 64);
	q->irq = irq && irq_of(d) != NULL;
	if (q->irq) q->irq_seen = irq_of(d)->count;
	q->driver->flags = q->irq ? 0 : 1; /* 0: interrupts enabled, 1: disabled */
	vw(d, VIRTIO_MMIO_QUEUE_NUM, num);
	vw(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (u32)(u64)q->desc);
	vw(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, (u32)((u64)q->desc >> 32));
	vw(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (u32)(u64)q->driver); /* QueueDriver: driver event suppression */
	vw(d, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (u32)((u64)q->driver >> 32));
	vw(d, VIRTIO_MMIO_QUEUE_USED_LOW, (u32)(u64)q->device); /* QueueDevice: device event suppression */
	vw(d, VIRTIO_MMIO_QUEUE_USED_HIGH, (u32)((u64)q->device >> 32));
	vw(d, VIRTIO_MMIO_QUEUE_READY, 1);
	return vr(d, VIRTIO_MMIO_QUEUE_READY) == 1 ? 0 : -3;
}

/* Makes a chain available under buffer id `id` (no notification). Returns 0, or -1 if the ring is full. */
int pvq_add(struct pvq *q, u16 id, const struct vbuf *b, int n) {
	if (n < 1 || n > q->num - q->in_flight || id >= PVQ_MAX_IDS) return -1;
	u16 head = q->next_avail, i = head;
	u16 head_flags = 0;
	int wrap = q->avail_wrap;
	for (int k = 0; k < n; k++) {
		u16 f = (u16)((b[k].writable ? PF_WRITE : 0) | (k + 1 < n ? PF_NEXT : 0) | (wrap ? PF_AVAIL : PF_USED));
		q->desc[i].addr = b[k].addr;
		q->desc[i].len = b[k].len;
		q->desc[i].id = id;
		if (k == 0) head_flags = f;
		else q->desc[i].flags = f;
		if (++i == q->num) { i = 0; wrap = !wrap; }
	}
	__atomic_thread_fence(__ATOMIC_RELEASE);
	q->desc[head].flags = head_flags; /* the head last: the chain becomes visible at once */
	q->next_avail = i;
	q->avail_wrap = wrap;
	q->chain_len[id] = (u16)n;
	q->in_flight += (u16)n;
	return 0;
}

void pvq_kick(struct pvq *q) {
	mb();
	if (q->device->flags == 1) { q->kicks_suppressed++; return; } /* the device disabled notifications */
	q->kicks++;
	vw(q->dev, VIRTIO_MMIO_QUEUE_NOTIFY, q->index);
}

static int used_at(struct pvq *q, u16 pos, int wrap) {
	u16 f = __atomic_load_n(&q->desc[pos].flags, __ATOMIC_ACQUIRE);
	int a = (f & PF_AVAIL) != 0, u = (f & PF_USED) != 0;
	return a == u && u == wrap;
}
static int used_here(struct pvq *q) { return used_at(q, q->next_used, q->used_wrap); }

/* Used chains visible now, from next_used on (what an interrupt seen now announces). */
static u64 visible(struct pvq *q) {
	u16 pos = q->next_used;
	int wrap = q->used_wrap;
	u64 n = 0;
	while (n < PVQ_MAX_IDS && used_at(q, pos, wrap)) {
		u16 i = q->desc[pos].id;
		if (i >= PVQ_MAX_IDS || !q->chain_len[i]) break;
		pos = (u16)(pos + q->chain_len[i]);
		if (pos >= q->num) { pos = (u16)(pos - q->num); wrap = !wrap; }
		n++;
	}
	return n;
}

int pvq_wait(struct pvq *q, u16 *id, u32 *len, u64 budget) {
	volatile struct irq_dev *s = q->irq ? irq_of(q->dev) : NULL;
	u64 t0 = rdtsc();
	u32 spins = 0;
	for (;;) {
		int announced = 1;
		if (s) {
			u64 c = s->count;
			if (c != q->irq_seen) { q->irq_seen = c; q->covered = q->consumed + visible(q); }
			announced = q->consumed < q->covered;
		}
		if (used_here(q)) {
			if (s && !announced) {
				/* there, but not (yet) announced by an interrupt */
				if (rdtsc() - t0 > budget) { vq_missing_irqs++; return -2; }
				pause_();
				continue;
			}
			u16 i = (u16)q->desc[q->next_used].id;
			if (id) *id = i;
			if (len) *len = q->desc[q->next_used].len;
			if (i >= PVQ_MAX_IDS || !q->chain_len[i]) return -3; /* an id that is not in flight */
			u16 n = q->chain_len[i];
			q->chain_len[i] = 0;
			q->in_flight -= n;
			q->next_used = (u16)(q->next_used + n);
			if (q->next_used >= q->num) { q->next_used = (u16)(q->next_used - q->num); q->used_wrap = !q->used_wrap; }
			q->consumed++;
			return 1;
		}
		if ((++spins & 1023) == 0) {
			u64 dt = rdtsc() - t0;
			if (dt > budget) return 0;
			if (dt > 20000000ull && (vr(q->dev, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET)) return -1;
		}
		pause_();
	}
}
