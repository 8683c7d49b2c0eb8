// Random descriptor tables against the device side of the queue. Shared by the
// bounded fuzz run in `pnpm test` and the long one in `pnpm fuzz`.
import { GuestMemoryArrayBuffer, type GuestMemory } from "@ts-vmm/vm-memory";
import { Queue, VirtqueueError, type DescriptorChain } from "../src/index.js";
import { MockPackedQueue, MockSplitQueue } from "../src/mock/index.js";

/** What a fuzz run saw. */
export interface FuzzStats {
  tables: number;
  chains: number;
  typedErrors: Map<string, number>;
  /** Anything thrown that is not a VirtqueueError, or a popped chain that breaks an invariant. */
  failures: { seed: number; error: unknown }[];
}

export function newStats(): FuzzStats {
  return { tables: 0, chains: 0, typedErrors: new Map(), failures: [] };
}

/** A small fast PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

interface Layout {
  readonly mem: GuestMemory;
  /** First address of the span the fuzzer writes into. */
  readonly start: number;
  /** Bytes from `start` to the end of the last region (holes included). */
  readonly size: number;
  /** End of the first region: the mock's rings and scratch stay below it. */
  readonly firstEnd: number;
  readonly regions: readonly { start: number; size: number }[];
  readonly bytes: Uint8Array;
  readonly words: Uint32Array;
}

/**
 * Memories sized exactly, so that any access past them throws in the backend:
 * single regions (one above 4 GiB), two contiguous regions, and two regions
 * with a hole between them.
 */
function layouts(): Layout[] {
  const mk = (regions: { start: number; size: number }[]): Layout => {
    const start = regions[0]!.start;
    const last = regions[regions.length - 1]!;
    const size = last.start + last.size - start;
    const bytes = new Uint8Array(size);
    return {
      mem: GuestMemoryArrayBuffer.fromRanges(regions, { shared: false }),
      start,
      size,
      firstEnd: start + regions[0]!.size,
      regions,
      bytes,
      words: new Uint32Array(bytes.buffer),
    };
  };
  return [
    mk([{ start: 0, size: 1024 }]),
    mk([{ start: 0, size: 4096 }]),
    mk([{ start: 0x10000, size: 2048 }]),
    mk([{ start: 0xfff0_0000, size: 4096 }]),
    mk([
      { start: 0x2000, size: 1024 },
      { start: 0x2400, size: 1024 },
    ]),
    mk([
      { start: 0x4000, size: 1024 },
      { start: 0x4800, size: 1024 },
    ]),
  ];
}

/** Copies the span's bytes into each region (the holes stay unbacked). */
function store(L: Layout): void {
  for (const r of L.regions) L.mem.write(r.start, L.bytes.subarray(r.start - L.start, r.start - L.start + r.size));
}

let cached: Layout[] | undefined;

function note(stats: FuzzStats, code: string): void {
  stats.typedErrors.set(code, (stats.typedErrors.get(code) ?? 0) + 1);
}

function checkChain(c: DescriptorChain): string | undefined {
  if (c.descriptors.length === 0) return "empty chain";
  let r = 0;
  let w = 0;
  let seenW = false;
  for (const d of c.descriptors) {
    if (!(Number.isSafeInteger(d.addr) && d.addr >= 0 && d.addr < 2 ** 52)) return `bad addr ${d.addr}`;
    if (d.writable) {
      seenW = true;
      w += d.len;
    } else {
      if (seenW) return "readable after writable";
      r += d.len;
    }
  }
  if (r !== c.readableLength || w !== c.writableLength) return "length mismatch";
  if (r + w > 0xffff_ffff) return "lengths past 2^32";
  return undefined;
}

