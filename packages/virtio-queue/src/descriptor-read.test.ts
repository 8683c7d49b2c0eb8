import { GuestMemoryArrayBuffer, GuestMemoryError, type GuestMemory } from "@ts-vmm/vm-memory";
import { describe, expect, it } from "vitest";
import { MockPackedQueue, MockSplitQueue } from "./mock/index.js";
import { Queue, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VirtqueueError, type VirtqueueErrorCode } from "./index.js";
import { expectCode } from "../test/errors.js";

// Issue 13: a descriptor is read with one checked GuestMemory.readU32s (one region lookup,
// one range check) instead of one scalar read per field. These tests pin down that the
// walks use it, and that hostile table addresses at region edges give the errors they did.

/** `mem` with a count of the calls to each read method (other methods pass through). */
function counting(mem: GuestMemory): { mem: GuestMemory; calls: Map<string, number> } {
  const calls = new Map<string, number>();
  const proxy = new Proxy(mem, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver) as unknown;
      if (typeof v !== "function" || typeof key !== "string" || !key.startsWith("read")) return v;
      return (...args: unknown[]) => {
        calls.set(key, (calls.get(key) ?? 0) + 1);
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { mem: proxy, calls };
}

describe("one checked read per descriptor", () => {
  it("split: a direct chain of three and an indirect chain of four read each descriptor once", () => {
    const base = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x40000 }], { shared: false });
    const mock = new MockSplitQueue(base, 16, { base: 0x1000 });
    const q = mock.createQueue();
    mock.addChain([{ addr: 0x8000, len: 16 }, { addr: 0x8100, len: 32 }, { addr: 0x9000, len: 512, writable: true }]);
    mock.addChain(
      [{ addr: 0x8000, len: 1 }, { addr: 0x8100, len: 2 }, { addr: 0x9000, len: 3, writable: true }, { addr: 0xa000, len: 4, writable: true }],
      { indirect: true },
    );
    const { mem, calls } = counting(base);
    const a = q.popDescriptorChain(mem)!;
    expect(a.descriptors.map((d) => [d.addr, d.len, d.writable])).toEqual([[0x8000, 16, false], [0x8100, 32, false], [0x9000, 512, true]]);
    expect(calls.get("readU32s")).toBe(3);
    const b = q.popDescriptorChain(mem)!;
    expect(b.indirect).toBe(true);
    expect(b.descriptors.map((d) => [d.addr, d.len, d.writable])).toEqual([[0x8000, 1, false], [0x8100, 2, false], [0x9000, 3, true], [0xa000, 4, true]]);
    expect(calls.get("readU32s")).toBe(3 + 1 + 4); // the ring's indirect descriptor, then its four entries
    // No descriptor field was read on its own (only the avail ring's entries, with readU16).
    expect(calls.get("readU32")).toBeUndefined();
    expect(calls.get("readU16")).toBe(2);
  });

  it("packed: a list of two and an indirect table of three read each descriptor once after the flags", () => {
    const base = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x40000 }], { shared: false });
    const mock = new MockPackedQueue(base, 8, { base: 0x1000 });
    const q = mock.createQueue();
    mock.addChain([{ addr: 0x8000, len: 16 }, { addr: 0x9000, len: 64, writable: true }]);
    mock.addChain([{ addr: 0x8000, len: 1 }, { addr: 0x9000, len: 2, writable: true }, { addr: 0xa000, len: 3, writable: true }], { indirect: true });
    const { mem, calls } = counting(base);
    const a = q.popDescriptorChain(mem)!;
    expect(a.descriptors.map((d) => [d.addr, d.len, d.writable])).toEqual([[0x8000, 16, false], [0x9000, 64, true]]);
    expect(calls.get("readU32s")).toBe(2);
    const b = q.popDescriptorChain(mem)!;
    expect(b.descriptors.map((d) => [d.addr, d.len, d.writable])).toEqual([[0x8000, 1, false], [0x9000, 2, true], [0xa000, 3, true]]);
    expect(calls.get("readU32s")).toBe(2 + 1 + 3);
    expect(calls.get("readU32")).toBeUndefined();
  });
});

