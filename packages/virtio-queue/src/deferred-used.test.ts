import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { makeMemory } from "../test/memory.js";
import { MockPackedQueue, MockSplitQueue } from "./mock/index.js";
import { Queue, VirtqueueError, type QueueState, type VirtqueueErrorCode } from "./index.js";
import { codeOf } from "../test/errors.js";

// Issue 13: a device that completes several chains in one turn writes their used elements
// with addUsedDeferred and stores the used idx once (publishUsed, or needsNotification,
// which publishes before it decides). The driver must see nothing before the publish,
// everything after it, and EVENT_IDX must decide on the published index.

function setup(size = 8, eventIdx = false) {
  const mem = makeMemory(0x40000);
  const mock = new MockSplitQueue(mem, size, { base: 0x1000, eventIdx });
  const q = mock.createQueue();
  return { mem, mock, q };
}

/** Pops `n` one-buffer chains the mock makes available; returns their heads. */
function popN(mock: MockSplitQueue, q: Queue, n: number): number[] {
  for (let i = 0; i < n; i++) mock.addChain([{ addr: 0x8000 + 0x100 * i, len: 0x100, writable: true }]);
  return Array.from({ length: n }, () => q.popDescriptorChain(mock.mem)!.head);
}

/** The used ring entry at free-running index `i`, read as the driver would. */
function usedEntry(mock: MockSplitQueue, i: number): [number, number] {
  const e = mock.usedRing + 4 + 8 * (i % mock.size);
  return [mock.mem.readU32(e), mock.mem.readU32(e + 4)];
}