/** Random bytes (biased towards plausible descriptors half of the time) as rings and tables. */
function garbageQueue(L: Layout, next: () => number, pick: (n: number) => number): Queue {
  const { start, size: memSize, bytes } = L;
  const packed = pick(2) === 0;
  const qsize = packed ? 1 + pick(16) : 1 << pick(5);
  const words = L.words;
  for (let i = 0; i < words.length; i++) words[i] = next();
  const align = (v: number, a: number): number => v - (v % a);
  const inMem = (a: number): number => start + align(pick(memSize), a);
  const desc = inMem(16);
  const avail = pick(8) === 0 ? start + pick(memSize + 64) : inMem(4);
  const used = pick(8) === 0 ? start + pick(memSize + 64) : inMem(4);
  const dv = new DataView(bytes.buffer);
  if (pick(2) === 0) {
    // Plausible: small lengths, addresses in memory, nearby next, small avail idx.
    for (let i = 0; i < qsize; i++) {
      const at = desc - start + i * 16;
      if (at + 16 > memSize) break;
      const big = pick(32) === 0;
      dv.setUint32(at, big ? next() : inMem(1) % 2 ** 32, true);
      dv.setUint32(at + 4, big ? next() : Math.floor(start / 2 ** 32), true);
      dv.setUint32(at + 8, pick(16) === 0 ? next() : pick(4) === 0 ? 16 * (1 + pick(4)) : pick(300), true);
      let flags = pick(8);
      if (packed) flags |= pick(2) === 0 ? 0x80 : 0x8000;
      dv.setUint16(at + 12, packed ? pick(qsize + 2) : flags, true);
      dv.setUint16(at + 14, packed ? flags : pick(qsize + 2), true);
    }
    if (!packed && avail - start + 4 + 2 * qsize <= memSize) {
      dv.setUint16(avail - start + 2, pick(qsize + 3), true);
      for (let i = 0; i < qsize; i++) dv.setUint16(avail - start + 4 + 2 * i, pick(qsize + 1), true);
    }
  }
  store(L);
  const q = new Queue(32);
  q.setRingPacked(packed);
  q.setEventIdx(pick(2) === 0);
  q.setSize(qsize);
  q.setDescTableAddress(desc % 2 ** 32, Math.floor(desc / 2 ** 32));
  q.setAvailRingAddress(avail % 2 ** 32, Math.floor(avail / 2 ** 32));
  q.setUsedRingAddress(used % 2 ** 32, Math.floor(used / 2 ** 32));
  q.setReady(true);
  return q;
}

/** Valid chains laid out by the mock driver, then a few bytes flipped. */
function mutatedQueue(L: Layout, next: () => number, pick: (n: number) => number): Queue {
  const { mem, start, size: memSize, bytes } = L;
  bytes.fill(0);
  store(L);
  const packed = pick(2) === 0;
  const qsize = packed ? 1 + pick(8) : 1 << pick(4);
  const base = start + 16 * pick(8);
  const ringEnd = base + 16 * qsize + 16 + 8 * qsize + 16;
  const opts = { base, eventIdx: pick(2) === 0, scratch: [ringEnd, L.firstEnd] as const };
  const mock = packed ? new MockPackedQueue(mem, qsize, opts) : new MockSplitQueue(mem, qsize, opts);
  const chains = 1 + pick(qsize);
  try {
    for (let c = 0; c < chains; c++) {
      const n = 1 + pick(4);
      const bufs = Array.from({ length: n }, (_, i) => ({
        addr: start + pick(memSize),
        len: pick(200),
        writable: i >= n / 2,
      }));
      mock.addChain(bufs, { indirect: pick(3) === 0 });
    }
  } catch (e) {
    if (!(e instanceof VirtqueueError && e.code === "QueueFull")) throw e;
  }
  const flips = 1 + pick(4);
  const span = Math.min(L.firstEnd - start, ringEnd - start + 256);
  for (let i = 0; i < flips; i++) {
    const at = start + pick(span);
    mem.writeU8(at, pick(3) === 0 ? next() & 0xff : mem.readU8(at) ^ (1 << pick(8)));
  }
  return mock.createQueue();
}

/**
 * A random table as {@link fuzzOne} makes it (random or mutated ring contents, configured
 * through the guest-driven setters), with its memory and random source, for tests that
 * drive the queue themselves.
 */
