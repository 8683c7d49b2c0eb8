/* virtio-mmio transport and split virtqueue driver of the micro-guest (runs at CPL3). */
#include "virtio.h"

#define MAX_DEVS 32
static struct vdev devs[MAX_DEVS];
static int ndevs = -1;

static u64 parse_size(const char *s, const char **end) {
	u64 v = parse_u64(s, &s);
	if (*s == 'K' || *s == 'k') { v <<= 10; s++; }
	else if (*s == 'M' || *s == 'm') { v <<= 20; s++; }
	*end = s;
	return v;
}

/* virtio_mmio.device=<size>@<base>:<irq> (Linux's virtio_mmio module parameter format). */
static void discover(void) {
	ndevs = 0;
	const char *s = cmdline();
	const char *key = "virtio_mmio.device=";
	usize kl = strlen(key);
	while (*s && ndevs < MAX_DEVS) {
		while (*s == ' ') s++;
		if (!strncmp(s, key, kl)) {
			const char *p = s + kl;
			struct vdev *d = &devs[ndevs];
			d->size = (u32)parse_size(p, &p);
			if (*p == '@') {
				d->base = parse_u64(p + 1, &p);
				if (*p == ':') d->irq = (u32)parse_u64(p + 1, &p);
				/* Only accept windows in the mapped MMIO hole (3-4 GiB). */
				if (d->base >= 0xc0000000ull && d->base + d->size <= 0x100000000ull && d->size >= 0x200 &&
				    vr(d, VIRTIO_MMIO_MAGIC) == 0x74726976) {
					d->version = vr(d, VIRTIO_MMIO_VERSION);
					d->id = vr(d, VIRTIO_MMIO_DEVICE_ID);
					if (d->id) ndevs++;
				}
			}
		}
		while (*s && *s != ' ') s++;
	}
}

int vq_use_irq;
int vq_honour_no_notify;
u64 vq_missing_irqs;
u64 vq_poll_waits, vq_poll_wait_cycles;

int vdev_index(const struct vdev *d) { return d >= devs && d < devs + MAX_DEVS ? (int)(d - devs) : -1; }
int vdev_count(void) { if (ndevs < 0) discover(); return ndevs; }
struct vdev *vdev_at(int i) { return i < vdev_count() ? &devs[i] : NULL; }
struct vdev *vdev_find(u32 id, int nth) {
	for (int i = 0; i < vdev_count(); i++)
		if (devs[i].id == id && nth-- == 0) return &devs[i];
	return NULL;
}
void vdev_list(void) {
	for (int i = 0; i < vdev_count(); i++)
		printf("RESULT virtio.%u=id:%u,version:%u,base:0x%x,irq:%u\n", (u64)i, (u64)devs[i].id,
		       (u64)devs[i].version, devs[i].base, (u64)devs[i].irq);
}

u64 vcfg64(const struct vdev *d, u32 off) {
	u32 gen, lo, hi;
	do {
		gen = vr(d, VIRTIO_MMIO_CONFIG_GENERATION);
		lo = vcfg32(d, off);
		hi = vcfg32(d, off + 4);
	} while (gen != vr(d, VIRTIO_MMIO_CONFIG_GENERATION));
	return ((u64)hi << 32) | lo;
}

int vdev_offers(struct vdev *d, u32 bit) {
	vw(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, bit / 32);
	return (vr(d, VIRTIO_MMIO_DEVICE_FEATURES) >> (bit % 32)) & 1;
}

u32 vdev_status(struct vdev *d) { return vr(d, VIRTIO_MMIO_STATUS); }

void vdev_reset(struct vdev *d) {
	vw(d, VIRTIO_MMIO_STATUS, 0);
	u64 t0 = rdtsc();
	while (vr(d, VIRTIO_MMIO_STATUS) != 0 && rdtsc() - t0 < poll_budget) pause_();
}

