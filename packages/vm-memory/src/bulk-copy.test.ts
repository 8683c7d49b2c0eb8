// The bulk-copy seam: GuestMemory.read/write with and without the native copy, and what the
// backend does with a copier (the threshold, refusals, malformed options).
import { describe, expect, it } from "vitest";
import type { BulkCopier } from "./bulk-copy.js";
import { GuestMemoryError } from "./error.js";
import { GuestMemoryArrayBuffer } from "./guest-memory-array-buffer.js";
import type { GuestMemoryBase } from "./guest-memory-base.js";
import { GuestMemoryMmap } from "./guest-memory-mmap.js";
import { NATIVE_COPY_MIN_READ, NATIVE_COPY_MIN_WRITE, nativeBulkCopier } from "./native-copy.js";

function err(fn: () => unknown): GuestMemoryError {
  try {
    fn();
  } catch (e) {
    if (e instanceof GuestMemoryError) return e;
    throw e;
  }
  throw new Error("did not throw");
}

function pattern(n: number, seed = 1): Uint8Array {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i++) a[i] = (i * 13 + seed) & 0xff;
  return a;
}

/** A copier that records the lengths it was given and copies with `set`. */
function counting(minReadLength: number, minWriteLength: number): BulkCopier & { lengths: number[] } {
  const lengths: number[] = [];
  return {
    lengths,
    minReadLength,
    minWriteLength,
    copy: (dst, dOff, src, sOff, len) => {
      lengths.push(len);
      dst.set(src.subarray(sOff, sOff + len), dOff);
      return 0;
    },
  };
}

const native = nativeBulkCopier();

/** Two contiguous 64 KiB regions at 0x10000 and a third after a hole, with dirty tracking. */
const backends: Record<string, () => GuestMemoryBase & { close(): void }> = {
  "mmap, native (default)": () =>
    GuestMemoryMmap.fromRanges([{ start: 0x10000, size: 0x20000 }, { start: 0x40000, size: 0x10000 }], { dirtyTracking: true }),
  "mmap, bulkCopier null": () =>
    GuestMemoryMmap.fromRanges([{ start: 0x10000, size: 0x20000 }, { start: 0x40000, size: 0x10000 }], { dirtyTracking: true, bulkCopier: null }),
  "arraybuffer, no copier (default)": () =>
    GuestMemoryArrayBuffer.fromRanges(
      [{ start: 0x10000, size: 0x10000 }, { start: 0x20000, size: 0x10000 }, { start: 0x40000, size: 0x10000 }],
      { dirtyTracking: true },
    ),
  "arraybuffer, native": () =>
    GuestMemoryArrayBuffer.fromRanges(
      [{ start: 0x10000, size: 0x10000 }, { start: 0x20000, size: 0x10000 }, { start: 0x40000, size: 0x10000 }],
      { dirtyTracking: true, bulkCopier: native },
    ),
};

