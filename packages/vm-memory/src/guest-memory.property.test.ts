import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { GuestMemoryError } from "./error.js";
import { GuestMemoryArrayBuffer } from "./guest-memory-array-buffer.js";
import type { GuestMemory } from "./guest-memory.js";
import { GuestMemoryMmap } from "./guest-memory-mmap.js";
import { nativeBulkCopier } from "./native-copy.js";

// Random region layouts and random (often hostile) accesses, checked against a
// byte-map reference model: every access either succeeds and matches the model
// or throws the GuestMemoryError the model predicts, never anything else, and
// never touches the guard bytes around each region.

const GUARD = 16;
const GUARD_BYTE = 0xa5;

interface Layout {
  regions: { start: number; size: number; skew: number }[];
}

/** Random layouts: region sizes and gaps in multiples of `unit` (1 byte, or 4 KiB for mmap). */
function layoutArb(unit: number, maxUnits: number, top: number): fc.Arbitrary<Layout> {
  return fc
    .record({
      base: fc.oneof(fc.nat(0x1000 / unit).map((n) => n * unit), fc.constant(top)),
      parts: fc.array(
        fc.record({
          gap: fc.oneof(fc.constant(0), fc.nat(40).map((n) => Math.ceil(n / unit) * unit)),
          size: fc.integer({ min: 1, max: maxUnits }).map((n) => n * unit),
          skew: unit === 1 ? fc.nat(7) : fc.constant(0),
        }),
        { minLength: 1, maxLength: 6 },
      ),
    })
    .map(({ base, parts }) => {
      let at = base;
      const regions: Layout["regions"] = [];
      for (const p of parts) {
        at += p.gap;
        if (at + p.size > 2 ** 52) break;
        regions.push({ start: at, size: p.size, skew: p.skew });
        at += p.size;
      }
      return { regions: regions.length ? regions : [{ start: base, size: unit, skew: 0 }] };
    });
}

type Op =
  | { k: "read"; w: 1 | 2 | 4 | 8; a: number }
  | { k: "write"; w: 1 | 2 | 4 | 8; a: number; v: bigint }
  | { k: "badwrite"; w: 1 | 2 | 4 | 8; a: number; v: number | bigint }
  | { k: "bulkRead"; a: number; n: number }
  | { k: "bulkWrite"; a: number; data: Uint8Array }
  | { k: "slice"; a: number; n: number }
  | { k: "atomicLoad"; w: 2 | 4; a: number }
  | { k: "atomicStore"; w: 2 | 4; a: number; v: number }
  | { k: "u64addr"; a: number }
  | { k: "words"; a: number; words: number };

function opArb(layout: Layout): fc.Arbitrary<Op> {
  const r0 = layout.regions[0] as { start: number };
  const last = layout.regions[layout.regions.length - 1] as { start: number; size: number };
  const edges = layout.regions.flatMap((r) => [r.start, r.start + r.size]);
  const near = fc.oneof(
    fc.integer({ min: Math.max(0, r0.start - 12), max: last.start + last.size + 12 }),
    fc.tuple(fc.constantFrom(...edges), fc.integer({ min: -12, max: 12 })).map(([e, d]) => Math.max(0, e + d)),
  );
  const hostile = fc.constantFrom(-1, Number.NaN, 0.5, r0.start + 0.5, 2 ** 52, 2 ** 53, 2 ** 64, Number.POSITIVE_INFINITY, -0);
  const addr = fc.oneof({ weight: 12, arbitrary: near }, { weight: 1, arbitrary: hostile });
  const width = fc.constantFrom(1 as const, 2 as const, 4 as const, 8 as const);
  const len = fc.oneof(fc.nat(80), fc.constantFrom(-1, 0.5, Number.NaN, 2 ** 53));
  return fc.oneof(
    fc.record({ k: fc.constant("read" as const), w: width, a: addr }),
    fc.record({ k: fc.constant("write" as const), w: width, a: addr, v: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) }),
    fc.record({
      k: fc.constant("badwrite" as const),
      w: width,
      a: addr,
      v: fc.constantFrom<number | bigint>(-1, 256, 65536, 2 ** 32, 1.5, Number.NaN, -1n, 1n << 64n),
    }).filter((o) => (o.w === 8) === (typeof o.v === "bigint")),
    fc.record({ k: fc.constant("bulkRead" as const), a: addr, n: fc.nat(80) }),
    fc.record({ k: fc.constant("bulkWrite" as const), a: addr, data: fc.uint8Array({ maxLength: 80 }) }),
    fc.record({ k: fc.constant("slice" as const), a: addr, n: len }),
    fc.record({ k: fc.constant("atomicLoad" as const), w: fc.constantFrom(2 as const, 4 as const), a: addr }),
    fc.record({ k: fc.constant("atomicStore" as const), w: fc.constantFrom(2 as const, 4 as const), a: addr, v: fc.nat(0xffff) }),
    fc.record({ k: fc.constant("u64addr" as const), a: addr }),
    fc.record({ k: fc.constant("words" as const), a: addr, words: fc.oneof(fc.constant(4), fc.nat(6)) }),
  );
}