export function fuzzQueue(seed: number): { mem: GuestMemory; q: Queue; pick: (n: number) => number } {
  const layoutsList = (cached ??= layouts());
  const next = rng(seed);
  const pick = (n: number): number => next() % n;
  const L = layoutsList[pick(layoutsList.length)] as Layout;
  const q = pick(3) === 0 ? mutatedQueue(L, next, pick) : garbageQueue(L, next, pick);
  return { mem: L.mem, q, pick };
}

/**
 * One random table: random or mutated ring contents, a queue configured
 * through the guest-driven setters, and every data-path call a device makes.
 */
export function fuzzOne(seed: number, stats: FuzzStats): void {
  const layoutsList = (cached ??= layouts());
  const next = rng(seed);
  const pick = (n: number): number => next() % n;
  const L = layoutsList[pick(layoutsList.length)] as Layout;
  const { mem } = L;
  let q: Queue;
  try {
    q = pick(3) === 0 ? mutatedQueue(L, next, pick) : garbageQueue(L, next, pick);
  } catch (e) {
    stats.failures.push({ seed, error: e });
    return;
  }
  stats.tables++;
  const qsize = q.size;

  const guard = (fn: () => void): boolean => {
    try {
      fn();
      return true;
    } catch (e) {
      if (e instanceof VirtqueueError) {
        note(stats, e.code);
        return false;
      }
      stats.failures.push({ seed, error: e });
      return false;
    }
  };
  q.isValid(mem);
  const scratch = new Uint8Array(64);
  for (let n = 0; n < 2 * qsize + 2; n++) {
    let chain: DescriptorChain | undefined;
    let stop = false;
    guard(() => {
      try {
        chain = q.popDescriptorChain(mem);
        if (chain === undefined) stop = true;
      } catch (e) {
        if (e instanceof VirtqueueError && e.head === undefined) stop = true;
        if (e instanceof VirtqueueError && e.head !== undefined && pick(2) === 0) q.addUsed(mem, e.head, 0);
        throw e;
      }
    });
    if (chain !== undefined) {
      stats.chains++;
      const c = chain;
      const bad = checkChain(c);
      if (bad !== undefined) stats.failures.push({ seed, error: new Error(bad) });
      guard(() => void c.readAll(mem, 1 << 16));
      guard(() => void c.readInto(mem, scratch, pick(64)));
      guard(() => void c.writeFrom(mem, scratch.subarray(0, pick(64)), pick(8)));
      const len = pick(4) === 0 ? next() : pick(64);
      // Half the chains are returned deferred (published by a later publishUsed, addUsed or needsNotification).
      guard(() => (pick(2) === 0 ? q.addUsedDeferred(mem, c.head, len) : q.addUsed(mem, c.head, len)));
    }
    if (pick(8) === 0) guard(() => q.publishUsed(mem));
    if (pick(4) === 0) guard(() => void q.needsNotification(mem));
    if (stop) break;
  }
  // The state restores with entries still unpublished, too.
  try {
    const json = JSON.stringify(q.state());
    if (JSON.stringify(Queue.fromState(JSON.parse(json)).state()) !== json) throw new Error("state (entries unpublished) changed on restore");
  } catch (e) {
    stats.failures.push({ seed, error: e });
  }
  guard(() => void q.enableNotification(mem));
  guard(() => q.disableNotification(mem));
  guard(() => void q.needsNotification(mem));
  // Whatever the guest did, the queue's own state must restore (a typed error here is a failure too).
  try {
    const json = JSON.stringify(q.state());
    if (JSON.stringify(Queue.fromState(JSON.parse(json)).state()) !== json) throw new Error("state changed on restore");
  } catch (e) {
    stats.failures.push({ seed, error: e });
  }
}

/** Runs until `count` tables or `ms` milliseconds, whichever comes first. */
export function fuzzRun(firstSeed: number, count: number, ms: number): FuzzStats & { elapsedMs: number } {
  const stats = newStats();
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    fuzzOne((firstSeed + i) >>> 0, stats);
    if ((i & 1023) === 0 && performance.now() - t0 > ms) break;
  }
  return { ...stats, elapsedMs: performance.now() - t0 };
}
