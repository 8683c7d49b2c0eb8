import { describe, expect, it } from "vitest";
import { makeMemory } from "../test/memory.js";
import { MockPackedQueue } from "./mock/index.js";
import {
  Queue,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
  VirtqueueError,
  type QueueState,
  type VirtqueueErrorCode,
} from "./index.js";
import { expectCode } from "../test/errors.js";

function setup(size = 8, eventIdx = false) {
  const mem = makeMemory(0x40000);
  const mock = new MockPackedQueue(mem, size, { base: 0x1000, eventIdx });
  const q = mock.createQueue();
  expect(q.packed).toBe(true);
  expect(q.isValid(mem)).toBe(true);
  return { mem, mock, q };
}

describe("packed queue data path", () => {
  it("pops lists, writes one used descriptor per list and skips its slots", () => {
    const { mem, mock, q } = setup(8);
    const a = mock.addChain([
      { addr: 0x8000, len: 10 },
      { addr: 0x9000, len: 100, writable: true },
    ]);
    const b = mock.addChain([{ addr: 0xa000, len: 20 }]);
    const c1 = q.popDescriptorChain(mem)!;
    const c2 = q.popDescriptorChain(mem)!;
    expect(q.popDescriptorChain(mem)).toBeUndefined();
    expect([c1.head, c2.head]).toEqual([a, b]);
    expect(c1.descriptors.map((d) => [d.addr, d.len, d.writable])).toEqual([
      [0x8000, 10, false],
      [0x9000, 100, true],
    ]);
    // Out of order completion: b first.
    q.addUsed(mem, b, 0);
    q.addUsed(mem, a, 50);
    const used = mock.takeUsed();
    expect(used.map((u) => [u.id, u.len])).toEqual([
      [b, 0],
      [a, 50],
    ]);
    expect(used[0]!.flags & VIRTQ_DESC_F_WRITE).toBe(0);
    expect(used[1]!.flags & VIRTQ_DESC_F_WRITE).toBe(VIRTQ_DESC_F_WRITE);
    expect(q.nextUsed).toBe(3);
  });

  it("follows the wrap counters around the ring many times, non-power-of-two size", () => {
    const { mem, mock, q } = setup(5);
    let seen = 0;
    for (let round = 0; round < 20; round++) {
      const n = 1 + (round % 3);
      const bufs = Array.from({ length: n }, (_, i) => ({ addr: 0x8000 + i * 16, len: 16, writable: i === n - 1 }));
      const id = mock.addChain(bufs);
      const c = q.popDescriptorChain(mem)!;
      expect(c.head).toBe(id);
      expect(c.descriptors).toHaveLength(n);
      q.addUsed(mem, id, 16);
      expect(mock.takeUsed()).toEqual([{ id, len: 16, flags: expect.any(Number) }]);
      seen++;
    }
    expect(seen).toBe(20);
    expect(q.popDescriptorChain(mem)).toBeUndefined();
  });

  it("pops an indirect list and ignores reserved flags inside the table", () => {
    const { mem, mock, q } = setup(4);
    const table = mock.alloc(48);
    const w = (i: number, addr: number, len: number, flags: number) => {
      mem.writeU64(table + i * 16, BigInt(addr));
      mem.writeU32(table + i * 16 + 8, len);
      mem.writeU16(table + i * 16 + 12, 77);
      mem.writeU16(table + i * 16 + 14, flags);
    };
    w(0, 0x8000, 8, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT); // reserved in a table: ignored
    w(1, 0x8100, 8, 0);
    w(2, 0x9000, 64, VIRTQ_DESC_F_WRITE);
    mock.addRawChain([{ addr: table, len: 48, id: 3, flags: VIRTQ_DESC_F_INDIRECT }]);
    const c = q.popDescriptorChain(mem)!;
    expect(c.indirect).toBe(true);
    expect(c.head).toBe(3);
    expect(c.descriptors.map((d) => [d.addr, d.writable])).toEqual([
      [0x8000, false],
      [0x8100, false],
      [0x9000, true],
    ]);
    q.addUsed(mem, 3, 64);
    expect(mock.takeUsed()[0]!.id).toBe(3);
  });

  it("uses the buffer id of the last descriptor of a list", () => {
    const { mem, mock, q } = setup(4);
    mock.addRawChain([
      { addr: 0x8000, len: 1, id: 9, flags: VIRTQ_DESC_F_NEXT },
      { addr: 0x8000, len: 1, id: 2, flags: 0 },
    ]);
    expect(q.popDescriptorChain(mem)!.head).toBe(2);
  });
});