class Model {
  readonly bytes = new Map<number, number>();
  constructor(readonly layout: Layout) {
    for (const r of layout.regions) for (let i = 0; i < r.size; i++) this.bytes.set(r.start + i, 0);
  }
  regionOf(a: number): { start: number; size: number; skew: number } | undefined {
    return this.layout.regions.find((r) => a >= r.start && a < r.start + r.size);
  }
  /** The error a range access must give, or undefined if it must succeed. */
  rangeError(a: number, n: number, oneRegion = false): string | undefined {
    if (!(Number.isInteger(a) && a >= 0 && a < 2 ** 52)) return a >= 2 ** 52 ? "AddressTooLarge" : "InvalidArgument";
    if (!(Number.isInteger(n) && n >= 0 && n <= 2 ** 52)) return "InvalidArgument";
    const r = this.regionOf(a);
    if (r === undefined) return "Hole";
    if (oneRegion) return a + n <= r.start + r.size ? undefined : "OutOfBounds";
    for (let i = 0; i < n; i++) if (!this.bytes.has(a + i)) return "OutOfBounds";
    return undefined;
  }
  get(a: number, n: number): bigint {
    let v = 0n;
    for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(this.bytes.get(a + i) as number);
    return v;
  }
  set(a: number, n: number, v: bigint): void {
    for (let i = 0; i < n; i++) this.bytes.set(a + i, Number((v >> BigInt(8 * i)) & 0xffn));
  }
}

function outcome(fn: () => unknown): { ok: true; value: unknown } | { ok: false; code: string } {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    if (e instanceof GuestMemoryError) return { ok: false, code: e.code };
    throw e; // anything else fails the property
  }
}

type Backend = (layout: Layout, buffers: SharedArrayBuffer[]) => { mem: GuestMemory; close(): void };

