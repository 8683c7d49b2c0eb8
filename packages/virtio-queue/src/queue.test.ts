import { describe, expect, it } from "vitest";
import { makeMemory } from "../test/memory.js";
import { MockPackedQueue, MockSplitQueue } from "./mock/index.js";
import { Queue, VirtqueueError, type QueueState, type VirtqueueErrorCode } from "./index.js";
import { expectCode } from "../test/errors.js";

describe("Queue configuration", () => {
  it("takes a power-of-two max size in [1, 32768]", () => {
    for (const bad of [0, 3, 65536, 32769, -1, 1.5, NaN]) expectCode(() => new Queue(bad), "InvalidQueueSize");
    expect(new Queue(32768).size).toBe(32768);
    expect(new Queue(1).maxSize).toBe(1);
  });

  it("setSize (guest-driven) records bad sizes and leaves the size unchanged", () => {
    const q = new Queue(256);
    for (const bad of [0, 3, 100, 512, 32768 * 2, -4, 2.5]) {
      expect(q.setSize(bad)).toBe(false);
      expect(q.lastError?.code).toBe("InvalidQueueSize");
      expect(q.size).toBe(256);
    }
    expect(q.setSize(64)).toBe(true);
    expect(q.size).toBe(64);
  });

  it("trySetSize throws the same codes", () => {
    const q = new Queue(256);
    expectCode(() => q.trySetSize(0), "InvalidQueueSize");
    expectCode(() => q.trySetSize(6), "InvalidQueueSize");
    expectCode(() => q.trySetSize(512), "InvalidQueueSize");
  });

  it("addresses come in two u32 halves, each settable alone", () => {
    const q = new Queue(16);
    expect(q.setDescTableAddress(0x1000)).toBe(true);
    expect(q.setDescTableAddress(undefined, 0x2)).toBe(true);
    expect(q.descTable).toBe(0x2_0000_1000);
    expect(q.setDescTableAddress(0x2000)).toBe(true);
    expect(q.descTable).toBe(0x2_0000_2000);
  });

  it("rejects guest addresses at or above 2^52 without rounding; state unchanged", () => {
    const q = new Queue(16);
    q.setUsedRingAddress(0x100, 0);
    expect(q.setUsedRingAddress(0, 0x10_0000)).toBe(false); // 2^52
    expect(q.lastError?.code).toBe("AddressTooLarge");
    expect(q.setUsedRingAddress(0xffff_fffc, 0xffff_ffff)).toBe(false);
    expect(q.usedRing).toBe(0x100);
    expect(q.setUsedRingAddress(0xffff_fffc, 0xf_ffff)).toBe(true);
    expect(q.usedRing).toBe(2 ** 52 - 4);
    expectCode(() => q.trySetAvailRingAddress(0, 0x10_0000), "AddressTooLarge");
    expectCode(() => q.trySetAvailRingAddress(-1, 0), "InvalidArgument");
    expectCode(() => q.trySetAvailRingAddress(2 ** 32, 0), "InvalidArgument");
  });

  it("checks alignment: descriptors 16, split avail 2 and used 4, packed areas 4", () => {
    const q = new Queue(16);
    expectCode(() => q.trySetDescTableAddress(0x1008, 0), "Unaligned");
    expectCode(() => q.trySetAvailRingAddress(0x1001, 0), "Unaligned");
    q.trySetAvailRingAddress(0x1002, 0);
    expectCode(() => q.trySetUsedRingAddress(0x1002, 0), "Unaligned");
    expect(q.setDescTableAddress(0x1004, 0)).toBe(false);
    expect(q.lastError?.code).toBe("Unaligned");
    q.setRingPacked(true);
    expectCode(() => q.trySetAvailRingAddress(0x1002, 0), "Unaligned");
  });

  it("refuses configuration changes while ready", () => {
    const q = new Queue(16);
    q.setReady(true);
    expect(q.setSize(8)).toBe(false);
    expect(q.lastError?.code).toBe("QueueReady");
    expect(q.setDescTableAddress(0x2000, 0)).toBe(false);
    expect(q.setEventIdx(true)).toBe(false);
    expect(q.setRingPacked(true)).toBe(false);
    expect([q.size, q.descTable, q.eventIdx, q.packed]).toEqual([16, 0, false, false]);
    expectCode(() => q.trySetSize(8), "QueueReady");
  });

  it("validate names what is wrong; isValid is its boolean", () => {
    const mem = makeMemory(0x10000);
    const q = new Queue(16);
    expectCode(() => q.validate(mem), "NotReady");
    expect(q.isValid(mem)).toBe(false);
    q.setDescTableAddress(0x1000, 0);
    q.setAvailRingAddress(0x2000, 0);
    q.setUsedRingAddress(0x3000, 0);
    q.setReady(true);
    expect(q.isValid(mem)).toBe(true);
    // A packed-valid size that a split queue does not accept: the switch back is refused.
    q.setReady(false);
    q.setRingPacked(true);
    q.setSize(12);
    expect(q.setRingPacked(false)).toBe(false);
    expect(q.lastError?.code).toBe("InvalidQueueSize");
    expect(q.packed).toBe(true);
  });

  it("a new size restarts the ring positions: packed positions stay inside the smaller ring", () => {
    const mem = makeMemory(0x40000);
    const mock = new MockPackedQueue(mem, 8, { base: 0x1000 });
    const q = mock.createQueue();
    for (let i = 0; i < 6; i++) {
      const id = mock.addChain([{ addr: 0x8000, len: 4, writable: true }]);
      q.addUsed(mem, q.popDescriptorChain(mem)!.head, 4);
      expect(id).toBe(mock.takeUsed()[0]!.id);
    }
    expect([q.nextAvail, q.nextUsed]).toEqual([6, 6]);
    // The driver stops the queue, shrinks it and starts it again (same addresses).
    q.setReady(false);
    expect(q.setSize(4)).toBe(true);
    q.setReady(true);
    expect(q.isValid(mem)).toBe(true);
    expect([q.nextAvail, q.nextUsed]).toEqual([0, 0]);
    const s = q.state();
    expect(s.signalledUsed).toBeLessThan(2 * s.size);
    expect(Queue.fromState(JSON.parse(JSON.stringify(s)) as QueueState).state()).toEqual(s);
    // The device only touches the 4-slot ring now: slot 6 (outside it) is never read or written.
    const slot6 = mem.slice(0x1000 + 6 * 16, 16).slice();
    mem.writeU16(0x1000 + 14, 0x80); // slot 0 available, wrap 1
    mem.writeU16(0x1000 + 12, 3);
    mem.writeU32(0x1000 + 8, 4);
    expect(q.popDescriptorChain(mem)!.head).toBe(3);
    q.addUsed(mem, 3, 0);
    expect(mem.slice(0x1000 + 6 * 16, 16)).toEqual(slot6);
  });

  it("a new size restarts a split queue's cached avail index too (AvailIndexAhead is not bypassed)", () => {
    const mem = makeMemory(0x40000);
    const mock = new MockSplitQueue(mem, 256, { base: 0x1000 });
    const q = mock.createQueue();
    mock.setAvailIdx(200);
    q.popDescriptorChain(mem);
    q.setReady(false);
    expect(q.setSize(16)).toBe(true);
    q.setReady(true);
    // 200 entries for a 16-entry ring: the ring is broken, not 199 re-reads of 16 slots.
    expectCode(() => q.popDescriptorChain(mem), "AvailIndexAhead");
  });

  it("reset goes back to the power-on state", () => {
    const q = new Queue(16);
    q.setSize(4);
    q.setDescTableAddress(0x1000, 0);
    q.setRingPacked(true);
    q.setEventIdx(true);
    q.setSize(3);
    q.setReady(true);
    q.setSize(4); // refused: recorded
    expect(q.lastError?.code).toBe("QueueReady");
    q.reset();
    expect([q.size, q.ready, q.descTable, q.lastError, q.packed, q.eventIdx]).toEqual([16, false, 0, undefined, false, false]);
  });
});