describe("packed queue validation", () => {
  it("ChainTooLong: NEXT on every slot; nothing consumed", () => {
    const { mem, mock, q } = setup(4);
    mock.addRawChain(Array.from({ length: 4 }, () => ({ addr: 0x8000, len: 1, id: 0, flags: VIRTQ_DESC_F_NEXT })));
    const e = expectCode(() => q.popDescriptorChain(mem), "ChainTooLong");
    expect(e.head).toBeUndefined();
    expect(q.nextAvail).toBe(0);
  });

  it("IndirectWithNext: an indirect descriptor in a NEXT-linked list", () => {
    const { mem, mock, q } = setup(4);
    const table = mock.alloc(16);
    mock.addRawChain([
      { addr: 0x8000, len: 1, id: 0, flags: VIRTQ_DESC_F_NEXT },
      { addr: table, len: 16, id: 1, flags: VIRTQ_DESC_F_INDIRECT },
    ]);
    const e = expectCode(() => q.popDescriptorChain(mem), "IndirectWithNext");
    expect(e.head).toBe(1);
    q.addUsed(mem, 1, 0); // consumed: can be handed back
    expect(mock.takeUsed().map((u) => u.id)).toEqual([1]);
  });

  it("InvalidIndirectLength, IndirectTableOutOfBounds, AddressTooLarge", () => {
    const { mem, mock, q } = setup(8);
    for (const len of [0, 24]) {
      mock.addRawChain([{ addr: 0x8000, len, id: len, flags: VIRTQ_DESC_F_INDIRECT }]);
      expectCode(() => q.popDescriptorChain(mem), "InvalidIndirectLength");
      q.addUsed(mem, len, 0);
    }
    mock.addRawChain([{ addr: 0x3ffe0, len: 64, id: 5, flags: VIRTQ_DESC_F_INDIRECT }]);
    expectCode(() => q.popDescriptorChain(mem), "IndirectTableOutOfBounds");
    mock.addRawChain([{ addr: 0xfff0_0000_0000_0000n, len: 1, id: 6, flags: 0 }]);
    expectCode(() => q.popDescriptorChain(mem), "AddressTooLarge");
  });

  it("WritableBeforeReadable and LengthOverflow", () => {
    const { mem, mock, q } = setup(8);
    mock.addRawChain([
      { addr: 0x8000, len: 1, id: 0, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE },
      { addr: 0x8000, len: 1, id: 0, flags: 0 },
    ]);
    expectCode(() => q.popDescriptorChain(mem), "WritableBeforeReadable");
    mock.addRawChain([
      { addr: 0x8000, len: 0xffff_fff0, id: 1, flags: VIRTQ_DESC_F_NEXT },
      { addr: 0x8000, len: 0x10, id: 1, flags: 0 },
    ]);
    expectCode(() => q.popDescriptorChain(mem), "LengthOverflow");
  });

  it("BufferIdInUse and UnknownBufferId", () => {
    const { mem, mock, q } = setup(8);
    mock.addRawChain([{ addr: 0x8000, len: 1, id: 4, flags: 0 }]);
    mock.addRawChain([{ addr: 0x8000, len: 1, id: 4, flags: 0 }]);
    expect(q.popDescriptorChain(mem)!.head).toBe(4);
    const e = expectCode(() => q.popDescriptorChain(mem), "BufferIdInUse");
    expect(e.head).toBeUndefined();
    expect(e.consumed).toBe(false); // the ring is broken; nothing moved
    expect(q.nextAvail).toBe(1);
    expectCode(() => q.addUsed(mem, 5, 0), "UnknownBufferId");
    q.addUsed(mem, 4, 0);
    expectCode(() => q.addUsed(mem, 4, 0), "UnknownBufferId");
  });

  it("UnknownBufferId for an id that is not a number (a string key from a device's own map), nothing written", () => {
    const { mem, mock, q } = setup(8);
    mock.addRawChain([{ addr: 0x8000, len: 1, id: 5, flags: 0 }]);
    expect(q.popDescriptorChain(mem)!.head).toBe(5);
    const before = mem.slice(mock.descRing, 16).slice();
    for (const bad of ["5", [5], 5.5, -0.5, null] as unknown as number[]) expectCode(() => q.addUsed(mem, bad, 1), "UnknownBufferId");
    expect(mem.slice(mock.descRing, 16)).toEqual(before);
    q.addUsed(mem, 5, 1);
    expect(mock.takeUsed().map((u) => [u.id, u.len])).toEqual([[5, 1]]);
  });

  it("AvailIndexAhead: a list made available over slots still in flight; nothing consumed, state still restorable", () => {
    const { mem, mock, q } = setup(4);
    const ring = mock.descRing;
    for (let i = 0; i < 4; i++) mock.addChain([{ addr: 0x8000, len: 4, writable: true }]);
    expect([...q.iter(mem)]).toHaveLength(4);
    // A hostile driver reuses slot 0 (next lap: AVAIL clear, USED set) before any buffer came back.
    mem.writeU32(ring, 0x8000);
    mem.writeU32(ring + 4, 0);
    mem.writeU32(ring + 8, 4);
    mem.writeU16(ring + 12, 9);
    mem.writeU16(ring + 14, VIRTQ_DESC_F_USED | VIRTQ_DESC_F_WRITE);
    const e = expectCode(() => q.popDescriptorChain(mem), "AvailIndexAhead");
    expect(e.head).toBeUndefined();
    expect(q.nextAvail).toBe(0);
    expectCode(() => q.popDescriptorChain(mem), "AvailIndexAhead");
    // What is in flight still fits the ring, so a snapshot restores.
    const r = Queue.fromState(JSON.parse(JSON.stringify(q.state())) as QueueState);
    expect(r.state().inFlight).toHaveLength(4);
    // Once a buffer is returned (its used descriptor goes to slot 0), the driver may reuse slot 0.
    q.addUsed(mem, 0, 4);
    mem.writeU16(ring + 12, 9);
    mem.writeU16(ring + 14, VIRTQ_DESC_F_USED | VIRTQ_DESC_F_WRITE);
    expect(q.popDescriptorChain(mem)!.head).toBe(9);
  });
});

