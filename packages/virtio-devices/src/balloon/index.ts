export { BALLOON_MAX_STATS_INTERVAL_S, VirtioBalloon } from "./device.js";
export type { VirtioBalloonOptions } from "./device.js";
export {
  BALLOON_MAX_STATS_BYTES,
  BALLOON_PAGE_SIZE,
  BALLOON_PFNS_PER_TURN,
  BALLOON_REPORT_BYTES_PER_TURN,
  VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
  VIRTIO_BALLOON_F_FREE_PAGE_HINT,
  VIRTIO_BALLOON_F_MUST_TELL_HOST,
  VIRTIO_BALLOON_F_PAGE_POISON,
  VIRTIO_BALLOON_F_REPORTING,
  VIRTIO_BALLOON_F_STATS_VQ,
  VIRTIO_ID_BALLOON,
} from "./constants.js";
export { queueRoles } from "./event-handler.js";
export type { BalloonQueueRole } from "./event-handler.js";
export type { BalloonMetrics } from "./metrics.js";
export type { VirtioBalloonState } from "./persist.js";
export { BALLOON_STAT_TAGS } from "./stats.js";
export type { BalloonStatName, BalloonStatValues, BalloonStats } from "./stats.js";
