// Values from the virtio 1.2/1.3 specification (oasis-tcs/virtio-spec,
// split-ring.tex and packed-ring.tex) and include/uapi/linux/virtio_ring.h.

/** Descriptor flag: the buffer continues via `next` (split) or the next ring slot (packed). */
export const VIRTQ_DESC_F_NEXT = 1;
/** Descriptor flag: the buffer is device write-only (otherwise device read-only). */
export const VIRTQ_DESC_F_WRITE = 2;
/** Descriptor flag: the buffer holds a table of descriptors. */
export const VIRTQ_DESC_F_INDIRECT = 4;
/** Packed descriptor flag: available, compared against the driver's wrap counter. */
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
/** Packed descriptor flag: used, compared against the device's wrap counter. */
export const VIRTQ_DESC_F_USED = 1 << 15;

/** Split avail ring `flags`: the driver asks for no used-buffer notifications. */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** Split used ring `flags`: the device asks for no available-buffer notifications. */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Packed event suppression `flags`: events enabled. */
export const RING_EVENT_FLAGS_ENABLE = 0;
/** Packed event suppression `flags`: events disabled. */
export const RING_EVENT_FLAGS_DISABLE = 1;
/** Packed event suppression `flags`: event at a given offset/wrap (needs VIRTIO_F_EVENT_IDX). */
export const RING_EVENT_FLAGS_DESC = 2;

/** Feature bit: indirect descriptors. */
export const VIRTIO_F_INDIRECT_DESC = 28;
/** Feature bit: `used_event` / `avail_event` notification suppression. */
export const VIRTIO_F_EVENT_IDX = 29;
/** Feature bit: packed virtqueue layout. */
export const VIRTIO_F_RING_PACKED = 34;

/** Largest queue size (2^15), for both layouts. */
export const MAX_QUEUE_SIZE = 32768;
/** Size in bytes of one descriptor (split and packed). */
export const DESCRIPTOR_SIZE = 16;
/** Largest indirect table this package follows, in descriptors. */
export const MAX_INDIRECT_DESCRIPTORS = 32768;
/** Largest total length of a chain: lengths are reported back as a u32. */
export const MAX_CHAIN_LENGTH = 0xffff_ffff;

/**
 * The spec's `vring_need_event`: whether moving an index from `oldIdx` to
 * `newIdx` (u16, wrapping) crossed `eventIdx`, i.e. `eventIdx` is in
 * [oldIdx, newIdx).
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}
