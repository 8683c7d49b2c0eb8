// Numbers from the virtio 1.2 specification §5.5 (traditional memory balloon) and
// Linux's include/uapi/linux/virtio_balloon.h (statistics tags 10-15). Facts only.

/** The balloon's device id (§5.5.1). */
export const VIRTIO_ID_BALLOON = 5;

/** The host must be told before a deflated page is used (not offered here). */
export const VIRTIO_BALLOON_F_MUST_TELL_HOST = 1n << 0n;
/** The statistics queue is present. */
export const VIRTIO_BALLOON_F_STATS_VQ = 1n << 1n;
/** The guest deflates the balloon when it runs out of memory. */
export const VIRTIO_BALLOON_F_DEFLATE_ON_OOM = 1n << 2n;
/** Free page hinting (not offered here). */
export const VIRTIO_BALLOON_F_FREE_PAGE_HINT = 1n << 3n;
/** The guest poisons free pages (not offered here: reported pages are discarded, not kept). */
export const VIRTIO_BALLOON_F_PAGE_POISON = 1n << 4n;
/** The free page reporting queue is present. */
export const VIRTIO_BALLOON_F_REPORTING = 1n << 5n;

/** Balloon pages are 4 KiB whatever the guest's page size: PFNs are addresses >> 12. */
export const BALLOON_PAGE_SIZE = 4096;

/** Size of each queue offered. */
export const BALLOON_QUEUE_SIZE = 256;

/** Most PFNs (inflate and deflate together) handled per turn of the event loop before yielding. */
export const BALLOON_PFNS_PER_TURN = 16384;
/** Most bytes of reported free memory discarded per turn of the event loop before yielding. */
export const BALLOON_REPORT_BYTES_PER_TURN = 256 * 1024 * 1024;
/** Most statistics bytes read from one buffer (409 entries; Linux sends 16). */
export const BALLOON_MAX_STATS_BYTES = 4096;
/** Most chains taken from the statistics queue per turn (a conforming driver has one there). */
export const BALLOON_STATS_CHAINS_PER_TURN = 16;

/** Bytes of one statistics entry: le16 tag, le64 value, packed. */
export const BALLOON_STAT_BYTES = 10;
/** Bytes of config space: le32 num_pages, le32 actual (the hint and poison fields are not offered). */
export const BALLOON_CONFIG_SIZE = 8;
