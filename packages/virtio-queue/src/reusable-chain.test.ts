import { describe, expect, it } from "vitest";
import type { GuestMemory } from "@ts-vmm/vm-memory";
import { fuzzQueue } from "../test/fuzz-engine.js";
import { makeMemory } from "../test/memory.js";
import { MockPackedQueue, MockSplitQueue } from "./mock/index.js";
import {
  DescriptorChain,
  Queue,
  ReusableChain,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VirtqueueError,
  type VirtqueueErrorCode,
} from "./index.js";

type Outcome = { kind: "none" } | { kind: "chain"; chain: DescriptorChain } | { kind: "error"; error: VirtqueueError };

function attempt<T>(fn: () => T): T | VirtqueueError {
  try {
    return fn();
  } catch (e) {
    if (e instanceof VirtqueueError) return e;
    throw e;
  }
}

/** The same chain, field by field, through the typed-array accessors. */
function expectSameChain(r: ReusableChain, c: DescriptorChain): void {
  expect([r.head, r.indirect, r.readableCount, r.readableLength, r.writableLength, r.length]).toEqual([
    c.head,
    c.indirect,
    c.readableCount,
    c.readableLength,
    c.writableLength,
    c.descriptors.length,
  ]);
  for (let i = 0; i < r.length; i++) {
    const d = c.descriptors[i]!;
    expect([r.addrAt(i), r.lenAt(i), r.writableAt(i)]).toEqual([d.addr, d.len, d.writable]);
  }
  expect(r.toDescriptorChain()).toEqual(c);
}

/**
 * Two queues in the same state over the same memory: `a` pops with popDescriptorChain, `b`
 * with popDescriptorChainInto; each pop must give the same chain or the same error and leave
 * the same state.
 */
class Twin {
  readonly b: Queue;
  readonly rc = new ReusableChain();
  constructor(
    readonly mem: GuestMemory,
    readonly a: Queue,
  ) {
    this.b = Queue.fromState(a.state());
  }

  pop(): Outcome {
    const x = attempt(() => this.a.popDescriptorChain(this.mem));
    const y = attempt(() => this.b.popDescriptorChainInto(this.mem, this.rc));
    expect(JSON.stringify(this.b.state())).toBe(JSON.stringify(this.a.state()));
    if (x instanceof VirtqueueError) {
      expect(y).toBeInstanceOf(VirtqueueError);
      const e = y as VirtqueueError;
      expect([e.code, e.message, e.head, e.consumed]).toEqual([x.code, x.message, x.head, x.consumed]);
      expect(this.rc.length).toBe(0);
      return { kind: "error", error: x };
    }
    expect(y).toBe(x !== undefined);
    if (x === undefined) return { kind: "none" };
    expectSameChain(this.rc, x);
    return { kind: "chain", chain: x };
  }

  /** Pops on both; expects the error `code` on both and returns the error. */
  expectError(code: VirtqueueErrorCode): VirtqueueError {
    const o = this.pop();
    expect(o.kind === "error" ? o.error.code : o.kind).toBe(code);
    return (o as { error: VirtqueueError }).error;
  }

  /** Returns `head` on both; the same outcome (a hostile ring may be outside memory). */
  addUsed(head: number, len: number): void {
    const x = attempt(() => this.a.addUsed(this.mem, head, len));
    const y = attempt(() => this.b.addUsed(this.mem, head, len));
    expect(y instanceof VirtqueueError ? y.message : y).toEqual(x instanceof VirtqueueError ? x.message : x);
    expect(JSON.stringify(this.b.state())).toBe(JSON.stringify(this.a.state()));
  }
}

function split(size = 8) {
  const mem = makeMemory(0x40000);
  const mock = new MockSplitQueue(mem, size, { base: 0x1000 });
  return { mem, mock, t: new Twin(mem, mock.createQueue()) };
}