describe("deferred used entries (split)", () => {
  it("are written at once but invisible until publishUsed, which stores the index once", () => {
    const { mem, mock, q } = setup();
    const heads = popN(mock, q, 3);
    q.addUsedDeferred(mem, heads[0]!, 10);
    q.addUsedDeferred(mem, heads[1]!, 20);
    q.addUsedDeferred(mem, heads[2]!, 30);
    expect(mock.usedIdx()).toBe(0);
    expect(mock.takeUsed()).toEqual([]);
    expect([q.nextUsed, q.unpublishedUsed]).toEqual([3, 3]);
    // The elements are in the ring already (the index is what the driver waits for).
    expect([0, 1, 2].map((i) => usedEntry(mock, i))).toEqual([[heads[0], 10], [heads[1], 20], [heads[2], 30]]);
    q.publishUsed(mem);
    expect(mock.usedIdx()).toBe(3);
    expect(q.unpublishedUsed).toBe(0);
    expect(mock.takeUsed()).toEqual([{ id: heads[0], len: 10 }, { id: heads[1], len: 20 }, { id: heads[2], len: 30 }]);
    // Nothing waiting: no store at all (the driver may have moved used idx's cache line on).
    mem.storeU16Release(mock.usedRing + 2, 0x1234);
    q.publishUsed(mem);
    expect(mock.usedIdx()).toBe(0x1234);
  });

  it("are published by a later addUsed, which keeps its meaning (publishes its own entry and those before)", () => {
    const { mem, mock, q } = setup();
    const heads = popN(mock, q, 3);
    q.addUsedDeferred(mem, heads[0]!, 1);
    q.addUsedDeferred(mem, heads[1]!, 2);
    q.addUsed(mem, heads[2]!, 3);
    expect(mock.usedIdx()).toBe(3);
    expect(q.unpublishedUsed).toBe(0);
    expect(mock.takeUsed().map((u) => u.id)).toEqual(heads);
  });

  it("wrap the free-running index at 65536", () => {
    const { mem, mock, q: q0 } = setup(8);
    // A queue whose indices are just below the wrap (the ring is empty: avail = used).
    const s = { ...q0.state(), nextAvail: 0xfffe, nextUsed: 0xfffe } as QueueState;
    const q = Queue.fromState(s);
    mem.storeU16Release(mock.availRing + 2, 0xfffe);
    mem.storeU16Release(mock.usedRing + 2, 0xfffe);
    mock.setAvailIdx(0xfffe);
    const heads: number[] = [];
    for (let i = 0; i < 4; i++) {
      mem.writeU16(mock.availRing + 4 + 2 * ((0xfffe + i) % 8), i);
      mock.writeDescriptor(i, { addr: 0x8000, len: 16, flags: 2, next: 0 });
    }
    mock.setAvailIdx(0x0002);
    for (let i = 0; i < 4; i++) heads.push(q.popDescriptorChain(mem)!.head);
    for (const h of heads) q.addUsedDeferred(mem, h, h + 100);
    expect([q.nextUsed, q.unpublishedUsed, mock.usedIdx()]).toEqual([0x0002, 4, 0xfffe]);
    expect(q.state().usedUnpublished).toBe(4);
    q.publishUsed(mem);
    expect([q.unpublishedUsed, mock.usedIdx()]).toEqual([0, 0x0002]);
    expect([0xfffe, 0xffff, 0x10000, 0x10001].map((i) => usedEntry(mock, i))).toEqual(heads.map((h) => [h, h + 100]));
  });

  it("a full ring of unpublished entries is published before one more would overwrite the oldest", () => {
    const { mem, mock, q } = setup(4);
    const heads = popN(mock, q, 4);
    for (const h of heads) q.addUsedDeferred(mem, h, 1);
    expect([q.unpublishedUsed, mock.usedIdx()]).toEqual([4, 0]);
    // A device bug (head returned twice): the four are published first, then this one waits.
    q.addUsedDeferred(mem, heads[0]!, 2);
    expect([q.unpublishedUsed, mock.usedIdx()]).toEqual([1, 4]);
    expect(usedEntry(mock, 0)).toEqual([heads[0], 2]); // the slot of the first, which the driver has seen by now
  });

  it("needsNotification publishes first, so a device cannot signal entries the driver does not see", () => {
    const { mem, mock, q } = setup();
    const heads = popN(mock, q, 2);
    q.addUsedDeferred(mem, heads[0]!, 1);
    q.addUsedDeferred(mem, heads[1]!, 1);
    expect(q.needsNotification(mem)).toBe(true);
    expect(mock.usedIdx()).toBe(2);
    expect(q.unpublishedUsed).toBe(0);
  });

  it("EVENT_IDX: the decision is on the published index (used_event crossed by the batch or not)", () => {
    const { mem, mock, q } = setup(16, true);
    const heads = popN(mock, q, 8);
    mock.setUsedEvent(2); // notify once the entry with index 2 is published
    q.addUsedDeferred(mem, heads[0]!, 1);
    q.addUsedDeferred(mem, heads[1]!, 1);
    expect(q.needsNotification(mem)).toBe(false); // 0..1 published
    q.addUsedDeferred(mem, heads[2]!, 1);
    q.addUsedDeferred(mem, heads[3]!, 1);
    q.addUsedDeferred(mem, heads[4]!, 1);
    expect(mock.usedIdx()).toBe(2);
    expect(q.needsNotification(mem)).toBe(true); // 2..4 published in one store, 2 among them
    expect(mock.usedIdx()).toBe(5);
    mock.setUsedEvent(4); // already passed
    q.addUsedDeferred(mem, heads[5]!, 1);
    expect(q.needsNotification(mem)).toBe(false);
    // The driver moves used_event on after a publish (it saw 0..5): the next batch crosses it.
    mock.setUsedEvent(6);
    q.addUsedDeferred(mem, heads[6]!, 1);
    q.addUsedDeferred(mem, heads[7]!, 1);
    q.publishUsed(mem);
    expect(q.needsNotification(mem)).toBe(true); // published by publishUsed, counted since the last check
  });

  it("property: deferring and publishing at any points notifies exactly as addUsed after each chain would at those points", () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.array(fc.record({ n: fc.integer({ min: 1, max: 8 }), publish: fc.boolean(), usedEvent: fc.nat(0xffff) }), { minLength: 1, maxLength: 40 }),
        fc.nat(0xffff),
        (eventIdx, turns, start) => {
          // Two queues over two memories, one driver script: A returns with addUsed, B defers.
          const sides = [setup(16, eventIdx), setup(16, eventIdx)].map(({ mem, mock, q }) => {
            const r = Queue.fromState({ ...q.state(), nextAvail: start, nextUsed: start } as QueueState);
            mock.setAvailIdx(start);
            mem.storeU16Release(mock.usedRing + 2, start);
            return { mem, mock, q: r };
          });
          let avail = start;
          for (const t of turns) {
            const got: boolean[] = [];
            for (const [k, s] of sides.entries()) {
              for (let i = 0; i < t.n; i++) {
                s.mem.writeU16(s.mock.availRing + 4 + 2 * ((avail + i) % 16), i);
                s.mock.writeDescriptor(i, { addr: 0x8000, len: 4, flags: 2, next: 0 });
              }
              s.mock.setAvailIdx((avail + t.n) & 0xffff);
              s.mock.setUsedEvent(t.usedEvent);
              for (let i = 0; i < t.n; i++) {
                const c = s.q.popDescriptorChain(s.mem)!;
                if (k === 0) s.q.addUsed(s.mem, c.head, 4);
                else s.q.addUsedDeferred(s.mem, c.head, 4);
              }
              if (k === 1 && t.publish) s.q.publishUsed(s.mem);
              got.push(s.q.needsNotification(s.mem));
              expect(s.mock.usedIdx()).toBe((avail + t.n) & 0xffff);
            }
            expect(got[1]).toBe(got[0]);
            avail = (avail + t.n) & 0xffff;
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("persist: state() saves the unpublished count; the restored queue publishes them", () => {
    const { mem, mock, q } = setup();
    const heads = popN(mock, q, 3);
    q.addUsed(mem, heads[0]!, 1);
    q.addUsedDeferred(mem, heads[1]!, 2);
    q.addUsedDeferred(mem, heads[2]!, 3);
    const saved = JSON.parse(JSON.stringify(q.state())) as QueueState;
    expect([saved.nextUsed, saved.usedUnpublished]).toEqual([3, 2]);
    const r = Queue.fromState(saved);
    expect(r.state()).toEqual(q.state());
    expect([r.nextUsed, r.unpublishedUsed]).toEqual([3, 2]);
    expect(mock.takeUsed().map((u) => u.id)).toEqual([heads[0]]);
    r.publishUsed(mem);
    expect(mock.takeUsed()).toEqual([{ id: heads[1], len: 2 }, { id: heads[2], len: 3 }]);
    // Nothing waiting: the field is left out (a state of an older version reads the same).
    expect("usedUnpublished" in r.state()).toBe(false);
  });

  it("fromState checks usedUnpublished", () => {
    const split = new Queue(16).state();
    for (const bad of [-1, 0.5, 17, Number.NaN, "1", null]) {
      expect(codeOf(() => Queue.fromState({ ...split, usedUnpublished: bad as number }))).toBe("InvalidState");
    }
    expect(codeOf(() => Queue.fromState({ ...split, usedUnpublished: 16 }))).toBeUndefined();
    expect(codeOf(() => Queue.fromState({ ...split, packed: true, size: 12, usedUnpublished: 1 }))).toBe("InvalidState");
  });

  it("reset drops deferred entries with the ring; a deferred chain counts as returned for undoPop", () => {
    const { mem, mock, q } = setup();
    const [h] = popN(mock, q, 1);
    const c = q.popDescriptorChain(mem);
    expect(c).toBeUndefined();
    mock.addChain([{ addr: 0x9000, len: 4 }]);
    const c2 = q.popDescriptorChain(mem)!;
    q.addUsedDeferred(mem, c2.head, 0);
    expect(codeOf(() => q.undoPop(c2))).toBe("InvalidArgument");
    q.addUsedDeferred(mem, h!, 0);
    expect(q.unpublishedUsed).toBe(2);
    q.reset();
    expect([q.nextUsed, q.unpublishedUsed]).toEqual([0, 0]);
  });

  it("checks its arguments as addUsed does, and needs a ready queue for publishUsed", () => {
    const { mem, mock, q } = setup();
    popN(mock, q, 1);
    expect(codeOf(() => q.addUsedDeferred(mem, 8, 0))).toBe("InvalidDescriptorIndex");
    expect(codeOf(() => q.addUsedDeferred(mem, 0, -1))).toBe("InvalidArgument");
    expect(q.unpublishedUsed).toBe(0);
    q.setReady(false);
    expect(codeOf(() => q.addUsedDeferred(mem, 0, 0))).toBe("NotReady");
    expect(codeOf(() => q.publishUsed(mem))).toBe("NotReady");
  });
});

describe("deferred used entries (packed)", () => {
  it("are published at once (a packed used descriptor is published by its own flags store)", () => {
    const mem = makeMemory(0x40000);
    const mock = new MockPackedQueue(mem, 8, { base: 0x1000 });
    const q = mock.createQueue();
    const a = mock.addChain([{ addr: 0x8000, len: 4, writable: true }]);
    const b = mock.addChain([{ addr: 0x9000, len: 4, writable: true }]);
    q.popDescriptorChain(mem);
    q.popDescriptorChain(mem);
    q.addUsedDeferred(mem, a, 4);
    expect(q.unpublishedUsed).toBe(0);
    expect(mock.takeUsed().map((u) => u.id)).toEqual([a]);
    q.addUsedDeferred(mem, b, 4);
    q.publishUsed(mem); // nothing to do
    expect(mock.takeUsed().map((u) => u.id)).toEqual([b]);
    expect("usedUnpublished" in q.state()).toBe(false);
  });
});
