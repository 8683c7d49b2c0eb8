/*
 * mode=blk-durability: 4 KiB writes to consecutive 8-sector blocks of the
 * first virtio-blk device, each followed by a FLUSH. After a FLUSH completes
 * with OK the guest prints "RESULT durable=<i>": every block up to i must be
 * on the host disk even if the VMM is killed right then (kill -9 test).
 * Block i holds u32 i, u32 salt, then bytes (i * 7 + j) & 0xff.
 */
#include "virtio.h"

int blk_io(struct vq *q, u32 type, u64 sector, void *buf, u32 len, u8 *status_out);
struct blk_req { u32 type, reserved; u64 sector; };

/* FLUSH as header + status only (QEMU refuses a zero-length data descriptor). */
static int blk_flush(struct vq *q, u8 *status_out) {
	struct blk_req *h = alloc(sizeof *h, 16);
	u8 *st = alloc(1, 1);
	h->type = 4;
	h->sector = 0;
	*st = 0xff;
	struct vbuf b[2] = {{(u64)h, 16, 0}, {(u64)st, 1, 1}};
	vq_send(q, b, 2);
	int r = vq_poll(q, NULL, NULL, poll_budget);
	*status_out = *st;
	return r;
}

int mode_blk_durability(void) {
	struct vdev *d = vdev_find(VIRTIO_ID_BLOCK, 0);
	if (!d) { fail("durability", "needs a virtio-blk device"); return 1; }
	struct vq q;
	if (vdev_init(d, 1ull << 9 /* VIRTIO_BLK_F_FLUSH */) || vq_setup(d, &q, 0, 64)) { fail("durability.init", "init"); return 1; }
	vdev_driver_ok(d);
	if (!(d->features & (1ull << 9))) { fail("durability.init", "no VIRTIO_BLK_F_FLUSH"); return 1; }
	u64 cap = vcfg64(d, 0);
	u64 n = cmdline_u64("blocks", cap / 8);
	u32 salt = (u32)cmdline_u64("salt", 0);
	if (n > cap / 8) n = cap / 8;
	u8 *buf = alloc(4096, 4096);
	for (u64 i = 0; i < n; i++) {
		void *mark = alloc_mark(); /* each request allocates its header and status byte */
		for (int j = 0; j < 4096; j++) buf[j] = (u8)(i * 7 + (u64)j);
		*(u32 *)buf = (u32)i;
		*(u32 *)(buf + 4) = salt;
		u8 st;
		if (blk_io(&q, 1, i * 8, buf, 4096, &st) != 1 || st) { fail("durability.write", "block %u status %u", i, (u64)st); return 1; }
		if (blk_flush(&q, &st) != 1 || st) { fail("durability.flush", "block %u status %u", i, (u64)st); return 1; }
		printf("RESULT durable=%u\n", i);
		alloc_reset(mark);
	}
	pass("durability");
	return 0;
}