function packed(size = 8) {
  const mem = makeMemory(0x40000);
  const mock = new MockPackedQueue(mem, size, { base: 0x1000 });
  return { mem, mock, t: new Twin(mem, mock.createQueue()) };
}

describe("popDescriptorChainInto: the same chains and errors as popDescriptorChain", () => {
  it("split: direct, indirect, empty; the chain object is reused and grows", () => {
    const { mock, t } = split(16);
    expect(t.pop().kind).toBe("none");
    mock.addChain([
      { addr: 0x8000, len: 16 },
      { addr: 0x8100, len: 32 },
      { addr: 0x9000, len: 512, writable: true },
    ]);
    expect(t.pop().kind).toBe("chain");
    const many = Array.from({ length: 12 }, (_, i) => ({ addr: 0x8000 + 0x100 * i, len: i + 1, writable: i >= 5 }));
    mock.addChain(many, { indirect: true });
    const o = t.pop();
    expect(o.kind === "chain" && o.chain.indirect && o.chain.descriptors.length).toBe(12);
    mock.addChain([{ addr: 0xa000, len: 7, writable: true }]);
    expect(t.pop().kind).toBe("chain");
    expect(t.rc.length).toBe(1);
    expect(t.pop().kind).toBe("none");
  });

  it("split: every validation error, with the same head, message and consumed flag", () => {
    const { mem, mock, t } = split(8);
    // next outside the table
    mock.writeDescriptor(0, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 8 });
    mock.publish(0);
    expect(t.expectError("InvalidDescriptorIndex").head).toBe(0);
    // a loop
    mock.writeDescriptor(0, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    mock.writeDescriptor(1, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 0 });
    mock.publish(0);
    t.expectError("ChainTooLong");
    // nested indirect, indirect with next, bad indirect lengths, table outside memory, address too large
    const table = mock.alloc(32);
    mock.writeAt(table, { addr: table, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    mock.writeDescriptor(2, { addr: table, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    mock.publish(2);
    t.expectError("NestedIndirect");
    mock.writeDescriptor(2, { addr: table, len: 16, flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, next: 3 });
    mock.publish(2);
    t.expectError("IndirectWithNext");
    for (const len of [0, 17, 8, 16 * 32769]) {
      mock.writeDescriptor(2, { addr: table, len, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      mock.publish(2);
      t.expectError("InvalidIndirectLength");
    }
    mock.writeDescriptor(3, { addr: 0x40000 - 16, len: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    mock.publish(3);
    t.expectError("IndirectTableOutOfBounds");
    mock.writeDescriptor(3, { addr: 2n ** 60n, len: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    mock.publish(3);
    t.expectError("AddressTooLarge");
    mock.writeDescriptor(3, { addr: 2n ** 52n, len: 1, flags: 0, next: 0 });
    mock.publish(3);
    t.expectError("AddressTooLarge");
    // a loop inside an indirect table, and next outside it
    mock.writeAt(table, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    mock.writeAt(table + 16, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 0 });
    mock.writeDescriptor(4, { addr: table, len: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    mock.publish(4);
    t.expectError("ChainTooLong");
    mock.writeAt(table + 16, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 2 });
    mock.publish(4);
    t.expectError("InvalidDescriptorIndex");
    // lengths past 2^32 - 1, then exactly 2^32 - 1
    mock.writeDescriptor(5, { addr: 0x8000, len: 0xffff_ffff, flags: VIRTQ_DESC_F_NEXT, next: 6 });
    mock.writeDescriptor(6, { addr: 0x8000, len: 1, flags: 0, next: 0 });
    mock.publish(5);
    t.expectError("LengthOverflow");
    mock.writeDescriptor(6, { addr: 0x8000, len: 0, flags: 0, next: 0 });
    mock.publish(5);
    expect(t.pop().kind).toBe("chain");
    // readable after writable
    mock.writeDescriptor(5, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, next: 6 });
    mock.publish(5);
    t.expectError("WritableBeforeReadable");
    // the device's chain limit, direct and before an indirect table is read
    t.a.setMaxChainLength(2);
    t.b.setMaxChainLength(2);
    mock.writeDescriptor(0, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    mock.writeDescriptor(1, { addr: 0x8000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 2 });
    mock.writeDescriptor(2, { addr: 0x8000, len: 1, flags: 0, next: 0 });
    mock.publish(0);
    t.expectError("ChainTooLong");
    mock.writeDescriptor(4, { addr: table, len: 48, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    mock.publish(4);
    t.expectError("ChainTooLong");
    // a head outside the table (consumed, no head); the avail index too far ahead (nothing consumed)
    mock.publish(9);
    expect(t.expectError("InvalidDescriptorIndex").head).toBeUndefined();
    mock.setAvailIdx((t.a.nextAvail + 9) & 0xffff);
    expect(t.expectError("AvailIndexAhead").consumed).toBe(false);
    // indirect descriptors refused
    const { mock: m2, t: t2 } = split(8);
    for (const q of [t2.a, t2.b]) {
      q.setReady(false);
      expect(q.setIndirectDesc(false)).toBe(true);
      q.setReady(true);
    }
    m2.addChain([{ addr: 0x8000, len: 4 }], { indirect: true });
    t2.expectError("IndirectNotNegotiated");
    void mem;
  });

  it("packed: lists, indirect tables, and every validation error", () => {
    const { mem, mock, t } = packed(32);
    mock.addChain([
      { addr: 0x8000, len: 16 },
      { addr: 0x9000, len: 64, writable: true },
    ]);
    expect(t.pop().kind).toBe("chain");
    mock.addChain(
      Array.from({ length: 7 }, (_, i) => ({ addr: 0x8000 + i * 0x40, len: i, writable: i > 3 })),
      { indirect: true },
    );
    expect(t.pop().kind).toBe("chain");
    t.addUsed(t.rc.head, 0);
    const table = mock.alloc(16);
    mock.addRawChain([
      { addr: 0x8000, len: 1, id: 0, flags: VIRTQ_DESC_F_NEXT },
      { addr: table, len: 16, id: 1, flags: VIRTQ_DESC_F_INDIRECT },
    ]);
    t.expectError("IndirectWithNext");
    t.addUsed(1, 0);
    mock.addRawChain([{ addr: 0x8000, len: 24, id: 2, flags: VIRTQ_DESC_F_INDIRECT }]);
    t.expectError("InvalidIndirectLength");
    t.addUsed(2, 0);
    mock.addRawChain([{ addr: 0x3ffe0, len: 64, id: 3, flags: VIRTQ_DESC_F_INDIRECT }]);
    t.expectError("IndirectTableOutOfBounds");
    t.addUsed(3, 0);
    mock.addRawChain([{ addr: 0xfff0_0000_0000_0000n, len: 1, id: 4, flags: 0 }]);
    t.expectError("AddressTooLarge");
    t.addUsed(4, 0);
    mock.addRawChain([
      { addr: 0x8000, len: 1, id: 5, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE },
      { addr: 0x8000, len: 1, id: 5, flags: 0 },
    ]);
    t.expectError("WritableBeforeReadable");
    t.addUsed(5, 0);
    mock.addRawChain([
      { addr: 0x8000, len: 0xffff_fff0, id: 6, flags: VIRTQ_DESC_F_NEXT },
      { addr: 0x8000, len: 0x10, id: 6, flags: 0 },
    ]);
    t.expectError("LengthOverflow");
    t.addUsed(6, 0);
    mock.addRawChain([{ addr: 0x8000, len: 1, id: 7, flags: 0 }]);
    mock.addRawChain([{ addr: 0x8000, len: 1, id: 7, flags: 0 }]);
    expect(t.pop().kind).toBe("chain");
    expect(t.expectError("BufferIdInUse").consumed).toBe(false);
    t.addUsed(7, 0);
    expect(t.pop().kind).toBe("chain");
    t.addUsed(7, 0);
    const { mock: m2, t: t2 } = packed(4);
    m2.addRawChain(Array.from({ length: 4 }, () => ({ addr: 0x8000, len: 1, id: 0, flags: VIRTQ_DESC_F_NEXT })));
    expect(t2.expectError("ChainTooLong").head).toBeUndefined();
    const { mock: m3, t: t3 } = packed(8);
    t3.a.setMaxChainLength(2);
    t3.b.setMaxChainLength(2);
    m3.addChain([1, 2, 3].map((i) => ({ addr: 0x8000, len: i })));
    t3.expectError("ChainTooLong");
    m3.addChain([1, 2, 3].map((i) => ({ addr: 0x8000, len: i })), { indirect: true });
    t3.expectError("ChainTooLong");
    void mem;
  });

  it("property: random and mutated rings (the fuzzer's tables) give the same pops, errors and states", () => {
    const codes = new Set<string>();
    let chains = 0;
    let undos = 0;
    for (let seed = 1; seed <= 1500; seed++) {
      const { mem, q, pick } = fuzzQueue(seed);
      const t = new Twin(mem, q);
      for (let n = 0; n < 2 * q.size + 2; n++) {
        const o = t.pop();
        if (o.kind === "none") break;
        if (o.kind === "error") {
          codes.add(o.error.code);
          if (o.error.head === undefined) break;
          if (pick(2) === 0) t.addUsed(o.error.head, 0);
          continue;
        }
        chains++;
        const c = o.chain;
        // The reading and writing helpers agree too (same bytes, same errors).
        const ra = attempt(() => c.readAll(mem, 1 << 16));
        const rb = attempt(() => t.rc.readAll(mem, 1 << 16));
        expect(rb instanceof VirtqueueError ? rb.message : rb).toEqual(ra instanceof VirtqueueError ? ra.message : ra);
        const off = pick(8);
        const dst = [new Uint8Array(pick(64)), new Uint8Array(0)];
        dst[1] = new Uint8Array(dst[0]!.length);
        const ia = attempt(() => c.readInto(mem, dst[0]!, off));
        const ib = attempt(() => t.rc.readInto(mem, dst[1]!, off));
        expect(ib instanceof VirtqueueError ? ib.message : ib).toEqual(ia instanceof VirtqueueError ? ia.message : ia);
        expect(dst[1]).toEqual(dst[0]);
        const src = Uint8Array.from({ length: pick(64) }, () => pick(256));
        const woff = pick(8);
        // Each write from the same memory contents: the same bytes written everywhere.
        const before = snapshot(mem);
        const wa = attempt(() => c.writeFrom(mem, src, woff));
        const afterA = snapshot(mem);
        restore(mem, before);
        const wb = attempt(() => t.rc.writeFrom(mem, src, woff));
        expect(wb instanceof VirtqueueError ? wb.message : wb).toEqual(wa instanceof VirtqueueError ? wa.message : wa);
        expect(snapshot(mem)).toEqual(afterA);
        // Given back on both, or returned.
        if (pick(3) === 0) {
          t.a.undoPop(c);
          t.b.undoPop(t.rc);
          expect(JSON.stringify(t.b.state())).toBe(JSON.stringify(t.a.state()));
          undos++;
          // The next turn pops the same ring entry again (re-read: the writes above may have changed it).
        } else {
          t.addUsed(c.head, pick(64));
        }
      }
    }
    expect(chains).toBeGreaterThan(500);
    expect(undos).toBeGreaterThan(100);
    for (const code of ["AvailIndexAhead", "ChainTooLong", "InvalidDescriptorIndex", "IndirectWithNext", "RingOutOfBounds"]) {
      expect(codes).toContain(code);
    }
  });
});

describe("undoPop with a reusable chain", () => {
  it("split: gives back the newest pop; the chains come again in order; an older object is refused", () => {
    const { mem, mock } = split(8);
    const q = new Twin(mem, mock.createQueue()).a;
    const h0 = mock.addChain([{ addr: 0x8000, len: 10, writable: true }]);
    const h1 = mock.addChain([{ addr: 0x9000, len: 20, writable: true }]);
    const r0 = new ReusableChain();
    const r1 = new ReusableChain();
    expect(q.popDescriptorChainInto(mem, r0)).toBe(true);
    expect(q.popDescriptorChainInto(mem, r1)).toBe(true);
    expect([r0.head, r1.head]).toEqual([h0, h1]);
    expect(() => q.undoPop(r0)).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    q.undoPop(r1);
    q.undoPop(r0);
    expect(() => q.undoPop(r0)).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    // Reused at once: the same buffers come again, into whichever object.
    expect(q.popDescriptorChainInto(mem, r1)).toBe(true);
    expect([r1.head, r1.addrAt(0), r1.lenAt(0), r1.writableAt(0)]).toEqual([h0, 0x8000, 10, true]);
    q.addUsed(mem, r1.head, 3);
    expect(q.popDescriptorChainInto(mem, r1)).toBe(true);
    expect(r1.head).toBe(h1);
    expect(mock.takeUsed()).toEqual([{ id: h0, len: 3 }]);
    q.undoPop(r1);
    expect(q.popDescriptorChainInto(mem, r0)).toBe(true);
    expect(r0.head).toBe(h1);
    expect(q.popDescriptorChainInto(mem, r1)).toBe(false);
    expect(r1.head).toBe(h1); // untouched when nothing is popped
  });

  it("packed: one object popped twice without returning; each undo gives back the right buffer id", () => {
    const { mem, mock } = packed(8);
    const q = mock.createQueue();
    mock.addChain([{ addr: 0x8000, len: 10 }]);
    mock.addChain([{ addr: 0x9000, len: 20 }]);
    const r = new ReusableChain();
    expect(q.popDescriptorChainInto(mem, r)).toBe(true);
    const first = r.head;
    expect(q.popDescriptorChainInto(mem, r)).toBe(true);
    const second = r.head;
    expect(second).not.toBe(first);
    // Both records name `r`: undo uses each record's own id, not r.head.
    q.undoPop(r);
    q.undoPop(r);
    expect(q.nextAvail).toBe(0);
    expectCode(() => q.addUsed(mem, first, 0), "UnknownBufferId");
    expectCode(() => q.addUsed(mem, second, 0), "UnknownBufferId");
    const seen: number[] = [];
    while (q.popDescriptorChainInto(mem, r)) {
      seen.push(r.head);
      q.addUsed(mem, r.head, 0);
    }
    expect(seen).toEqual([first, second]);
  });

  it("a mixed log: DescriptorChain and ReusableChain records give back newest first", () => {
    const { mem, mock } = split(8);
    const q = mock.createQueue();
    for (let i = 0; i < 3; i++) mock.addChain([{ addr: 0x8000 + i * 0x100, len: 4, writable: true }]);
    const c0 = q.popDescriptorChain(mem)!;
    const r = new ReusableChain();
    q.popDescriptorChainInto(mem, r);
    const c2 = q.popDescriptorChain(mem)!;
    expect(() => q.undoPop(r)).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    q.undoPop(c2);
    q.undoPop(r);
    q.undoPop(c0);
    expect(q.nextAvail).toBe(0);
    const heads = [...q.iter(mem)].map((c) => c.head);
    expect(heads).toEqual([c0.head, r.head, c2.head]);
  });
});

function snapshot(mem: GuestMemory): Uint8Array[] {
  return mem.regions.map((r) => r.bytes.slice());
}

function restore(mem: GuestMemory, snap: readonly Uint8Array[]): void {
  mem.regions.forEach((r, i) => r.bytes.set(snap[i]!));
}

function expectCode(fn: () => unknown, code: VirtqueueErrorCode): void {
  expect(fn).toThrow(expect.objectContaining({ code }));
}
