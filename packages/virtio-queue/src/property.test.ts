import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { GuestMemoryArrayBuffer } from "@ts-vmm/vm-memory";
import { fuzzOne, newStats } from "../test/fuzz-engine.js";
import { makeMemory } from "../test/memory.js";
import { MockPackedQueue, MockSplitQueue, type MockBuffer } from "./mock/index.js";
import { Queue, VirtqueueError } from "./index.js";

const MEM = 0x40000;
const DATA = 0x20000;

const buffer = fc.record({
  addr: fc.integer({ min: DATA, max: MEM - 0x1000 }),
  len: fc.integer({ min: 0, max: 0x1000 }),
  writable: fc.boolean(),
});
// A valid chain: readable buffers first.
const chainArb = fc
  .array(buffer, { minLength: 1, maxLength: 6 })
  .map((bs) => [...bs.filter((b) => !b.writable), ...bs.filter((b) => b.writable)] as MockBuffer[]);
const chainsArb = fc.array(fc.record({ bufs: chainArb, indirect: fc.boolean(), used: fc.nat(0xffff_ffff) }), {
  minLength: 1,
  maxLength: 40,
});

function sameBuffers(got: readonly { addr: number; len: number; writable: boolean }[], want: readonly MockBuffer[]): void {
  expect(got.map((d) => [d.addr, d.len, d.writable])).toEqual(want.map((b) => [b.addr, b.len, b.writable ?? false]));
}

describe("property: valid chains round-trip", () => {
  it("split: mock builds -> queue pops the same buffers -> addUsed -> mock sees the used entries", () => {
    fc.assert(
      fc.property(fc.constantFrom(1, 2, 8, 16, 64), fc.boolean(), chainsArb, (size, eventIdx, chains) => {
        const mem = makeMemory(MEM);
        const mock = new MockSplitQueue(mem, size, { base: 0, eventIdx });
        const q = mock.createQueue();
        for (const { bufs, indirect, used } of chains) {
          const direct = !indirect;
          if (direct && bufs.length > mock.freeCount) continue;
          if (mock.freeCount === 0) break;
          const head = mock.addChain(bufs, { indirect });
          const c = q.popDescriptorChain(mem);
          expect(c?.head).toBe(head);
          sameBuffers(c!.descriptors, bufs);
          expect(c!.indirect).toBe(indirect);
          q.addUsed(mem, head, used);
          expect(mock.takeUsed()).toEqual([{ id: head, len: used }]);
        }
        expect(q.popDescriptorChain(mem)).toBeUndefined();
      }),
      { numRuns: 150 },
    );
  });

  it("split: batches popped together and returned in any order", () => {
    fc.assert(
      fc.property(chainsArb, fc.func(fc.integer()), (chains, order) => {
        const mem = makeMemory(MEM);
        const mock = new MockSplitQueue(mem, 64, { base: 0 });
        const q = mock.createQueue();
        const want = new Map<number, MockBuffer[]>();
        for (const { bufs, indirect } of chains) {
          if (!indirect && bufs.length > mock.freeCount) break;
          want.set(mock.addChain(bufs, { indirect }), bufs);
        }
        const got = [...q.iter(mem)];
        expect(got.map((c) => c.head)).toEqual([...want.keys()]);
        for (const c of got) sameBuffers(c.descriptors, want.get(c.head)!);
        const shuffled = [...got].sort((a, b) => order(a.head) - order(b.head));
        for (const c of shuffled) q.addUsed(mem, c.head, c.writableLength);
        expect(mock.takeUsed().map((u) => u.id)).toEqual(shuffled.map((c) => c.head));
      }),
      { numRuns: 100 },
    );
  });

  it("packed: the same round trip, with out-of-order completion and wrap-around", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 40 }), chainsArb, fc.func(fc.integer()), (size, chains, order) => {
        const mem = makeMemory(MEM);
        const mock = new MockPackedQueue(mem, size, { base: 0 });
        const q = mock.createQueue();
        for (let round = 0; round < 3; round++) {
          const want = new Map<number, MockBuffer[]>();
          for (const { bufs, indirect } of chains) {
            if ((indirect ? 1 : bufs.length) > mock.freeCount) break;
            want.set(mock.addChain(bufs, { indirect }), bufs);
          }
          const got = [...q.iter(mem)];
          expect(got.map((c) => c.head)).toEqual([...want.keys()]);
          for (const c of got) sameBuffers(c.descriptors, want.get(c.head)!);
          const shuffled = [...got].sort((a, b) => order(a.head) - order(b.head));
          for (const c of shuffled) q.addUsed(mem, c.head, c.writableLength);
          expect(mock.takeUsed().map((u) => [u.id, u.len])).toEqual(shuffled.map((c) => [c.head, c.writableLength]));
          expect(mock.freeCount).toBe(size);
        }
      }),
      { numRuns: 100 },
    );
  });
});

describe("property: garbage never escapes as anything but VirtqueueError", () => {
  it("random bytes as rings and tables, in memory sized exactly", () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.constantFrom(1, 2, 4, 8),
        fc.uint8Array({ minLength: 1024, maxLength: 1024 }),
        fc.array(fc.nat(2000), { minLength: 3, maxLength: 3 }),
        (packed, size, bytes, addrs) => {
          const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 1024 }], { shared: false });
          mem.write(0, bytes);
          const q = new Queue(8);
          q.setRingPacked(packed);
          q.setSize(size);
          q.setDescTableAddress(addrs[0]! & ~15, 0);
          q.setAvailRingAddress(addrs[1]! & ~3, 0);
          q.setUsedRingAddress(addrs[2]! & ~3, 0);
          q.setReady(true);
          for (let i = 0; i < 2 * size + 1; i++) {
            try {
              const c = q.popDescriptorChain(mem);
              if (c === undefined) break;
              c.readAll(mem, 0x10000);
              q.addUsed(mem, c.head, 0);
            } catch (e) {
              if (!(e instanceof VirtqueueError)) throw e;
              if (e.head === undefined) break;
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("bounded fuzz (a few seconds; `pnpm fuzz` runs a million tables)", () => {
  it("random descriptor tables: zero untyped exceptions, no broken chain invariants", () => {
    const stats = newStats();
    const t0 = performance.now();
    let seed = 0x5eed;
    while (performance.now() - t0 < 2500) {
      for (let i = 0; i < 256; i++) fuzzOne(seed++, stats);
    }
    expect(stats.failures.slice(0, 3)).toEqual([]);
    expect(stats.tables).toBeGreaterThan(1000);
    expect(stats.chains).toBeGreaterThan(100);
    // The typed errors the fuzzer reaches include the validation rules.
    for (const code of ["AvailIndexAhead", "ChainTooLong", "InvalidDescriptorIndex", "IndirectWithNext", "RingOutOfBounds"]) {
      expect(stats.typedErrors.get(code) ?? 0).toBeGreaterThan(0);
    }
  });
});
