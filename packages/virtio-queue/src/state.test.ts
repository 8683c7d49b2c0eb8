import { describe, expect, it } from "vitest";
import { makeMemory } from "../test/memory.js";
import { MockPackedQueue, MockSplitQueue } from "./mock/index.js";
import { Queue, VirtqueueError, type QueueState } from "./index.js";
import { codeOf } from "../test/errors.js";

describe("queue state save/restore", () => {
  it("a split queue restored mid-flight carries on where it stopped", () => {
    const mem = makeMemory(0x40000);
    const mock = new MockSplitQueue(mem, 8, { base: 0x1000, eventIdx: true });
    const q = mock.createQueue();
    const heads = [0, 1, 2].map(() => mock.addChain([{ addr: 0x8000, len: 4, writable: true }]));
    const first = q.popDescriptorChain(mem)!;
    q.addUsed(mem, first.head, 4);
    const saved = JSON.parse(JSON.stringify(q.state())) as QueueState;
    const r = Queue.fromState(saved);
    expect(r.state()).toEqual(q.state());
    expect([...r.iter(mem)].map((c) => c.head)).toEqual(heads.slice(1));
    r.addUsed(mem, heads[1]!, 4);
    expect(mock.takeUsed().map((u) => u.id)).toEqual([heads[0], heads[1]]);
  });

  it("a packed queue restored with chains in flight can return them", () => {
    const mem = makeMemory(0x40000);
    const mock = new MockPackedQueue(mem, 6, { base: 0x1000 });
    const q = mock.createQueue();
    const a = mock.addChain([
      { addr: 0x8000, len: 4 },
      { addr: 0x8100, len: 4, writable: true },
    ]);
    q.popDescriptorChain(mem);
    const r = Queue.fromState(JSON.parse(JSON.stringify(q.state())) as QueueState);
    expect(r.state().inFlight).toEqual([[a, 2]]);
    r.addUsed(mem, a, 4);
    expect(mock.takeUsed().map((u) => u.id)).toEqual([a]);
  });

  it("fromState re-runs the trySet checks and rejects malformed state", () => {
    const good = new Queue(16).state();
    expect(codeOf(() => Queue.fromState({ ...good, size: 12 }))).toBe("InvalidQueueSize");
    expect(codeOf(() => Queue.fromState({ ...good, maxSize: 12 }))).toBe("InvalidQueueSize");
    expect(codeOf(() => Queue.fromState({ ...good, descTable: 0x1008 }))).toBe("Unaligned");
    expect(codeOf(() => Queue.fromState({ ...good, usedRing: 2 ** 52 }))).toBe("AddressTooLarge");
    expect(codeOf(() => Queue.fromState({ ...good, usedRing: 2 ** 60 }))).toBe("AddressTooLarge");
    expect(codeOf(() => Queue.fromState({ ...good, nextAvail: 70000 }))).toBe("InvalidState");
    expect(codeOf(() => Queue.fromState({ ...good, ready: 1 as unknown as boolean }))).toBe("InvalidState");
    expect(codeOf(() => Queue.fromState({ ...good, version: 2 as 1 }))).toBe("InvalidState");
    expect(codeOf(() => Queue.fromState(null as unknown as QueueState))).toBe("InvalidState");
    const packed = { ...good, packed: true, size: 12 };
    expect(codeOf(() => Queue.fromState(packed))).toBeUndefined();
    expect(codeOf(() => Queue.fromState({ ...packed, nextAvail: 12 }))).toBe("InvalidState");
    expect(codeOf(() => Queue.fromState({ ...packed, inFlight: [[1, 13]] }))).toBe("InvalidState");
    expect(codeOf(() => Queue.fromState({ ...packed, inFlight: [[1, 6], [1, 6]] }))).toBe("InvalidState");
    expect(codeOf(() => Queue.fromState({ ...packed, inFlight: [[1, 7], [2, 6]] }))).toBe("InvalidState");
  });

  it("fromState checks every field whatever the layout (no garbage carried into state())", () => {
    const split = new Queue(16).state();
    const packed = { ...split, packed: true, size: 12 };
    for (const s of [split, packed]) {
      for (const bad of [Number.NaN, -1, 0.5, 2 * s.size, 1e300, "0", null]) {
        expect(codeOf(() => Queue.fromState({ ...s, signalledUsed: bad as number }))).toBe("InvalidState");
      }
      for (const bad of [Number.NaN, -1, 0.5, 0x10000, "0", null]) {
        expect(codeOf(() => Queue.fromState({ ...s, numAdded: bad as number }))).toBe("InvalidState");
        expect(codeOf(() => Queue.fromState({ ...s, nextUsed: bad as number }))).toBe("InvalidState");
      }
      for (const bad of [Number.NaN, -8, 8.5, Infinity, "4096", null]) {
        expect(codeOf(() => Queue.fromState({ ...s, descTable: bad as number }))).toBe("InvalidState");
      }
      expect(codeOf(() => Queue.fromState({ ...s, inFlight: {} as [] }))).toBe("InvalidState");
    }
  });
});
