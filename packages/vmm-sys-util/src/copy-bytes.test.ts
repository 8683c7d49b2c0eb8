// copyBytes / nativeCopyBytes: the native memmove between Uint8Arrays (guest memory is a
// SharedArrayBuffer). Every case checks the bytes, not only that nothing threw.
import { constants } from "node:os";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { MmapRegion, VmmSysError, copyBytes, nativeCopyBytes, setNativeBinding } from "./index.js";
import { type NativeBinding, native } from "./native.js";

const { EINVAL, ERANGE } = constants.errno;

// ES2024 resizable buffers (in Node 20's V8 11.3; the project's lib is older).
interface ResizableArrayBuffer extends ArrayBuffer {
  resize(n: number): void;
}
interface GrowableSharedArrayBuffer extends SharedArrayBuffer {
  grow(n: number): void;
}
const RAB = ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ResizableArrayBuffer;
const GSAB = SharedArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => GrowableSharedArrayBuffer;

function pattern(n: number, seed = 1): Uint8Array {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i++) a[i] = (i * 31 + seed) & 0xff;
  return a;
}

function codeOf(fn: () => void): string | undefined {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof VmmSysError)) throw e;
    return e.code;
  }
  return undefined;
}

describe("copyBytes", () => {
  it("copies between a SharedArrayBuffer and a Buffer, both ways, at offsets", () => {
    const guest = new Uint8Array(new SharedArrayBuffer(0x10000));
    guest.set(pattern(0x10000));
    const buf = Buffer.alloc(8192, 0xee);
    copyBytes(buf, 100, guest, 0x4000, 4096);
    expect(Buffer.compare(buf.subarray(100, 4196), guest.subarray(0x4000, 0x5000))).toBe(0);
    expect(buf[99]).toBe(0xee);
    expect(buf[4196]).toBe(0xee);
    const out = pattern(3000, 7);
    copyBytes(guest, 0x8001, out, 0, 3000);
    expect(guest.subarray(0x8001, 0x8001 + 3000)).toEqual(out);
    expect(guest[0x8000]).toBe(pattern(0x10000)[0x8000]);
    expect(guest[0x8001 + 3000]).toBe(pattern(0x10000)[0x8001 + 3000]);
  });

  it("counts offsets from each view's start (byteOffset added), also for a mapping made by the addon", () => {
    const r = MmapRegion.anonymous(0x4000);
    const whole = new Uint8Array(r.buffer);
    whole.set(pattern(0x4000));
    const view = whole.subarray(0x1000, 0x3000);
    const dst = new Uint8Array(new ArrayBuffer(0x2000)).subarray(0x100);
    copyBytes(dst, 0x10, view, 0x20, 0x800);
    expect(dst.subarray(0x10, 0x810)).toEqual(whole.subarray(0x1020, 0x1820));
    r.close();
  });

  it("behaves as memmove when the ranges overlap, forwards and backwards", () => {
    for (const [from, to] of [
      [0, 100],
      [100, 0],
      [7, 8],
      [8, 7],
    ] as const) {
      const a = pattern(5000);
      const expected = Uint8Array.from(a).copyWithin(to, from, from + 4096);
      copyBytes(a, to, a, from, 4096);
      expect(a).toEqual(expected);
    }
  });

  it("copies small on-heap typed arrays", () => {
    const a = new Uint8Array(16);
    copyBytes(a, 4, Uint8Array.from([1, 2, 3]), 0, 3);
    expect([...a.subarray(0, 8)]).toEqual([0, 0, 0, 0, 1, 2, 3, 0]);
  });

  it("zero length copies nothing, at any in-bounds offset including the end", () => {
    const a = pattern(64);
    const b = new Uint8Array(64);
    copyBytes(b, 64, a, 64, 0);
    copyBytes(b, 0, a, 0, 0);
    expect(b.every((x) => x === 0)).toBe(true);
    expect(codeOf(() => copyBytes(b, 65, a, 0, 0))).toBe("OutOfBounds");
  });

  it("refuses ranges past either view with OutOfBounds and copies nothing", () => {
    const src = pattern(4096);
    const dst = new Uint8Array(4096);
    expect(codeOf(() => copyBytes(dst, 1, src, 0, 4096))).toBe("OutOfBounds");
    expect(codeOf(() => copyBytes(dst, 0, src, 1, 4096))).toBe("OutOfBounds");
    expect(codeOf(() => copyBytes(dst, 4096, src, 0, 1))).toBe("OutOfBounds");
    expect(codeOf(() => copyBytes(dst.subarray(0, 100), 0, src, 0, 101))).toBe("OutOfBounds");
    expect(dst.every((x) => x === 0)).toBe(true);
  });

  it("refuses huge, negative, fractional and non-number sizes with InvalidArgument", () => {
    const a = new Uint8Array(16);
    for (const bad of [-1, 1.5, Number.NaN, Infinity, -Infinity, 2 ** 53, 2 ** 64, "1", 1n, null, undefined, {}]) {
      expect(codeOf(() => copyBytes(a, bad as number, a, 0, 1))).toBe("InvalidArgument");
      expect(codeOf(() => copyBytes(a, 0, a, bad as number, 1))).toBe("InvalidArgument");
      expect(codeOf(() => copyBytes(a, 0, a, 0, bad as number))).toBe("InvalidArgument");
    }
    // In range as numbers, far past any view: OutOfBounds, never a wrapped pointer.
    expect(codeOf(() => copyBytes(a, 0, a, 0, 2 ** 53 - 1))).toBe("OutOfBounds");
    expect(codeOf(() => copyBytes(a, 2 ** 53 - 1, a, 0, 1))).toBe("OutOfBounds");
    expect(codeOf(() => copyBytes(a, 2 ** 52, a, 2 ** 52, 2 ** 52))).toBe("OutOfBounds");
  });

  it("refuses anything but a Uint8Array with InvalidArgument", () => {
    const u8 = new Uint8Array(16);
    for (const bad of [new Uint16Array(8), new Int8Array(16), new Uint8ClampedArray(16), new DataView(new ArrayBuffer(16)), new ArrayBuffer(16), new SharedArrayBuffer(16), [1, 2], { length: 16 }, null, "abc"]) {
      expect(codeOf(() => copyBytes(bad as Uint8Array, 0, u8, 0, 1))).toBe("InvalidArgument");
      expect(codeOf(() => copyBytes(u8, 0, bad as Uint8Array, 0, 1))).toBe("InvalidArgument");
    }
  });

  it("a detached buffer's view has length 0: OutOfBounds for any byte, nothing for zero", () => {
    const ab = new ArrayBuffer(4096);
    const view = new Uint8Array(ab);
    structuredClone(ab, { transfer: [ab] });
    expect(ab.byteLength).toBe(0);
    const other = pattern(4096);
    expect(codeOf(() => copyBytes(view, 0, other, 0, 1))).toBe("OutOfBounds");
    expect(codeOf(() => copyBytes(other, 0, view, 0, 4096))).toBe("OutOfBounds");
    copyBytes(view, 0, other, 0, 0);
    expect(other).toEqual(pattern(4096));
  });

  it("follows a resizable ArrayBuffer that shrinks and a growable SharedArrayBuffer that grows", () => {
    const rab = new RAB(8192, { maxByteLength: 16384 });
    const fixed = new Uint8Array(rab, 4096, 4096);
    const tracking = new Uint8Array(rab);
    const src = pattern(8192);
    copyBytes(fixed, 0, src, 0, 4096);
    expect(fixed).toEqual(src.subarray(0, 4096));
    rab.resize(6000);
    // The fixed-length view now runs past the buffer: length 0, refused.
    expect(fixed.length).toBe(0);
    expect(codeOf(() => copyBytes(fixed, 0, src, 0, 1))).toBe("OutOfBounds");
    expect(codeOf(() => copyBytes(tracking, 0, src, 0, 6001))).toBe("OutOfBounds");
    copyBytes(tracking, 0, src, 0, 6000);
    expect(tracking).toEqual(src.subarray(0, 6000));

    const gsab = new GSAB(4096, { maxByteLength: 8192 });
    const g = new Uint8Array(gsab);
    expect(codeOf(() => copyBytes(g, 4096, src, 0, 1))).toBe("OutOfBounds");
    gsab.grow(8192);
    copyBytes(g, 4096, src, 0, 4096);
    expect(g.subarray(4096)).toEqual(src.subarray(0, 4096));
  });

  it("matches a byte-by-byte model for random views, offsets and lengths (fast-check)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 3000 }),
        fc.integer({ min: 0, max: 3000 }),
        fc.integer({ min: 0, max: 3100 }),
        fc.integer({ min: 0, max: 3100 }),
        fc.integer({ min: 0, max: 3100 }),
        fc.boolean(),
        (dstLen, srcLen, dOff, sOff, len, shared) => {
          const dst = new Uint8Array(shared ? new SharedArrayBuffer(dstLen + 8) : new ArrayBuffer(dstLen + 8), 8, dstLen);
          const src = pattern(srcLen, dstLen);
          const before = Uint8Array.from(dst);
          const ok = dOff + len <= dstLen && sOff + len <= srcLen;
          const code = codeOf(() => copyBytes(dst, dOff, src, sOff, len));
          if (!ok) {
            expect(code).toBe("OutOfBounds");
            expect(dst).toEqual(before);
            return;
          }
          expect(code).toBeUndefined();
          for (let i = 0; i < dstLen; i++) {
            const want = i >= dOff && i < dOff + len ? src[sOff + i - dOff] : before[i];
            if (dst[i] !== want) expect(`byte ${i}: ${dst[i]}`).toBe(`byte ${i}: ${want}`);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("nativeCopyBytes (the addon's function)", () => {
  afterEach(() => setNativeBinding(undefined));

  it("returns 0, -EINVAL or -ERANGE and never throws, whatever it is given", () => {
    const raw = nativeCopyBytes();
    const a = pattern(4096);
    const b = new Uint8Array(4096);
    expect(raw(b, 0, a, 0, 4096)).toBe(0);
    expect(b).toEqual(a);
    expect(raw(b, 1, a, 0, 4096)).toBe(-ERANGE);
    expect(raw(b, 0, a, 0, -1)).toBe(-EINVAL);
    expect(raw(b, 0, a, 0, 2 ** 53)).toBe(-EINVAL);
    expect((raw as (...args: unknown[]) => number)(b, 0, a, 0)).toBe(-EINVAL);
    expect((raw as (...args: unknown[]) => number)()).toBe(-EINVAL);
    expect(raw(new Uint16Array(8) as unknown as Uint8Array, 0, a, 0, 1)).toBe(-EINVAL);
    const junk = fc.oneof(fc.anything(), fc.constantFrom(-1, 1.5, 2 ** 53, Number.NaN, 4096, 0, 1n), fc.integer(), fc.constant(a), fc.constant(b));
    fc.assert(
      fc.property(junk, junk, junk, junk, junk, (d, dOff, s, sOff, len) => {
        const r = (raw as (...args: unknown[]) => number)(d, dOff, s, sOff, len);
        expect([0, -EINVAL, -ERANGE]).toContain(r);
      }),
      { numRuns: 500 },
    );
  });

  it("checks against the view's real bounds, not a JS-visible length property", () => {
    const raw = nativeCopyBytes();
    const small = new Uint8Array(16);
    Object.defineProperty(small, "length", { value: 1 << 20 });
    expect(raw(small, 0, new Uint8Array(4096), 0, 4096)).toBe(-ERANGE);
    expect(codeOf(() => copyBytes(small, 0, new Uint8Array(4096), 0, 4096))).toBe("OutOfBounds");
  });

  it("copyBytes follows a binding set with setNativeBinding (and maps its statuses)", () => {
    const real = native();
    const calls: number[] = [];
    const fake: NativeBinding = { ...real, copyBytes: (_d, _o, _s, _so, len) => (calls.push(len), -ERANGE) };
    setNativeBinding(fake);
    expect(codeOf(() => copyBytes(new Uint8Array(8), 0, new Uint8Array(8), 0, 8))).toBe("OutOfBounds");
    setNativeBinding({ ...real, copyBytes: () => -EINVAL });
    expect(codeOf(() => copyBytes(new Uint8Array(8), 0, new Uint8Array(8), 0, 8))).toBe("InvalidArgument");
    setNativeBinding({ ...real, copyBytes: () => -5 });
    expect(codeOf(() => copyBytes(new Uint8Array(8), 0, new Uint8Array(8), 0, 8))).toBe("EIO");
    setNativeBinding(undefined);
    const b = new Uint8Array(8);
    copyBytes(b, 0, pattern(8), 0, 8);
    expect(b).toEqual(pattern(8));
    expect(calls).toEqual([8]);
  });
});
