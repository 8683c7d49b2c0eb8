/**
 * The entry point of `@ts-vmm/virtio-queue` (its README is the package's page in the API docs).
 * `@mergeModuleWith <project>` lists these exports on that page rather than under a
 * sub-module named `index`, beside the package's subpath entry points.
 *
 * @module
 * @mergeModuleWith <project>
 */
export { Queue } from "./queue.js";
export { DescriptorChain, DEFAULT_READ_LIMIT } from "./chain.js";
export type { Descriptor } from "./chain.js";
export { ReusableChain } from "./reusable-chain.js";
export { VirtqueueError } from "./errors.js";
export type { VirtqueueErrorCode, VirtqueueErrorDetails } from "./errors.js";
export type { QueueState } from "./state.js";
export {
  DESCRIPTOR_SIZE,
  MAX_CHAIN_LENGTH,
  MAX_INDIRECT_DESCRIPTORS,
  MAX_QUEUE_SIZE,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from "./constants.js";
export { splitAvailSize, splitUsedSize } from "./split-ring.js";
export { PACKED_EVENT_SIZE } from "./packed-ring.js";
