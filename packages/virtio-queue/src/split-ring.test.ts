import { describe, expect, it } from "vitest";
import { makeMemory } from "../test/memory.js";
import { MockSplitQueue } from "./mock/index.js";
import {
  Queue,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
  VirtqueueError,
  type VirtqueueErrorCode,
} from "./index.js";
import { expectCode, virtqueueError } from "../test/errors.js";

function setup(size = 16, eventIdx = false) {
  const mem = makeMemory(0x40000);
  const mock = new MockSplitQueue(mem, size, { base: 0x1000, eventIdx });
  const q = mock.createQueue();
  expect(q.isValid(mem)).toBe(true);
  return { mem, mock, q };
}

describe("split queue data path", () => {
  it("pops a direct chain with readable then writable buffers and returns it", () => {
    const { mem, mock, q } = setup();
    const head = mock.addChain([
      { addr: 0x8000, len: 16 },
      { addr: 0x8100, len: 32 },
      { addr: 0x9000, len: 512, writable: true },
    ]);
    const c = q.popDescriptorChain(mem);
    expect(c).toBeDefined();
    expect(c!.head).toBe(head);
    expect(c!.indirect).toBe(false);
    expect(c!.readable().map((d) => [d.addr, d.len])).toEqual([
      [0x8000, 16],
      [0x8100, 32],
    ]);
    expect(c!.writable().map((d) => [d.addr, d.len])).toEqual([[0x9000, 512]]);
    expect(c!.readableLength).toBe(48);
    expect(c!.writableLength).toBe(512);
    expect(q.popDescriptorChain(mem)).toBeUndefined();
    q.addUsed(mem, c!.head, 100);
    expect(mock.usedIdx()).toBe(1);
    expect(mock.takeUsed()).toEqual([{ id: head, len: 100 }]);
    expect(q.nextAvail).toBe(1);
    expect(q.nextUsed).toBe(1);
  });

  it("pops an indirect chain and a direct chain followed by an indirect descriptor", () => {
    const { mem, mock, q } = setup();
    mock.addChain(
      [
        { addr: 0x8000, len: 8 },
        { addr: 0x8800, len: 64, writable: true },
      ],
      { indirect: true },
    );
    const c = q.popDescriptorChain(mem)!;
    expect(c.indirect).toBe(true);
    expect(c.descriptors.map((d) => [d.addr, d.len, d.writable])).toEqual([
      [0x8000, 8, false],
      [0x8800, 64, true],
    ]);
    // Spec: zero or more direct descriptors followed by one INDIRECT one must be handled.
    const table = mock.alloc(32);
    mock.writeAt(table, { addr: 0xa000, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    mock.writeAt(table + 16, { addr: 0xb000, len: 8, flags: VIRTQ_DESC_F_WRITE, next: 0 });
    mock.writeDescriptor(5, { addr: 0x7000, len: 2, flags: VIRTQ_DESC_F_NEXT, next: 6 });
    mock.writeDescriptor(6, { addr: table, len: 32, flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, next: 0 });
    mock.publish(5);
    const d = q.popDescriptorChain(mem)!;
    expect(d.head).toBe(5);
    expect(d.descriptors.map((x) => [x.addr, x.writable])).toEqual([
      [0x7000, false],
      [0xa000, false],
      [0xb000, true],
    ]);
  });

  it("iterates over every available chain in order, across the u16 index wrap", () => {
    const { mem, mock, q } = setup(4);
    // Move both sides near the 16-bit wrap: driver via setAvailIdx, device via state restore.
    mock.setAvailIdx(0xfffe);
    const q2 = Queue.fromState({ ...q.state(), nextAvail: 0xfffe, nextUsed: 0xfffe });
    mem.writeU16(mock.usedRing + 2, 0xfffe);
    const heads = [0, 1, 2].map((i) => mock.addChain([{ addr: 0x8000 + i * 0x100, len: 10 + i }]));
    expect([...q2.iter(mem)].map((c) => c.head)).toEqual(heads);
    expect(q2.nextAvail).toBe(1);
    for (const h of heads) q2.addUsed(mem, h, 1);
    expect(q2.nextUsed).toBe(1);
    expect(mem.readU16(mock.usedRing + 2)).toBe(1);
  });

  it("writes the used element before publishing the index (release)", () => {
    const { mem, mock, q } = setup();
    const h = mock.addChain([{ addr: 0x8000, len: 4, writable: true }]);
    q.popDescriptorChain(mem);
    q.addUsed(mem, h, 4);
    expect(mem.readU32(mock.usedRing + 4)).toBe(h);
    expect(mem.readU32(mock.usedRing + 8)).toBe(4);
    expect(mem.loadU16Acquire(mock.usedRing + 2)).toBe(1);
  });

  it("rejects a head outside the table on addUsed, and a used length that is not a u32", () => {
    const { mem, q } = setup();
    expectCode(() => q.addUsed(mem, 16, 0), "InvalidDescriptorIndex");
    expectCode(() => q.addUsed(mem, 0, -1), "InvalidArgument");
    expectCode(() => q.addUsed(mem, 0, 2 ** 32), "InvalidArgument");
    q.setReady(false);
    expectCode(() => q.addUsed(mem, 0, 0), "NotReady");
    expect(q.popDescriptorChain(mem)).toBeUndefined();
  });
});

describe("split queue validation of guest-written chains", () => {
  it("AvailIndexAhead: more than size new entries; nothing consumed, reported again", () => {
    const { mem, mock, q } = setup(8);
    mock.setAvailIdx(9);
    const e = expectCode(() => q.popDescriptorChain(mem), "AvailIndexAhead");
    expect(e.head).toBeUndefined();
    expect(q.nextAvail).toBe(0);
    expectCode(() => q.popDescriptorChain(mem), "AvailIndexAhead");
    // Exactly size entries ahead is fine.
    mock.setAvailIdx(8);
    for (let i = 0; i < 8; i++) mock.writeDescriptor(i, { addr: 0x8000, len: 1, flags: 0, next: 0 });
    expect([...q.iter(mem)]).toHaveLength(8);
  });

  it("InvalidDescriptorIndex: a head outside the table is consumed with no head to return", () => {
    const { mem, mock, q } = setup(8);
    mock.publish(8);
    const e = expectCode(() => q.popDescriptorChain(mem), "InvalidDescriptorIndex");
    expect(e.head).toBeUndefined();
    expect(q.nextAvail).toBe(1);
  });

  it("InvalidDescriptorIndex: a next outside the table (direct and indirect)", () => {
    const { mem, mock, q } = setup(8);
    mock.writeDescriptor(0, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 8 });
    mock.publish(0);
    expect(expectCode(() => q.popDescriptorChain(mem), "InvalidDescriptorIndex").head).toBe(0);
    const table = mock.alloc(32);
    mock.writeAt(table, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 2 });
    mock.writeDescriptor(1, { addr: table, len: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    mock.publish(1);
    expect(expectCode(() => q.popDescriptorChain(mem), "InvalidDescriptorIndex").head).toBe(1);
  });

  it("ChainTooLong: a loop in the table and a loop in an indirect table", () => {
    const { mem, mock, q } = setup(8);
    mock.writeDescriptor(0, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    mock.writeDescriptor(1, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 0 });
    mock.publish(0);
    const e = expectCode(() => q.popDescriptorChain(mem), "ChainTooLong");
    expect(e.head).toBe(0);
    q.addUsed(mem, e.head!, 0); // the device can hand it back
    const table = mock.alloc(32);
    mock.writeAt(table, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    mock.writeAt(table + 16, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    mock.writeDescriptor(2, { addr: table, len: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    mock.publish(2);
    expectCode(() => q.popDescriptorChain(mem), "ChainTooLong");
  });

  it("a chain of exactly size descriptors is accepted", () => {
    const { mem, mock, q } = setup(4);
    for (let i = 0; i < 4; i++) {
      mock.writeDescriptor(i, { addr: 0x8000, len: 1, flags: i < 3 ? VIRTQ_DESC_F_NEXT : 0, next: i + 1 });
    }
    mock.publish(0);
    expect(q.popDescriptorChain(mem)!.descriptors).toHaveLength(4);
  });

  it("NestedIndirect, IndirectWithNext, InvalidIndirectLength, IndirectTableOutOfBounds", () => {
    const { mem, mock, q } = setup(8);
    const table = mock.alloc(16);
    mock.writeAt(table, { addr: table, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    mock.writeDescriptor(0, { addr: table, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    mock.publish(0);
    expectCode(() => q.popDescriptorChain(mem), "NestedIndirect");

    mock.writeDescriptor(1, { addr: table, len: 16, flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, next: 2 });
    mock.publish(1);
    expectCode(() => q.popDescriptorChain(mem), "IndirectWithNext");

    for (const len of [0, 17, 8, 16 * 32769]) {
      mock.writeDescriptor(2, { addr: table, len, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      mock.publish(2);
      expect(expectCode(() => q.popDescriptorChain(mem), "InvalidIndirectLength").head).toBe(2);
    }

    mock.writeDescriptor(3, { addr: 0x40000 - 16, len: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    mock.publish(3);
    expectCode(() => q.popDescriptorChain(mem), "IndirectTableOutOfBounds");
    mock.writeDescriptor(3, { addr: 2n ** 60n, len: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    mock.publish(3);
    expectCode(() => q.popDescriptorChain(mem), "AddressTooLarge");
  });

  it("LengthOverflow: lengths adding up past 2^32 - 1; exactly 2^32 - 1 is accepted", () => {
    const { mem, mock, q } = setup(8);
    mock.writeDescriptor(0, { addr: 0x8000, len: 0xffff_ffff, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    mock.writeDescriptor(1, { addr: 0x8000, len: 1, flags: 0, next: 0 });
    mock.publish(0);
    expectCode(() => q.popDescriptorChain(mem), "LengthOverflow");
    mock.writeDescriptor(1, { addr: 0x8000, len: 0, flags: 0, next: 0 });
    mock.publish(0);
    expect(q.popDescriptorChain(mem)!.readableLength).toBe(0xffff_ffff);
  });

  it("WritableBeforeReadable: a readable descriptor after a writable one", () => {
    const { mem, mock, q } = setup(8);
    mock.writeDescriptor(0, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, next: 1 });
    mock.writeDescriptor(1, { addr: 0x8000, len: 1, flags: 0, next: 0 });
    mock.publish(0);
    expectCode(() => q.popDescriptorChain(mem), "WritableBeforeReadable");
  });

  it("AddressTooLarge: a buffer address at or above 2^52 (never rounded into range)", () => {
    const { mem, mock, q } = setup(8);
    mock.writeDescriptor(0, { addr: 2n ** 52n, len: 1, flags: 0, next: 0 });
    mock.publish(0);
    expectCode(() => q.popDescriptorChain(mem), "AddressTooLarge");
    mock.writeDescriptor(0, { addr: 2n ** 52n - 1n, len: 1, flags: 0, next: 0 });
    mock.publish(0);
    expect(q.popDescriptorChain(mem)!.descriptors[0]!.addr).toBe(2 ** 52 - 1);
  });

  it("buffer addresses are checked when accessed, not when popped", () => {
    const { mem, mock, q } = setup(8);
    mock.addChain([{ addr: 0x3f_0000, len: 64 }]);
    const c = q.popDescriptorChain(mem)!;
    expect(c.descriptors[0]!.addr).toBe(0x3f_0000);
    expectCode(() => c.readAll(mem), "BufferOutOfBounds");
  });

  it("RingOutOfBounds: rings outside guest memory make isValid false and pop throw typed errors", () => {
    const mem = makeMemory(0x2000);
    const q = new Queue(16);
    q.setDescTableAddress(0x1f10, 0);
    q.setAvailRingAddress(0x100, 0);
    q.setUsedRingAddress(0x200, 0);
    q.setReady(true);
    expect(q.isValid(mem)).toBe(false);
    expectCode(() => q.validate(mem), "RingOutOfBounds");
    q.setReady(false);
    q.setAvailRingAddress(0x2000, 0);
    q.setDescTableAddress(0, 0);
    q.setReady(true);
    expectCode(() => q.validate(mem), "RingOutOfBounds");
    expectCode(() => q.popDescriptorChain(mem), "RingOutOfBounds");
  });
});

describe("split queue notifications", () => {
  it("without EVENT_IDX follows avail flags and sets used flags", () => {
    const { mem, mock, q } = setup();
    expect(q.needsNotification(mem)).toBe(true);
    mock.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    expect(q.needsNotification(mem)).toBe(false);
    q.disableNotification(mem);
    expect(mock.usedFlags()).toBe(VIRTQ_USED_F_NO_NOTIFY);
    expect(q.enableNotification(mem)).toBe(false);
    expect(mock.usedFlags()).toBe(0);
    mock.addChain([{ addr: 0x8000, len: 1 }]);
    expect(q.enableNotification(mem)).toBe(true);
  });

  it("with EVENT_IDX notifies exactly when used_event is crossed", () => {
    const { mem, mock, q } = setup(16, true);
    const heads = Array.from({ length: 6 }, () => mock.addChain([{ addr: 0x8000, len: 1, writable: true }]));
    for (const c of q.iter(mem)) void c;
    mock.setUsedEvent(2); // notify when the used entry with index 2 is written
    q.addUsed(mem, heads[0]!, 1);
    q.addUsed(mem, heads[1]!, 1);
    expect(q.needsNotification(mem)).toBe(false); // used idx 0..1 written
    q.addUsed(mem, heads[2]!, 1);
    expect(q.needsNotification(mem)).toBe(true); // index 2 written
    q.addUsed(mem, heads[3]!, 1);
    expect(q.needsNotification(mem)).toBe(false); // already past
    mock.setUsedEvent(3);
    q.addUsed(mem, heads[4]!, 1);
    q.addUsed(mem, heads[5]!, 1);
    expect(q.needsNotification(mem)).toBe(false); // 3 was written before the last check
    // Flags are ignored with EVENT_IDX.
    mock.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    mock.setUsedEvent(6);
    const h = mock.addChain([{ addr: 0x8000, len: 1 }]);
    q.popDescriptorChain(mem);
    q.addUsed(mem, h, 0);
    expect(q.needsNotification(mem)).toBe(true);
  });

  it("with EVENT_IDX enableNotification publishes avail_event", () => {
    const { mem, mock, q } = setup(16, true);
    mock.addChain([{ addr: 0x8000, len: 1 }]);
    mock.addChain([{ addr: 0x8000, len: 1 }]);
    q.popDescriptorChain(mem);
    expect(q.enableNotification(mem)).toBe(true);
    expect(mock.availEvent()).toBe(1);
    q.popDescriptorChain(mem);
    expect(q.enableNotification(mem)).toBe(false);
    expect(mock.availEvent()).toBe(2);
    q.disableNotification(mem); // no-op with EVENT_IDX
    expect(mock.usedFlags()).toBe(0);
  });
});
