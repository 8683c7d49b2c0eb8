/* virtio-mmio (version 2) transport and split virtqueues, per the virtio 1.2 spec (4.2.2, 2.7). */
#ifndef TG_VIRTIO_H
#define TG_VIRTIO_H
#include "guest.h"

#define VIRTIO_MMIO_MAGIC 0x000
#define VIRTIO_MMIO_VERSION 0x004
#define VIRTIO_MMIO_DEVICE_ID 0x008
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_READY 0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_AVAIL_LOW 0x090
#define VIRTIO_MMIO_QUEUE_AVAIL_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_USED_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_USED_HIGH 0x0a4
#define VIRTIO_MMIO_CONFIG_GENERATION 0x0fc
#define VIRTIO_MMIO_CONFIG 0x100

#define VIRTIO_STATUS_ACK 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

#define VIRTIO_F_INDIRECT_DESC (1ull << 28)
#define VIRTIO_F_EVENT_IDX (1ull << 29)
#define VIRTIO_F_VERSION_1 (1ull << 32)
#define VIRTIO_F_RING_PACKED (1ull << 34)
#define VRING_USED_F_NO_NOTIFY 1

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VRING_AVAIL_F_NO_INTERRUPT 1

/* Device IDs (virtio 1.2, 5). */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4
#define VIRTIO_ID_BALLOON 5
#define VIRTIO_ID_RTC 17
#define VIRTIO_ID_VSOCK 19

struct vring_desc { u64 addr; u32 len; u16 flags; u16 next; };
struct vring_avail { u16 flags; u16 idx; u16 ring[]; };
struct vring_used_elem { u32 id; u32 len; };
struct vring_used { u16 flags; u16 idx; struct vring_used_elem ring[]; };

struct vdev {
	u64 base;
	u32 size, irq;
	u32 version, id;
	u64 features;
};

struct vq {
	struct vdev *dev;
	u16 index, num;
	volatile struct vring_desc *desc;
	volatile struct vring_avail *avail;
	volatile struct vring_used *used;
	u16 avail_idx, last_used;
	u16 next_desc; /* rotating descriptor cursor for vq_send */
	/* Interrupt-driven completion (vq_wait): set by vq_setup when vq_use_irq and the device is routed. */
	int irq;
	u64 irq_seen;  /* the device's interrupt count last looked at */
	u16 covered;   /* used->idx when that interrupt was seen: entries before it were announced */
	int event_idx; /* VIRTIO_F_EVENT_IDX negotiated: used_event/avail_event are honoured */
	u16 kicked;    /* avail_idx at the last notification (event-idx kick suppression) */
	u64 kicks, kicks_suppressed;
};
#define VQ_USED_EVENT(q) (*(volatile u16 *)&(q)->avail->ring[(q)->num])
#define VQ_AVAIL_EVENT(q) (*(volatile u16 *)((volatile u8 *)(q)->used + 4 + 8ull * (q)->num))

/* Set by selftest (irq=1, the default there): queues set up afterwards wait for interrupts. */
extern int vq_use_irq;
/* Set by selftest: skip a notification while the device's used->flags has VRING_USED_F_NO_NOTIFY (bench modes always notify). */
extern int vq_honour_no_notify;
/* Counters of completions seen without an interrupt (vq_wait gave up waiting for one). */
extern u64 vq_missing_irqs;
/* vq_poll calls that found nothing at first, and the TSC cycles they spun until an entry came (or gave up). */
extern u64 vq_poll_waits, vq_poll_wait_cycles;

/* One buffer of a chain. */
struct vbuf { u64 addr; u32 len; int writable; };

static inline u32 vr(const struct vdev *d, u32 off) { return *(volatile u32 *)(d->base + off); }
static inline void vw(const struct vdev *d, u32 off, u32 v) { *(volatile u32 *)(d->base + off) = v; }
static inline u8 vcfg8(const struct vdev *d, u32 off) { return *(volatile u8 *)(d->base + VIRTIO_MMIO_CONFIG + off); }
static inline u32 vcfg32(const struct vdev *d, u32 off) { return *(volatile u32 *)(d->base + VIRTIO_MMIO_CONFIG + off); }
static inline void vcfg32w(const struct vdev *d, u32 off, u32 v) { *(volatile u32 *)(d->base + VIRTIO_MMIO_CONFIG + off) = v; }
u64 vcfg64(const struct vdev *d, u32 off);

/* Discovery from virtio_mmio.device= entries; returns the nth device with this ID or NULL. */
struct vdev *vdev_find(u32 id, int nth);
int vdev_count(void);
struct vdev *vdev_at(int i);
void vdev_list(void);
/* Reset and negotiate: VERSION_1 plus (want & offered). Returns 0 or a negative step number. */
int vdev_init(struct vdev *d, u64 want);
int vq_setup(struct vdev *d, struct vq *q, u16 index, u16 max_num);
void vdev_driver_ok(struct vdev *d);
void vdev_reset(struct vdev *d);
u32 vdev_status(struct vdev *d);

/* Writes a chain at descriptors head..head+n-1, publishes it (no notify). */
void vq_add_at(struct vq *q, u16 head, const struct vbuf *b, int n);
/* vq_add_at at the rotating cursor, then notify. Returns the head. */
u16 vq_send(struct vq *q, const struct vbuf *b, int n);
void vq_publish(struct vq *q, u16 head);
void vq_kick(struct vq *q);
/* Polls for one used element: 1 = got it, 0 = timeout, -1 = device needs reset. */
int vq_poll(struct vq *q, u32 *id, u32 *len, u64 budget);
/*
 * Waits for one used element the way the queue was set up: polling, or (q->irq)
 * spinning on the device's interrupt count until an interrupt announced it.
 * 1 = got it, 0 = timeout, -1 = needs reset, -2 = the element was in the used
 * ring but no interrupt came within the budget (counted in vq_missing_irqs).
 */
int vq_wait(struct vq *q, u32 *id, u32 *len, u64 budget);
int vdev_index(const struct vdev *d);
/* Reads one bit of DEVICE_FEATURES (no negotiation). */
int vdev_offers(struct vdev *d, u32 bit);

/* irq.c */
int irq_setup(int want_x2apic);
int irq_route(struct vdev *d);
void irq_unroute(struct vdev *d);
volatile struct irq_dev *irq_of(const struct vdev *d);
void irq_self_ipi(void);
void irq_null_write(void);
void cpuid0(u32 leaf, u32 out[4]);
#endif