describe("bulk copies", () => {
  it("the native copier loads here, and GuestMemoryMmap uses it by default", () => {
    expect(native).not.toBeNull();
    expect(native?.minReadLength).toBe(NATIVE_COPY_MIN_READ);
    expect(native?.minWriteLength).toBe(NATIVE_COPY_MIN_WRITE);
    expect(nativeBulkCopier()).toBe(native);
    const m = GuestMemoryMmap.fromRanges([{ start: 0, size: 0x1000 }]);
    expect(m.bulkCopier).toBe(native);
    expect(GuestMemoryMmap.fromTransferable(m.toTransferable()).bulkCopier).toBe(native);
    expect(GuestMemoryMmap.fromTransferable(m.toTransferable(), { bulkCopier: null }).bulkCopier).toBeNull();
    m.close();
    const a = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x1000 }]);
    expect(a.bulkCopier).toBeNull();
    expect(GuestMemoryArrayBuffer.fromTransferable(a.toTransferable(), { bulkCopier: native }).bulkCopier).toBe(native);
  });

  for (const [name, make] of Object.entries(backends)) {
    it(`${name}: read/write around the threshold, across a region boundary, dirty pages marked`, () => {
      const mem = make();
      try {
        for (const n of [0, 1, NATIVE_COPY_MIN_READ - 1, NATIVE_COPY_MIN_READ, NATIVE_COPY_MIN_WRITE - 1, NATIVE_COPY_MIN_WRITE, 4096, 0x10000 + 77]) {
          for (const addr of [0x10000, 0x20000 - 300, 0x2ff00 - n > 0x10000 ? 0x2ff00 - n : 0x10000]) {
            const data = pattern(n, n + addr);
            mem.clearDirty();
            mem.write(addr, data);
            const back = new Uint8Array(n);
            mem.read(addr, back);
            expect(back).toEqual(data);
            if (n > 0) {
              const pages = [...mem.dirtyPages()];
              expect(pages[0]).toBe(Math.floor((addr - 0x10000) / 4096) * 4096 + 0x10000);
              expect(pages.at(-1)).toBe(Math.floor((addr + n - 1 - 0x10000) / 4096) * 4096 + 0x10000);
            }
          }
        }
        // Into and out of a Buffer, at an offset inside a larger buffer (byteOffset != 0).
        const big = Buffer.alloc(8192, 9);
        const view = big.subarray(1000, 1000 + 4096);
        mem.write(0x40000, pattern(4096, 5));
        mem.read(0x40000, view);
        expect(Buffer.compare(view, pattern(4096, 5))).toBe(0);
        expect(big[999]).toBe(9);
        expect(big[5096]).toBe(9);
      } finally {
        mem.close();
      }
    });

    it(`${name}: ranges that are not backed throw and change nothing`, () => {
      const mem = make();
      try {
        mem.write(0x2f000, pattern(0x1000, 3));
        const before = new Uint8Array(0x1000);
        mem.read(0x2f000, before);
        // Runs past the second region into the hole: OutOfBounds, nothing written.
        expect(err(() => mem.write(0x2f000, pattern(0x2000, 4))).code).toBe("OutOfBounds");
        const after = new Uint8Array(0x1000);
        mem.read(0x2f000, after);
        expect(after).toEqual(before);
        expect(err(() => mem.read(0x30000, new Uint8Array(4096))).code).toBe("Hole");
        expect(err(() => mem.read(0x4f000, new Uint8Array(0x2000))).code).toBe("OutOfBounds");
      } finally {
        mem.close();
      }
    });

    it(`${name}: reading guest memory into a view of guest memory (overlapping) behaves as memmove`, () => {
      const mem = make();
      try {
        const init = pattern(0x2000, 11);
        mem.write(0x10000, init);
        const view = mem.slice(0x10100, 0x1000);
        mem.read(0x10000, view);
        const got = new Uint8Array(0x2000);
        mem.read(0x10000, got);
        const want = Uint8Array.from(init).copyWithin(0x100, 0, 0x1000);
        expect(got).toEqual(want);
      } finally {
        mem.close();
      }
    });
  }

  it("hands the copier exactly the reads of minReadLength and the writes of minWriteLength bytes and up, one per region piece", () => {
    const c = counting(512, 1024);
    const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x1000 }, { start: 0x1000, size: 0x1000 }], { bulkCopier: c });
    mem.write(0, new Uint8Array(1023));
    mem.read(0, new Uint8Array(511));
    expect(c.lengths).toEqual([]);
    mem.write(0, new Uint8Array(1024));
    mem.read(0, new Uint8Array(512));
    mem.read(0x100, new Uint8Array(4096 - 0x100));
    // Across the boundary: 0x1000 - 0xc00 = 1024 bytes in the first region, 200 in the second (set).
    mem.write(0xc00, new Uint8Array(1224));
    // 512 + 512 (both native), then 600 + 400 (a write: both below 1024).
    mem.read(0xe00, new Uint8Array(1024));
    mem.write(0xd80, new Uint8Array(1000));
    expect(c.lengths).toEqual([1024, 512, 0xf00, 1024, 512, 512]);
  });

  it("a copier that refuses: InvalidArgument naming its status, guest memory unchanged", () => {
    const refusing: BulkCopier = { minReadLength: 1, minWriteLength: 1, copy: () => -34 };
    const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x1000 }, { start: 0x1000, size: 0x1000 }], { bulkCopier: refusing });
    const e = err(() => mem.write(0x10, pattern(64)));
    expect(e.code).toBe("InvalidArgument");
    expect(e.message).toContain("status -34");
    expect(err(() => mem.read(0x10, new Uint8Array(64))).code).toBe("InvalidArgument");
    expect(mem.regions[0]?.bytes.every((b) => b === 0)).toBe(true);
  });

  it("the native copier refuses a non-Uint8Array source before writing any piece of a cross-region write", () => {
    const copier = { copy: (native as BulkCopier).copy, minReadLength: 1, minWriteLength: 1 };
    const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x1000 }, { start: 0x1000, size: 0x1000 }], { bulkCopier: copier });
    // Only reachable past the types: an Int8Array is not a Uint8Array.
    const src = new Int8Array(0x800).fill(5) as unknown as Uint8Array;
    expect(err(() => mem.write(0xc00, src)).code).toBe("InvalidArgument");
    expect(err(() => mem.write(0x100, src)).code).toBe("InvalidArgument");
    expect(mem.regions[0]?.bytes.every((b) => b === 0)).toBe(true);
    expect(mem.regions[1]?.bytes.every((b) => b === 0)).toBe(true);
  });

  it("refuses a malformed copier when the memory is built", () => {
    const ranges = [{ start: 0, size: 0x1000 }];
    const c = () => 0;
    for (const bad of [{}, { copy: c }, { copy: c, minReadLength: 1 }, { copy: c, minReadLength: 0, minWriteLength: 1 }, { copy: c, minReadLength: 1, minWriteLength: 1.5 }, { copy: 1, minReadLength: 512, minWriteLength: 512 }, 5]) {
      expect(err(() => GuestMemoryArrayBuffer.fromRanges(ranges, { bulkCopier: bad as unknown as BulkCopier })).code).toBe("InvalidArgument");
    }
    expect(err(() => GuestMemoryMmap.fromRanges([{ start: 0, size: 0x1000 }], { bulkCopier: {} as BulkCopier })).code).toBe("InvalidArgument");
  });
});
