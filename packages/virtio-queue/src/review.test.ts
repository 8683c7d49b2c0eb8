// Regression tests for the virtio-queue defects of issue 14 (items 9-12).
import { describe, expect, it } from "vitest";
import { makeMemory } from "../test/memory.js";
import { MockPackedQueue, MockSplitQueue } from "./mock/index.js";
import {
  Queue,
  RING_EVENT_FLAGS_DESC,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VirtqueueError,
  type VirtqueueErrorCode,
} from "./index.js";
import { expectCode } from "../test/errors.js";

const TABLE = 0x100000;

/** Writes an indirect table of `n` split descriptors linked by NEXT at TABLE. */
function splitTable(mem: ReturnType<typeof makeMemory>, mock: MockSplitQueue, n: number): void {
  for (let i = 0; i < n; i++) {
    mock.writeAt(TABLE + 16 * i, { addr: 0x8000, len: 1, flags: i + 1 < n ? VIRTQ_DESC_F_NEXT : 0, next: i + 1 });
  }
  void mem;
}

describe("chain length limit (item 10)", () => {
  it("split: an indirect table longer than the queue size is ChainTooLong (consumed, head set)", () => {
    const mem = makeMemory(0x200000);
    const mock = new MockSplitQueue(mem, 8, { base: 0x1000 });
    const q = mock.createQueue();
    expect(q.maxChainLength).toBe(8);
    splitTable(mem, mock, 9);
    mock.writeDescriptor(0, { addr: TABLE, len: 9 * 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    mock.publish(0);
    const e = expectCode(() => q.popDescriptorChain(mem), "ChainTooLong");
    expect(e.head).toBe(0);
    q.addUsed(mem, 0, 0);
    // Exactly the limit is accepted; a device may raise the limit.
    splitTable(mem, mock, 8);
    mock.writeDescriptor(1, { addr: TABLE, len: 8 * 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    mock.publish(1);
    expect(q.popDescriptorChain(mem)?.descriptors.length).toBe(8);
    q.setMaxChainLength(16);
    expect(q.maxChainLength).toBe(16);
    splitTable(mem, mock, 9);
    mock.writeDescriptor(2, { addr: TABLE, len: 9 * 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    mock.publish(2);
    expect(q.popDescriptorChain(mem)?.descriptors.length).toBe(9);
    expectCode(() => q.setMaxChainLength(-1), "InvalidArgument");
    expectCode(() => q.setMaxChainLength(1.5), "InvalidArgument");
  });

  it("split: direct descriptors and the indirect table count together", () => {
    const mem = makeMemory(0x200000);
    const mock = new MockSplitQueue(mem, 8, { base: 0x1000 });
    const q = mock.createQueue();
    q.setMaxChainLength(4);
    splitTable(mem, mock, 3);
    mock.writeDescriptor(0, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    mock.writeDescriptor(1, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 2 });
    mock.writeDescriptor(2, { addr: TABLE, len: 3 * 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    mock.publish(0);
    expectCode(() => q.popDescriptorChain(mem), "ChainTooLong");
  });

  it("packed: a 32768-entry indirect table is refused before it is walked", () => {
    const mem = makeMemory(0x200000);
    const mock = new MockPackedQueue(mem, 256, { base: 0x1000 });
    const q = mock.createQueue();
    mock.addRawChain([{ addr: TABLE, len: 32768 * 16, id: 7, flags: VIRTQ_DESC_F_INDIRECT }]);
    const t0 = performance.now();
    const e = expectCode(() => q.popDescriptorChain(mem), "ChainTooLong");
    const ms = performance.now() - t0;
    expect(e.head).toBe(7);
    expect(ms).toBeLessThan(5); // the walk of 32768 entries took ~15 ms
    // A direct list over the limit too (limit below the ring size).
    q.addUsed(mem, 7, 0);
    mock.takeUsed();
    q.setMaxChainLength(2);
    mock.addChain([{ addr: 0x8000, len: 1 }, { addr: 0x8000, len: 1 }, { addr: 0x8000, len: 1 }]);
    expectCode(() => q.popDescriptorChain(mem), "ChainTooLong");
  });
});

describe("packed EVENT_IDX across 2 x size used slots (item 9)", () => {
  it("notifies when the device used a whole 2*size span between two checks", () => {
    const mem = makeMemory(0x40000);
    const mock = new MockPackedQueue(mem, 4, { base: 0x1000, eventIdx: true });
    const q = mock.createQueue();
    mock.setDriverEvent(RING_EVENT_FLAGS_DESC, 2, true);
    expect(q.needsNotification(mem)).toBe(false); // nothing used yet
    for (let i = 0; i < 8; i++) {
      const id = mock.addChain([{ addr: 0x8000, len: 1 }]);
      q.popDescriptorChain(mem);
      q.addUsed(mem, id, 0);
      mock.takeUsed();
    }
    // The position is back where it was, but slot 2 (wrap 1) was passed: interrupt.
    expect(q.needsNotification(mem)).toBe(true);
    expect(q.needsNotification(mem)).toBe(false);
  });
});

describe("restore checks the packed position invariant (item 11)", () => {
  it("nextAvail - nextUsed (with wraps) must equal the slots in flight", () => {
    const mem = makeMemory(0x40000);
    const mock = new MockPackedQueue(mem, 8, { base: 0x1000 });
    const q = mock.createQueue();
    mock.addChain([{ addr: 0x8000, len: 1 }, { addr: 0x8000, len: 1 }]);
    q.popDescriptorChain(mem);
    const good = q.state();
    expect(good).toMatchObject({ nextAvail: 2, nextUsed: 0, inFlight: [[expect.any(Number), 2]] });
    expect(Queue.fromState(good).state()).toEqual(good);
    expectCode(() => Queue.fromState({ ...good, nextAvail: 5 }), "InvalidState");
    expectCode(() => Queue.fromState({ ...good, inFlight: [] }), "InvalidState");
    expectCode(() => Queue.fromState({ ...good, availWrapCounter: false }), "InvalidState");
    // Across a wrap: avail at 1 (wrap 0), used at 7 (wrap 1), 2 slots in flight.
    expect(Queue.fromState({ ...good, nextAvail: 1, availWrapCounter: false, nextUsed: 7 }).nextAvail).toBe(1);
  });
});

describe("layout and consumed flag (item 12)", () => {
  it("setRingPacked(false) refuses a packed-only size", () => {
    const q = new Queue(256);
    q.setRingPacked(true);
    expect(q.setSize(100)).toBe(true);
    expect(q.setRingPacked(false)).toBe(false);
    expect(q.lastError?.code).toBe("InvalidQueueSize");
    expect({ packed: q.packed, size: q.size }).toEqual({ packed: true, size: 100 });
    expect(q.setSize(64)).toBe(true);
    expect(q.setRingPacked(false)).toBe(true);
    expect(q.packed).toBe(false);
  });

  it("consumed tells whether the entry was taken: a descriptor outside memory consumes, an avail index ahead does not", () => {
    const mem = makeMemory(0x40000);
    const mock = new MockSplitQueue(mem, 8, { base: 0x1000 });
    const q = mock.createQueue();
    // Head descriptor inside the table, indirect table outside memory: consumed, head set.
    mock.writeDescriptor(0, { addr: 0x100000, len: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    mock.publish(0);
    const e1 = expectCode(() => q.popDescriptorChain(mem), "IndirectTableOutOfBounds");
    expect({ consumed: e1.consumed, head: e1.head }).toEqual({ consumed: true, head: 0 });
    // Avail index too far ahead: nothing taken.
    mock.setAvailIdx(100);
    const e2 = expectCode(() => q.popDescriptorChain(mem), "AvailIndexAhead");
    expect(e2.consumed).toBe(false);
    // Errors of other calls are never consumed.
    expect(new VirtqueueError("InvalidArgument", "x").consumed).toBe(false);
  });
});
