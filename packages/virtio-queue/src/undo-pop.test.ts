import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { makeMemory } from "../test/memory.js";
import { MockPackedQueue, MockSplitQueue } from "./mock/index.js";
import { Queue, type DescriptorChain, RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_ENABLE, VIRTQ_DESC_F_NEXT, VirtqueueError, type VirtqueueErrorCode } from "./index.js";
import { UNDO_WINDOW } from "./undo-log.js";
import { expectCode } from "../test/errors.js";

const buf = (i: number, len = 64) => ({ addr: 0x20000 + i * 0x100, len, writable: true });

function split(size = 8, eventIdx = false) {
  const mem = makeMemory(0x40000);
  const mock = new MockSplitQueue(mem, size, { base: 0x1000, eventIdx });
  return { mem, mock, q: mock.createQueue() };
}

function packed(size = 8, eventIdx = false) {
  const mem = makeMemory(0x40000);
  const mock = new MockPackedQueue(mem, size, { base: 0x1000, eventIdx });
  return { mem, mock, q: mock.createQueue() };
}

describe("undoPop, split", () => {
  it("gives chains back newest first; the next pops return the same buffers in the same order", () => {
    const { mem, mock, q } = split();
    const heads = [mock.addChain([buf(0)]), mock.addChain([buf(1), buf(2)]), mock.addChain([buf(3)])];
    const a = q.popDescriptorChain(mem)!;
    const b = q.popDescriptorChain(mem)!;
    const c = q.popDescriptorChain(mem)!;
    expect(q.nextAvail).toBe(3);
    q.undoPop(c);
    q.undoPop(b);
    expect(q.nextAvail).toBe(1);
    const b2 = q.popDescriptorChain(mem)!;
    const c2 = q.popDescriptorChain(mem)!;
    expect([a.head, b2.head, c2.head]).toEqual(heads);
    expect(b2.descriptors).toEqual(b.descriptors);
    expect(q.popDescriptorChain(mem)).toBeUndefined();
    // Nothing was written to the used ring by giving back.
    expect(mock.usedIdx()).toBe(0);
  });

  it("refuses anything but the newest chain still held, and leaves the queue unchanged", () => {
    const { mem, mock, q } = split();
    mock.addChain([buf(0)]);
    mock.addChain([buf(1)]);
    const a = q.popDescriptorChain(mem)!;
    const b = q.popDescriptorChain(mem)!;
    expectCode(() => q.undoPop(a), "InvalidArgument"); // not the newest
    expect(q.nextAvail).toBe(2);
    q.undoPop(b);
    expectCode(() => q.undoPop(b), "InvalidArgument"); // already given back
    // A returned chain cannot be given back, nor anything popped before it.
    const b2 = q.popDescriptorChain(mem)!;
    q.addUsed(mem, b2.head, 0);
    expectCode(() => q.undoPop(b2), "InvalidArgument");
    expectCode(() => q.undoPop(a), "InvalidArgument");
    expect(q.nextAvail).toBe(2);
    q.setReady(false);
    expectCode(() => q.undoPop(a), "NotReady");
  });

  it("returning an older chain keeps newer ones undoable (FIFO completion)", () => {
    const { mem, mock, q } = split();
    for (let i = 0; i < 3; i++) mock.addChain([buf(i)]);
    const a = q.popDescriptorChain(mem)!;
    const b = q.popDescriptorChain(mem)!;
    const c = q.popDescriptorChain(mem)!;
    q.addUsed(mem, a.head, 0);
    q.undoPop(c);
    q.undoPop(b);
    expect(q.nextAvail).toBe(1);
    expectCode(() => q.undoPop(a), "InvalidArgument");
  });

  it("a chain consumed with an error makes older pops final", () => {
    const { mem, mock, q } = split();
    mock.addChain([buf(0)]);
    mock.publish(200); // head outside the table: consumed, no head
    const a = q.popDescriptorChain(mem)!;
    expectCode(() => q.popDescriptorChain(mem), "InvalidDescriptorIndex");
    expectCode(() => q.undoPop(a), "InvalidArgument");
    expect(q.nextAvail).toBe(2);
  });

  it("reset and a size change forget the pops", () => {
    const { mem, mock, q } = split();
    mock.addChain([buf(0)]);
    const a = q.popDescriptorChain(mem)!;
    q.setReady(false);
    q.trySetSize(4);
    q.setReady(true);
    expectCode(() => q.undoPop(a), "InvalidArgument");
  });

  it("remembers the last UNDO_WINDOW pops", () => {
    const mem = makeMemory(0x80000);
    const mock = new MockSplitQueue(mem, 2048, { base: 0x1000 });
    const q = mock.createQueue();
    const chains: DescriptorChain[] = [];
    for (let i = 0; i < UNDO_WINDOW + 2; i++) {
      mock.addChain([{ addr: 0x40000, len: 8, writable: true }]);
      chains.push(q.popDescriptorChain(mem)!);
    }
    for (let i = chains.length - 1; i >= 2; i--) q.undoPop(chains[i]!);
    expect(q.nextAvail).toBe(2);
    expectCode(() => q.undoPop(chains[1]!), "InvalidArgument");
  });

  it("EVENT_IDX: after giving back, avail_event asks for the entry after the ones seen, and only new chains are reported", () => {
    const { mem, mock, q } = split(8, true);
    mock.addChain([buf(0)]);
    mock.addChain([buf(1)]);
    const a = q.popDescriptorChain(mem)!;
    const b = q.popDescriptorChain(mem)!;
    q.undoPop(b);
    q.undoPop(a);
    // Both were seen: no new chain yet, and the driver must notify when it publishes index 2.
    expect(q.enableNotification(mem)).toBe(false);
    expect(mock.availEvent()).toBe(2);
    mock.addChain([buf(2)]);
    expect(q.enableNotification(mem)).toBe(true);
    // Popping them again takes the seen count down: once all are consumed, avail_event is the index itself.
    for (let i = 0; i < 3; i++) expect(q.popDescriptorChain(mem)).toBeDefined();
    expect(q.enableNotification(mem)).toBe(false);
    expect(mock.availEvent()).toBe(3);
  });

  it("without EVENT_IDX: notifications are switched on and only new chains are reported", () => {
    const { mem, mock, q } = split(8, false);
    mock.addChain([buf(0)]);
    const a = q.popDescriptorChain(mem)!;
    q.disableNotification(mem);
    q.undoPop(a);
    expect(q.enableNotification(mem)).toBe(false);
    expect(mock.usedFlags()).toBe(0);
    mock.addChain([buf(1)]);
    expect(q.enableNotification(mem)).toBe(true);
  });

  it("the saved state holds the rewound position: a restored queue pops the chains given back", () => {
    const { mem, mock, q } = split();
    mock.addChain([buf(0)]);
    mock.addChain([buf(1)]);
    q.popDescriptorChain(mem);
    const b = q.popDescriptorChain(mem)!;
    q.undoPop(b);
    const r = Queue.fromState(q.state());
    expect(r.nextAvail).toBe(1);
    expect(r.popDescriptorChain(mem)?.head).toBe(b.head);
  });

  it("property: any interleaving of adds, pops, give-backs and returns matches a model", () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom("add", "pop", "undo", "usedOldest", "usedNewest"), { maxLength: 200 }), (ops) => {
        const { mem, mock, q } = split(16);
        let published = 0;
        let consumed = 0; // the model's nextAvail
        let seen = 0; // the furthest position ever popped
        const held: NonNullable<ReturnType<typeof q.popDescriptorChain>>[] = []; // popped, not returned; newest last
        let undoable = 0; // how many of the newest held chains can be given back
        for (const op of ops) {
          if (op === "add" && mock.freeCount > 0) {
            mock.addChain([buf(published % 16)]);
            published++;
          } else if (op === "pop") {
            const c = q.popDescriptorChain(mem);
            if (consumed === published) expect(c).toBeUndefined();
            else {
              expect(c).toBeDefined();
              consumed++;
              seen = Math.max(seen, consumed);
              held.push(c!);
              undoable++;
            }
          } else if (op === "undo" && held.length > 0) {
            const c = held[held.length - 1]!;
            if (undoable > 0) {
              q.undoPop(c);
              held.pop();
              undoable--;
              consumed--;
            } else expectCode(() => q.undoPop(c), "InvalidArgument");
          } else if (op === "usedOldest" && held.length > 0) {
            if (undoable === held.length) undoable--;
            q.addUsed(mem, held.shift()!.head, 0);
            mock.takeUsed();
          } else if (op === "usedNewest" && held.length > 0) {
            if (undoable > 0) undoable = 0;
            q.addUsed(mem, held.pop()!.head, 0);
            mock.takeUsed();
          }
          expect(q.nextAvail).toBe(consumed & 0xffff);
          expect(q.enableNotification(mem)).toBe(published !== seen);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe("undoPop, packed", () => {
  it("rewinds position and wrap counter across the ring's end, and the lists can be popped again", () => {
    const { mem, mock, q } = packed(4);
    // Move the ring near its end: 3 one-slot lists popped and returned.
    for (let i = 0; i < 3; i++) mock.addChain([buf(i)]);
    for (let i = 0; i < 3; i++) q.addUsed(mem, q.popDescriptorChain(mem)!.head, 0);
    mock.takeUsed();
    // A two-slot list that wraps (slots 3 and 0), then a one-slot list.
    const id1 = mock.addChain([buf(4), buf(5)]);
    const id2 = mock.addChain([buf(6)]);
    const a = q.popDescriptorChain(mem)!;
    expect(q.nextAvail).toBe(1);
    const b = q.popDescriptorChain(mem)!;
    expect([a.head, b.head]).toEqual([id1, id2]);
    q.undoPop(b);
    q.undoPop(a);
    expect(q.nextAvail).toBe(3);
    expect(q.state().availWrapCounter).toBe(true);
    expect(q.state().inFlight ?? []).toEqual([]);
    const a2 = q.popDescriptorChain(mem)!;
    const b2 = q.popDescriptorChain(mem)!;
    expect([a2.head, b2.head]).toEqual([id1, id2]);
    expect(a2.descriptors).toEqual(a.descriptors);
    // Both are in flight again and can be returned.
    q.addUsed(mem, b2.head, 0);
    q.addUsed(mem, a2.head, 0);
    expect(mock.takeUsed().map((u) => u.id)).toEqual([id2, id1]);
  });

  it("refuses a chain that is not the newest held, and one returned", () => {
    const { mem, mock, q } = packed(8);
    mock.addChain([buf(0)]);
    mock.addChain([buf(1)]);
    const a = q.popDescriptorChain(mem)!;
    const b = q.popDescriptorChain(mem)!;
    expectCode(() => q.undoPop(a), "InvalidArgument");
    q.addUsed(mem, b.head, 0);
    expectCode(() => q.undoPop(b), "InvalidArgument");
    expectCode(() => q.undoPop(a), "InvalidArgument");
    expect(q.nextAvail).toBe(2);
  });

  it("EVENT_IDX: the event offset points past the lists given back; only a new list is reported", () => {
    const { mem, mock, q } = packed(8, true);
    mock.addChain([buf(0), buf(1)]);
    mock.addChain([buf(2)]);
    const a = q.popDescriptorChain(mem)!;
    const b = q.popDescriptorChain(mem)!;
    q.undoPop(b);
    q.undoPop(a);
    expect(q.enableNotification(mem)).toBe(false);
    expect(mock.deviceEventState()).toEqual({ flags: RING_EVENT_FLAGS_DESC, offset: 3, wrap: true });
    mock.addChain([buf(3)]);
    expect(q.enableNotification(mem)).toBe(true);
  });

  it("without EVENT_IDX: notifications on, and the lists given back are not reported as new", () => {
    const { mem, mock, q } = packed(4, false);
    mock.addChain([buf(0), buf(1), buf(2), buf(3)]); // the whole ring
    const a = q.popDescriptorChain(mem)!;
    q.undoPop(a);
    expect(q.enableNotification(mem)).toBe(false);
    expect(mock.deviceEventState().flags).toBe(RING_EVENT_FLAGS_ENABLE);
  });

  it("a list consumed with an error makes older pops final", () => {
    const { mem, mock, q } = packed(8);
    mock.addChain([buf(0)]);
    // NEXT on a readable descriptor after a writable one: consumed with WritableBeforeReadable.
    mock.addRawChain([
      { addr: 0x20000, len: 8, id: 5, flags: VIRTQ_DESC_F_NEXT | 2 },
      { addr: 0x20100, len: 8, id: 5, flags: 0 },
    ]);
    const a = q.popDescriptorChain(mem)!;
    expectCode(() => q.popDescriptorChain(mem), "WritableBeforeReadable");
    expectCode(() => q.undoPop(a), "InvalidArgument");
  });
});