function checkAgainstModel(layouts: fc.Arbitrary<Layout>, backend: Backend, guarded: boolean, numRuns: number): void {
    fc.assert(
      fc.property(
        layouts.chain((layout) => fc.tuple(fc.constant(layout), fc.array(opArb(layout), { minLength: 1, maxLength: 60 }))),
        ([layout, ops]) => {
          const buffers = layout.regions.map((r) => new SharedArrayBuffer(r.size + r.skew + 2 * GUARD));
          buffers.forEach((b, i) => {
            const r = layout.regions[i] as Layout["regions"][number];
            const u = new Uint8Array(b);
            u.fill(GUARD_BYTE, 0, GUARD + r.skew);
            u.fill(GUARD_BYTE, GUARD + r.skew + r.size);
          });
          const { mem, close } = backend(layout, buffers);
          try {
          const model = new Model(layout);
          for (const op of ops) {
            switch (op.k) {
              case "read": {
                const exp = model.rangeError(op.a, op.w);
                const got = outcome(() =>
                  op.w === 1 ? mem.readU8(op.a) : op.w === 2 ? mem.readU16(op.a) : op.w === 4 ? mem.readU32(op.a) : mem.readU64(op.a),
                );
                if (exp) expect(got).toEqual({ ok: false, code: exp });
                else expect(got).toEqual({ ok: true, value: op.w === 8 ? model.get(op.a, 8) : Number(model.get(op.a, op.w)) });
                break;
              }
              case "write": {
                const v = op.v & ((1n << BigInt(8 * op.w)) - 1n);
                const exp = model.rangeError(op.a, op.w);
                const got = outcome(() =>
                  op.w === 1
                    ? mem.writeU8(op.a, Number(v))
                    : op.w === 2
                      ? mem.writeU16(op.a, Number(v))
                      : op.w === 4
                        ? mem.writeU32(op.a, Number(v))
                        : mem.writeU64(op.a, v),
                );
                if (exp) expect(got).toEqual({ ok: false, code: exp });
                else {
                  expect(got.ok).toBe(true);
                  model.set(op.a, op.w, v);
                }
                break;
              }
              case "badwrite": {
                const got = outcome(() =>
                  op.w === 8
                    ? mem.writeU64(op.a, op.v as bigint)
                    : (op.w === 1 ? mem.writeU8 : op.w === 2 ? mem.writeU16 : mem.writeU32).call(mem, op.a, op.v as number),
                );
                // a value out of range is refused, unless it happens to fit the type
                const fits =
                  op.w === 8
                    ? typeof op.v === "bigint" && op.v >= 0n && op.v < 1n << 64n
                    : typeof op.v === "number" && Number.isInteger(op.v) && op.v >= 0 && op.v < 2 ** (8 * op.w);
                if (!fits) expect(got).toEqual({ ok: false, code: "InvalidArgument" });
                else if (got.ok) model.set(op.a, op.w, BigInt(op.v));
                else expect(got.code).toBe(model.rangeError(op.a, op.w));
                break;
              }
              case "bulkRead": {
                const d = new Uint8Array(op.n).fill(0x5a);
                const exp = model.rangeError(op.a, op.n);
                const got = outcome(() => mem.read(op.a, d));
                if (exp) {
                  expect(got).toEqual({ ok: false, code: exp });
                  expect(d.every((b) => b === 0x5a)).toBe(true);
                } else {
                  expect(got.ok).toBe(true);
                  for (let i = 0; i < op.n; i++) expect(d[i]).toBe(model.bytes.get(op.a + i));
                }
                break;
              }
              case "bulkWrite": {
                const exp = model.rangeError(op.a, op.data.length);
                const got = outcome(() => mem.write(op.a, op.data));
                if (exp) expect(got).toEqual({ ok: false, code: exp });
                else {
                  expect(got.ok).toBe(true);
                  op.data.forEach((b, i) => model.bytes.set(op.a + i, b));
                }
                break;
              }
              case "slice": {
                const exp = model.rangeError(op.a, op.n, true);
                const got = outcome(() => mem.slice(op.a, op.n));
                if (exp) expect(got).toEqual({ ok: false, code: exp });
                else {
                  expect(got.ok).toBe(true);
                  const v = (got as { value: Uint8Array }).value;
                  expect(v.length).toBe(op.n);
                  for (let i = 0; i < op.n; i++) expect(v[i]).toBe(model.bytes.get(op.a + i));
                }
                break;
              }
              case "atomicLoad":
              case "atomicStore": {
                let exp = model.rangeError(op.a, op.w, true);
                if (!exp) {
                  const r = model.regionOf(op.a) as Layout["regions"][number];
                  const host = GUARD + r.skew + (op.a - r.start);
                  if (op.a % op.w !== 0 || host % op.w !== 0) exp = "Unaligned";
                }
                const raw = op.k === "atomicStore" ? op.v : 0;
                const v = op.w === 2 ? raw : raw * 65537;
                const got = outcome(() =>
                  op.k === "atomicLoad"
                    ? op.w === 2
                      ? mem.loadU16Acquire(op.a)
                      : mem.loadU32Acquire(op.a)
                    : op.w === 2
                      ? mem.storeU16Release(op.a, v)
                      : mem.storeU32Release(op.a, v),
                );
                if (exp) expect(got).toEqual({ ok: false, code: exp });
                else if (op.k === "atomicLoad") expect(got).toEqual({ ok: true, value: Number(model.get(op.a, op.w)) });
                else {
                  expect(got.ok).toBe(true);
                  model.set(op.a, op.w, BigInt(v));
                }
                break;
              }
              case "words": {
                const d = new Uint32Array(op.words).fill(0x5a5a5a5a);
                const exp = model.rangeError(op.a, 4 * op.words);
                const got = outcome(() => mem.readU32s(op.a, d));
                if (exp) {
                  expect(got).toEqual({ ok: false, code: exp });
                  expect(d.every((w) => w === 0x5a5a5a5a)).toBe(true);
                } else {
                  expect(got.ok).toBe(true);
                  for (let i = 0; i < op.words; i++) expect(d[i]).toBe(Number(model.get(op.a + 4 * i, 4)));
                }
                break;
              }
              case "u64addr": {
                const exp = model.rangeError(op.a, 8);
                const got = outcome(() => mem.readU64AsAddress(op.a));
                if (exp) expect(got).toEqual({ ok: false, code: exp });
                else {
                  const v = model.get(op.a, 8);
                  if (v >= 1n << 52n) expect(got).toEqual({ ok: false, code: "AddressTooLarge" });
                  else expect(got).toEqual({ ok: true, value: Number(v) });
                }
                break;
              }
            }
            // checkRange agrees with the model for every access
            const n = "w" in op ? op.w : "n" in op ? op.n : op.k === "bulkWrite" ? op.data.length : op.k === "words" ? 4 * op.words : 1;
            expect(mem.checkRange(op.a, n)).toBe(model.rangeError(op.a, n) === undefined);
          }
          // nothing outside the regions was touched
          if (guarded) buffers.forEach((b, i) => {
            const r = layout.regions[i] as Layout["regions"][number];
            const u = new Uint8Array(b);
            for (let j = 0; j < GUARD + r.skew; j++) expect(u[j]).toBe(GUARD_BYTE);
            for (let j = GUARD + r.skew + r.size; j < u.length; j++) expect(u[j]).toBe(GUARD_BYTE);
          });
          // and the memory holds exactly the model's bytes
          const mismatches: number[] = [];
          for (const [a, b] of model.bytes) if (mem.readU8(a) !== b) mismatches.push(a);
          expect(mismatches).toEqual([]);
          } finally {
            close();
          }
        },
      ),
      { numRuns },
    );
}

