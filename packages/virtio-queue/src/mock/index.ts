/**
 * `@ts-vmm/virtio-queue/mock`: the driver (guest) side of split and packed virtqueues, written into
 * real guest memory, for testing a device against a queue the way a guest driver fills it.
 *
 * @module mock
 */
export { MockSplitQueue } from "./split.js";
export type { RawSplitDescriptor } from "./split.js";
export { MockPackedQueue } from "./packed.js";
export type { MockEventState, MockPackedUsed, MockRingPosition, RawPackedDescriptor } from "./packed.js";
export type { MockBuffer, MockQueueOptions, MockUsed } from "./buffers.js";
