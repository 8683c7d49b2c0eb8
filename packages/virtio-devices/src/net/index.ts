export { VirtioNet, NET_BATCH_BYTES, NET_BATCH_FRAMES } from "./device.js";
export type { VirtioNetOptions, VirtioNetTapOptions } from "./device.js";
export { TapBackend } from "./backend.js";
export type { NetBackend, NetBackendEvents, TapBackendOptions } from "./backend.js";
export { NetMetrics } from "./metrics.js";
export type { VirtioNetState } from "./persist.js";
export {
  NET_HDR_SIZE,
  NET_MAX_BUFFER,
  NET_MAX_FRAME,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_S_LINK_UP,
} from "./constants.js";