const RUNS = Number(process.env["VM_MEMORY_FC_RUNS"] ?? 200);

describe("GuestMemory against a reference model", () => {
  it("GuestMemoryArrayBuffer: every access matches the model or throws the predicted GuestMemoryError", () => {
    checkAgainstModel(
      layoutArb(1, 64, 2 ** 52 - 0x400),
      (layout, buffers) => {
        const mem = GuestMemoryArrayBuffer.fromRanges(
          layout.regions.map((r, i) => ({ start: r.start, size: r.size, buffer: buffers[i] as SharedArrayBuffer, byteOffset: GUARD + r.skew })),
        );
        return { mem, close: () => mem.close() };
      },
      true,
      RUNS,
    );
  }, 600_000);
  it("GuestMemoryMmap: the same, over real mappings (an access outside one would throw RangeError)", () => {
    checkAgainstModel(
      layoutArb(4096, 2, 2 ** 52 - 0x4000),
      (layout) => {
        const mem = GuestMemoryMmap.fromRanges(layout.regions.map((r) => ({ start: r.start, size: r.size })), { backing: "anonymous" });
        return { mem, close: () => mem.close() };
      },
      false,
      Math.ceil(RUNS / 4),
    );
  }, 600_000);
  it("GuestMemoryArrayBuffer with the native bulk copy for every length: the model, and the guard bytes never touched", () => {
    const native = nativeBulkCopier();
    if (native === null) throw new Error("the vmm-sys-util addon does not load");
    const everyLength = { copy: native.copy, minReadLength: 1, minWriteLength: 1 };
    checkAgainstModel(
      layoutArb(1, 64, 2 ** 52 - 0x400),
      (layout, buffers) => {
        const mem = GuestMemoryArrayBuffer.fromRanges(
          layout.regions.map((r, i) => ({ start: r.start, size: r.size, buffer: buffers[i] as SharedArrayBuffer, byteOffset: GUARD + r.skew })),
          { bulkCopier: everyLength },
        );
        return { mem, close: () => mem.close() };
      },
      true,
      RUNS,
    );
  }, 600_000);
  it("GuestMemoryMmap with the native bulk copy for every length (the default takes longer copies than these): the same", () => {
    const native = nativeBulkCopier();
    if (native === null) throw new Error("the vmm-sys-util addon does not load");
    checkAgainstModel(
      layoutArb(4096, 2, 2 ** 52 - 0x4000),
      (layout) => {
        const mem = GuestMemoryMmap.fromRanges(layout.regions.map((r) => ({ start: r.start, size: r.size })), {
          backing: "anonymous",
          bulkCopier: { copy: native.copy, minReadLength: 1, minWriteLength: 1 },
        });
        return { mem, close: () => mem.close() };
      },
      false,
      Math.ceil(RUNS / 4),
    );
  }, 600_000);
});
