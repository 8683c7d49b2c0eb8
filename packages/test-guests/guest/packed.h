/* Packed virtqueue driver of the micro-guest (packed.c). */
#ifndef TG_PACKED_H
#define TG_PACKED_H
#include "virtio.h"

struct pvirtq_desc { u64 addr; u32 len; u16 id; u16 flags; };
struct pvirtq_event { u16 off_wrap; u16 flags; };

#define PVQ_MAX_IDS 64
struct pvq {
	struct vdev *dev;
	u16 index, num;
	volatile struct pvirtq_desc *desc;
	volatile struct pvirtq_event *driver, *device;
	u16 next_avail, next_used, in_flight;
	int avail_wrap, used_wrap;
	u16 chain_len[PVQ_MAX_IDS]; /* descriptors of each id in flight (0 = free) */
	int irq;
	u64 irq_seen, consumed, covered;
	u64 kicks, kicks_suppressed;
};

int pvq_setup(struct vdev *d, struct pvq *q, u16 index, u16 num, int irq);
int pvq_add(struct pvq *q, u16 id, const struct vbuf *b, int n);
void pvq_kick(struct pvq *q);
/* 1 = got one, 0 = timeout, -1 = needs reset, -2 = used but no interrupt, -3 = unknown id. */
int pvq_wait(struct pvq *q, u16 *id, u32 *len, u64 budget);
#endif