describe("descriptor tables at region edges", () => {
  /** [0, 0x1008) and [0x1008, 0x20000) contiguous: descriptor 0 of a table at 0x1000 straddles the boundary. */
  function splitMemory(): GuestMemoryArrayBuffer {
    return GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x1008 }, { start: 0x1008, size: 0x1f000 - 8 }], { shared: false });
  }

  it("split: descriptors and an indirect table that span two contiguous regions pop as in one region", () => {
    const mem = splitMemory();
    const mock = new MockSplitQueue(mem, 16, { base: 0x1000 });
    const q = mock.createQueue();
    expect(q.isValid(mem)).toBe(true);
    mock.addChain([{ addr: 0x8000, len: 16 }, { addr: 0x9000, len: 64, writable: true }]); // descriptors 15, 14
    const c1 = q.popDescriptorChain(mem)!;
    expect(c1.descriptors.map((d) => [d.addr, d.len])).toEqual([[0x8000, 16], [0x9000, 64]]);
    // Descriptor 0 itself straddles 0x1008.
    mock.writeDescriptor(0, { addr: 0x1234_5678_9abc, len: 0x1000, flags: VIRTQ_DESC_F_WRITE, next: 0 });
    mock.publish(0);
    const c2 = q.popDescriptorChain(mem)!;
    expect(c2.descriptors).toEqual([{ addr: 0x1234_5678_9abc, len: 0x1000, writable: true }]);
    // An indirect table whose second entry straddles a boundary of its own memory.
    const mem2 = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x10018 }, { start: 0x10018, size: 0x10000 }], { shared: false });
    const mock2 = new MockSplitQueue(mem2, 16, { base: 0x1000, scratch: [0x10000, 0x11000] });
    const q2 = mock2.createQueue();
    mock2.addChain([{ addr: 0x8000, len: 1 }, { addr: 0x9000, len: 2, writable: true }, { addr: 0xa000, len: 3, writable: true }], { indirect: true });
    const c3 = q2.popDescriptorChain(mem2)!;
    expect(c3.indirect).toBe(true);
    expect(c3.descriptors.map((d) => [d.addr, d.len, d.writable])).toEqual([[0x8000, 1, false], [0x9000, 2, true], [0xa000, 3, true]]);
  });

  it("split: a descriptor that runs off the end of memory or into a hole is RingOutOfBounds, consumed, with its head", () => {
    // Memory ends at 0x1f88: descriptor 7 of a table at 0x1f10 has 8 of its 16 bytes, 8..15 none.
    const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x1f88 }, { start: 0x3000, size: 0x1000 }], { shared: false });
    const q = new Queue(16);
    q.setDescTableAddress(0x1f10, 0);
    q.setAvailRingAddress(0x100, 0);
    q.setUsedRingAddress(0x200, 0);
    q.setReady(true);
    expect(q.isValid(mem)).toBe(false); // a device would refuse this queue; the data path must still be safe
    const avail = (idx: number, heads: number[]): void => {
      heads.forEach((h, i) => mem.writeU16(0x100 + 4 + 2 * i, h));
      mem.writeU16(0x102, idx);
    };
    avail(3, [7, 9, 6]);
    const e1 = expectCode(() => q.popDescriptorChain(mem), "RingOutOfBounds");
    expect([e1.head, e1.consumed, e1.addr]).toEqual([7, true, 0x1f10 + 7 * 16]);
    expect((e1.cause as GuestMemoryError).code).toBe("OutOfBounds");
    const e2 = expectCode(() => q.popDescriptorChain(mem), "RingOutOfBounds");
    expect([e2.head, e2.consumed, e2.addr]).toEqual([9, true, 0x1f10 + 9 * 16]);
    expect((e2.cause as GuestMemoryError).code).toBe("Hole");
    // Descriptor 6 is whole, but its next (7) is not.
    mem.writeU32(0x1f10 + 6 * 16 + 8, 4);
    mem.writeU16(0x1f10 + 6 * 16 + 12, VIRTQ_DESC_F_NEXT);
    mem.writeU16(0x1f10 + 6 * 16 + 14, 7);
    const e3 = expectCode(() => q.popDescriptorChain(mem), "RingOutOfBounds");
    expect([e3.head, e3.consumed, e3.addr]).toEqual([6, true, 0x1f10 + 7 * 16]);
    // Nothing moved the queue past its avail index; it keeps working.
    expect(q.nextAvail).toBe(3);
  });

  it("split: an indirect table that straddles a hole or lies outside memory is IndirectTableOutOfBounds", () => {
    const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x8008 }, { start: 0x9000, size: 0x1000 }], { shared: false });
    const mock = new MockSplitQueue(mem, 16, { base: 0x1000 });
    const q = mock.createQueue();
    for (const [taddr, len] of [[0x7ff8, 32], [0x8000, 16], [0x8ff0, 32], [0x8fff0, 16], [0x9ff0, 32]] as [number, number][]) {
      mock.writeDescriptor(1, { addr: taddr, len, flags: 4 /* INDIRECT */, next: 0 });
      mock.publish(1);
      const e = expectCode(() => q.popDescriptorChain(mem), "IndirectTableOutOfBounds");
      expect([e.head, e.consumed, e.addr]).toEqual([1, true, taddr]);
    }
  });

  it("packed: a descriptor ring across contiguous regions works; one running past memory is RingOutOfBounds", () => {
    const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x1008 }, { start: 0x1008, size: 0x1f000 - 8 }], { shared: false });
    const mock = new MockPackedQueue(mem, 8, { base: 0x1000 });
    const q = mock.createQueue();
    expect(q.isValid(mem)).toBe(true);
    mock.addChain([{ addr: 0x8000, len: 16 }, { addr: 0x9000, len: 64, writable: true }]);
    const c = q.popDescriptorChain(mem)!;
    expect(c.descriptors.map((d) => [d.addr, d.len, d.writable])).toEqual([[0x8000, 16, false], [0x9000, 64, true]]);

    // A packed indirect table across a hole.
    const mem2 = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x8008 }, { start: 0x9000, size: 0x1000 }], { shared: false });
    const mock2 = new MockPackedQueue(mem2, 8, { base: 0x1000 });
    const q2 = mock2.createQueue();
    mock2.addRawChain([{ addr: 0x7ff0, len: 32, id: 3, flags: 4 /* INDIRECT */ }]);
    const e = expectCode(() => q2.popDescriptorChain(mem2), "IndirectTableOutOfBounds");
    expect([e.head, e.consumed]).toEqual([3, true]);
  });
});
