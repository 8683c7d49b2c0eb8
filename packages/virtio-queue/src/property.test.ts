import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { GuestMemoryArrayBuffer } from "@ts-vmm/vm-memory";
import { fuzzOne, newStats } from "../test/fuzz-engine.js";
import { makeMemory } from "../test/memory.js";
import { MockPackedQueue, MockSplitQueue, type MockBuffer } from "./mock/index.js";
import { Queue, VirtqueueError, type QueueState } from "./index.js";

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
          if (bufs.length > size) {
            // Longer than the queue size (only possible through an indirect table): the chain limit.
            expect(() => q.popDescriptorChain(mem)).toThrow(expect.objectContaining({ code: "ChainTooLong", head }));
            q.addUsed(mem, head, 0);
            expect(mock.takeUsed()).toEqual([{ id: head, len: 0 }]);
            continue;
          }
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
            if (bufs.length > size) continue; // over the chain limit: see the split round trip
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

describe("property: a guest driving the setters and the rings at random", () => {
  // Guest-driven configuration (sizes, ready, addresses, including hostile values)
  // interleaved with guest writes to the rings and every device call. After
  // each step: only VirtqueueError is thrown; state() restores through
  // fromState to the same state; packed positions stay inside the ring; and
  // the device wrote only to the areas the current configuration gives it
  // (split used ring; packed descriptor ring and device event area).
  const SMALL = 0x2000;
  const u16 = fc.oneof(fc.nat(40), fc.nat(7), fc.nat(7).map((f) => f | 0x80), fc.nat(7).map((f) => f | 0x8000), fc.nat(0xffff));
  const hostileNum = fc.constantFrom(Number.NaN, -1, 1.5, 2 ** 32, 2 ** 52, Infinity, -0);
  const op = fc.oneof(
    // A well-behaved driver step: one buffer made available at the device's next position.
    { weight: 4, arbitrary: fc.record({ k: fc.constant("offer" as const), id: fc.nat(40), len: fc.nat(64), w: fc.boolean() }) },
    { weight: 4, arbitrary: fc.record({ k: fc.constant("pop" as const) }) },
    { weight: 3, arbitrary: fc.record({ k: fc.constant("used" as const), i: fc.nat(), len: fc.oneof(fc.nat(64), hostileNum) }) },
    { weight: 2, arbitrary: fc.record({ k: fc.constant("size" as const), v: fc.oneof(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 0, max: 40 }), hostileNum) }) },
    { weight: 2, arbitrary: fc.record({ k: fc.constant("ready" as const), v: fc.boolean() }) },
    fc.record({
      k: fc.constant("addr" as const),
      which: fc.nat(2),
      lo: fc.oneof({ weight: 6, arbitrary: fc.nat(SMALL / 16).map((n) => n * 16) }, { weight: 1, arbitrary: fc.nat(0xffff_ffff) }, { weight: 1, arbitrary: hostileNum }),
      hi: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.nat(0xffff_ffff) }, { weight: 1, arbitrary: hostileNum }),
    }),
    fc.record({ k: fc.constant("desc" as const), i: fc.nat(40), addr: fc.nat(SMALL), len: fc.nat(64), a: u16, b: u16 }),
    fc.record({ k: fc.constant("avail" as const), i: fc.nat(41), ahead: fc.nat(10), head: fc.nat(40) }),
    fc.record({ k: fc.constant("raw" as const), at: fc.nat(SMALL - 1), v: fc.nat(0xff) }),
    fc.record({ k: fc.constant("notify" as const), which: fc.nat(2) }),
  );

  it("state() always restores, positions stay in the ring, the device writes only its own areas", () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.boolean(),
        fc.constantFrom(1, 2, 4, 8, 16, 32),
        fc.array(op, { minLength: 1, maxLength: 80, size: "max" }),
        (packed, eventIdx, maxSize, ops) => {
          const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: SMALL }], { shared: false });
          const shadow = new Uint8Array(SMALL);
          const q = new Queue(maxSize);
          q.setRingPacked(packed);
          q.setEventIdx(eventIdx);
          // Start from a working queue; the ops may break it.
          q.setDescTableAddress(0, 0);
          q.setAvailRingAddress(0x800, 0);
          q.setUsedRingAddress(0x1000, 0);
          q.setReady(true);
          const held: number[] = [];
          const guestWrite = (at: number, bytes: Uint8Array): void => {
            if (at < 0 || at + bytes.length > SMALL) return;
            mem.write(at, bytes);
            shadow.set(bytes, at);
          };
          const le = (v: number, n: number): Uint8Array => {
            const b = new Uint8Array(n);
            for (let i = 0; i < n; i++) b[i] = Math.floor(v / 2 ** (8 * i)) & 0xff;
            return b;
          };
          const device = (fn: () => void): void => {
            const areas: [number, number][] = q.packed
              ? [
                  [q.descTable, q.descTable + 16 * q.size],
                  [q.usedRing, q.usedRing + 4],
                ]
              : [[q.usedRing, q.usedRing + 6 + 8 * q.size]];
            try {
              fn();
            } catch (e) {
              if (!(e instanceof VirtqueueError)) throw e;
              if (e.head !== undefined) held.push(e.head);
            }
            const now = mem.slice(0, SMALL);
            for (let a = 0; a < SMALL; a++) {
              if (now[a] !== shadow[a]) {
                expect(areas.some(([s, e]) => a >= s && a < e), `device wrote guest byte 0x${a.toString(16)}`).toBe(true);
                shadow[a] = now[a] as number;
              }
            }
          };
          for (const o of ops) {
            switch (o.k) {
              case "size":
                q.setSize(o.v);
                break;
              case "ready":
                q.setReady(o.v);
                break;
              case "addr":
                if (o.which === 0) q.setDescTableAddress(o.lo, o.hi);
                else if (o.which === 1) q.setAvailRingAddress(o.lo, o.hi);
                else q.setUsedRingAddress(o.lo, o.hi);
                break;
              case "offer": {
                // Plays a driver that knows where the device is (a test shortcut).
                const st = q.state();
                const flags = o.w ? 2 : 0;
                if (q.packed) {
                  const at = q.descTable + 16 * st.nextAvail;
                  guestWrite(at, le(0x1800, 8));
                  guestWrite(at + 8, le(o.len, 4));
                  guestWrite(at + 12, le(o.id, 2));
                  guestWrite(at + 14, le(flags | (st.availWrapCounter ? 0x80 : 0x8000), 2));
                } else {
                  const head = o.id % q.size;
                  const at = q.descTable + 16 * head;
                  guestWrite(at, le(0x1800, 8));
                  guestWrite(at + 8, le(o.len, 4));
                  guestWrite(at + 12, le(flags, 2));
                  guestWrite(at + 14, le(0, 2));
                  const idx = mem.checkRange(q.availRing + 2, 2) ? mem.readU16(q.availRing + 2) : 0;
                  guestWrite(q.availRing + 4 + 2 * (idx & (q.size - 1)), le(head, 2));
                  guestWrite(q.availRing + 2, le((idx + 1) & 0xffff, 2));
                }
                break;
              }
              case "desc": {
                const at = q.descTable + 16 * o.i;
                guestWrite(at, le(o.addr, 8));
                guestWrite(at + 8, le(o.len, 4));
                guestWrite(at + 12, le(o.a, 2));
                guestWrite(at + 14, le(o.b, 2));
                break;
              }
              case "avail":
                if (q.packed) guestWrite(q.availRing, le(o.head | (o.ahead << 16), 4));
                else if (o.i === 41) guestWrite(q.availRing + 2, le((q.nextAvail + o.ahead) & 0xffff, 2));
                else guestWrite(q.availRing + 4 + 2 * o.i, le(o.head, 2));
                break;
              case "raw":
                guestWrite(o.at, le(o.v, 1));
                break;
              case "pop":
                device(() => {
                  const c = q.popDescriptorChain(mem);
                  if (c !== undefined) held.push(c.head);
                });
                break;
              case "used": {
                const [head] = held.length > 0 ? held.splice(o.i % held.length, 1) : [o.i & 0xffff];
                device(() => q.addUsed(mem, head as number, o.len));
                break;
              }
              case "notify":
                device(() => {
                  if (o.which === 0) q.needsNotification(mem);
                  else if (o.which === 1) q.enableNotification(mem);
                  else q.disableNotification(mem);
                });
                break;
            }
            const s = q.state();
            if (s.packed) {
              expect(s.nextAvail).toBeLessThan(s.size);
              expect(s.nextUsed).toBeLessThan(s.size);
            }
            const json = JSON.stringify(s);
            expect(JSON.stringify(Queue.fromState(JSON.parse(json) as QueueState).state())).toBe(json);
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});