describe("packed queue notifications", () => {
  it("follows the driver event flags and writes the device event area", () => {
    const { mem, mock, q } = setup(8);
    mock.setDriverEvent(RING_EVENT_FLAGS_ENABLE);
    expect(q.needsNotification(mem)).toBe(true);
    mock.setDriverEvent(RING_EVENT_FLAGS_DISABLE);
    expect(q.needsNotification(mem)).toBe(false);
    mock.setDriverEvent(RING_EVENT_FLAGS_DESC, 3); // DESC without EVENT_IDX: always notify
    expect(q.needsNotification(mem)).toBe(true);
    q.disableNotification(mem);
    expect(mock.deviceEventState().flags).toBe(RING_EVENT_FLAGS_DISABLE);
    expect(q.enableNotification(mem)).toBe(false);
    expect(mock.deviceEventState().flags).toBe(RING_EVENT_FLAGS_ENABLE);
    mock.addChain([{ addr: 0x8000, len: 1 }]);
    expect(q.enableNotification(mem)).toBe(true);
  });

  it("with EVENT_IDX notifies when the event offset/wrap is passed, across a wrap", () => {
    const { mem, mock, q } = setup(4, true);
    const cycle = () => {
      const id = mock.addChain([{ addr: 0x8000, len: 1 }]);
      q.popDescriptorChain(mem);
      q.addUsed(mem, id, 0);
      mock.takeUsed();
    };
    mock.setDriverEvent(RING_EVENT_FLAGS_DESC, 2, true);
    cycle(); // used slot 0
    expect(q.needsNotification(mem)).toBe(false);
    cycle(); // slot 1
    cycle(); // slot 2: the event
    expect(q.needsNotification(mem)).toBe(true);
    mock.setDriverEvent(RING_EVENT_FLAGS_DESC, 1, false); // slot 1 of the next lap
    cycle(); // slot 3
    cycle(); // slot 0, wrap 0
    expect(q.needsNotification(mem)).toBe(false);
    cycle(); // slot 1, wrap 0: the event
    expect(q.needsNotification(mem)).toBe(true);
    // enableNotification publishes the device's next position and wrap.
    expect(q.enableNotification(mem)).toBe(false);
    expect(mock.deviceEventState()).toEqual({ flags: RING_EVENT_FLAGS_DESC, offset: 2, wrap: false });
  });

  it("queue size and layout rules differ for packed: any size up to 32768", () => {
    const q = new Queue(1024);
    expect(q.setSize(100)).toBe(false);
    expect(q.lastError?.code).toBe("InvalidQueueSize");
    q.setRingPacked(true);
    expect(q.setSize(100)).toBe(true);
    expect(q.size).toBe(100);
  });
});
