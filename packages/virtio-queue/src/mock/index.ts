export { MockSplitQueue } from "./split.js";
export type { RawSplitDescriptor } from "./split.js";
export { MockPackedQueue } from "./packed.js";
export type { MockEventState, MockPackedUsed, MockRingPosition, RawPackedDescriptor } from "./packed.js";
export type { MockBuffer, MockQueueOptions, MockUsed } from "./buffers.js";