int vdev_init(struct vdev *d, u64 want) {
	if (d->version != 2) return -1;
	vdev_reset(d);
	if (vr(d, VIRTIO_MMIO_STATUS) != 0) return -2;
	vw(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACK);
	vw(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER);
	vw(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	u64 offered = vr(d, VIRTIO_MMIO_DEVICE_FEATURES);
	vw(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	offered |= (u64)vr(d, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
	if (!(offered & VIRTIO_F_VERSION_1)) return -3;
	u64 f = (want & offered) | VIRTIO_F_VERSION_1;
	vw(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	vw(d, VIRTIO_MMIO_DRIVER_FEATURES, (u32)f);
	vw(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	vw(d, VIRTIO_MMIO_DRIVER_FEATURES, (u32)(f >> 32));
	vw(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	if (!(vr(d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK)) return -4;
	d->features = f;
	return 0;
}

int vq_setup(struct vdev *d, struct vq *q, u16 index, u16 max_num) {
	vw(d, VIRTIO_MMIO_QUEUE_SEL, index);
	if (vr(d, VIRTIO_MMIO_QUEUE_READY)) return -1;
	u32 nmax = vr(d, VIRTIO_MMIO_QUEUE_NUM_MAX);
	if (!nmax) return -2;
	u32 num = 1;
	while (num * 2 <= nmax && num * 2 <= max_num) num *= 2;
	memset(q, 0, sizeof *q);
	q->dev = d;
	q->index = index;
	q->num = (u16)num;
	/* desc: 16*num at 4K; avail: 6+2*num; used (4-aligned, here 4K): 6+8*num */
	u64 dsz = 16ull * num, asz = 6 + 2ull * num, usz = 6 + 8ull * num;
	u8 *mem = alloc(((dsz + asz + 4095) & ~4095ull) + usz, 4096);
	q->desc = (volatile struct vring_desc *)mem;
	q->avail = (volatile struct vring_avail *)(mem + dsz);
	q->used = (volatile struct vring_used *)(mem + ((dsz + asz + 4095) & ~4095ull));
	q->irq = vq_use_irq && irq_of(d) != NULL;
	q->event_idx = (d->features & VIRTIO_F_EVENT_IDX) != 0;
	q->avail->flags = q->irq ? 0 : VRING_AVAIL_F_NO_INTERRUPT; /* polling: no interrupts */
	if (q->irq) q->irq_seen = irq_of(d)->count;
	if (q->event_idx) VQ_USED_EVENT(q) = q->irq ? 0 : 0x8000; /* polling: as far away as possible */
	vw(d, VIRTIO_MMIO_QUEUE_NUM, num);
	vw(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (u32)(u64)q->desc);
	vw(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, (u32)((u64)q->desc >> 32));
	vw(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (u32)(u64)q->avail);
	vw(d, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (u32)((u64)q->avail >> 32));
	vw(d, VIRTIO_MMIO_QUEUE_USED_LOW, (u32)(u64)q->used);
	vw(d, VIRTIO_MMIO_QUEUE_USED_HIGH, (u32)((u64)q->used >> 32));
	vw(d, VIRTIO_MMIO_QUEUE_READY, 1);
	return vr(d, VIRTIO_MMIO_QUEUE_READY) == 1 ? 0 : -3;
}

void vdev_driver_ok(struct vdev *d) {
	vw(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
				      VIRTIO_STATUS_DRIVER_OK);
}

void vq_add_at(struct vq *q, u16 head, const struct vbuf *b, int n) {
	for (int i = 0; i < n; i++) {
		u16 di = (u16)((head + i) % q->num);
		q->desc[di].addr = b[i].addr;
		q->desc[di].len = b[i].len;
		q->desc[di].flags = (u16)((b[i].writable ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
		q->desc[di].next = (u16)((head + i + 1) % q->num);
	}
	vq_publish(q, head);
}

void vq_publish(struct vq *q, u16 head) {
	q->avail->ring[q->avail_idx % q->num] = head;
	barrier();
	q->avail_idx++;
	__atomic_store_n(&q->avail->idx, q->avail_idx, __ATOMIC_RELEASE);
}

void vq_kick(struct vq *q) {
	mb();
	if (q->event_idx) {
		/* virtio 1.2, 2.7.10: notify only if avail_event lies in [kicked, avail_idx). */
		u16 ev = VQ_AVAIL_EVENT(q), nw = q->avail_idx, old = q->kicked;
		q->kicked = nw;
		if ((u16)(nw - ev - 1) >= (u16)(nw - old)) { q->kicks_suppressed++; return; }
	} else if (vq_honour_no_notify && (__atomic_load_n(&q->used->flags, __ATOMIC_ACQUIRE) & VRING_USED_F_NO_NOTIFY)) {
		/* The device said it does not need this notification (it is still processing). */
		q->kicks_suppressed++;
		return;
	}
	q->kicks++;
	vw(q->dev, VIRTIO_MMIO_QUEUE_NOTIFY, q->index);
}

u16 vq_send(struct vq *q, const struct vbuf *b, int n) {
	u16 head = q->next_desc;
	q->next_desc = (u16)((q->next_desc + n) % q->num);
	vq_add_at(q, head, b, n);
	vq_kick(q);
	return head;
}

int vq_poll(struct vq *q, u32 *id, u32 *len, u64 budget) {
	u64 t0 = rdtsc();
	u32 spins = 0;
	for (;;) {
		u16 ui = __atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE);
		if (ui != q->last_used) {
			volatile struct vring_used_elem *e = &q->used->ring[q->last_used % q->num];
			if (id) *id = e->id;
			if (len) *len = e->len;
			q->last_used++;
			if (spins) { vq_poll_waits++; vq_poll_wait_cycles += rdtsc() - t0; }
			return 1;
		}
		if ((++spins & 1023) == 0) {
			u64 dt = rdtsc() - t0;
			/* Only look at the status register (an exit) once the wait is long. */
			if (dt > 20000000ull && (vr(q->dev, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET)) return -1;
			if (dt > budget) { vq_poll_waits++; vq_poll_wait_cycles += dt; return 0; }
		}
		pause_();
	}
}

int vq_wait(struct vq *q, u32 *id, u32 *len, u64 budget) {
	if (!q->irq) {
		int r = vq_poll(q, id, len, budget);
		if (r == 1 && q->event_idx) VQ_USED_EVENT(q) = (u16)(q->last_used + 0x8000);
		return r;
	}
	volatile struct irq_dev *s = irq_of(q->dev);
	u64 t0 = rdtsc();
	u32 spins = 0;
	for (;;) {
		u64 c = s->count;
		if (c != q->irq_seen) {
			q->irq_seen = c;
			q->covered = __atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE);
		}
		if (q->covered != q->last_used) {
			volatile struct vring_used_elem *e = &q->used->ring[q->last_used % q->num];
			if (id) *id = e->id;
			if (len) *len = e->len;
			q->last_used++;
			if (q->event_idx) VQ_USED_EVENT(q) = q->last_used; /* interrupt for the next one */
			return 1;
		}
		if ((++spins & 1023) == 0) {
			u64 dt = rdtsc() - t0;
			if (dt > budget) {
				if (__atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE) != q->last_used) { vq_missing_irqs++; return -2; }
				return 0;
			}
			if (dt > 20000000ull && (vr(q->dev, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET)) return -1;
		}
		pause_();
	}
}
