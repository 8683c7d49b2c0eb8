import { describe, expect, it } from "vitest";
import { GuestMemoryArrayBuffer } from "./guest-memory-array-buffer.js";
import { GuestMemoryError, type GuestMemoryErrorCode } from "./error.js";

function code(fn: () => unknown): GuestMemoryErrorCode | "none" | "other" {
  try {
    fn();
    return "none";
  } catch (e) {
    return e instanceof GuestMemoryError ? e.code : "other";
  }
}

/** Two contiguous regions [0x1000, 0x3000) split at 0x2000, a hole, then [0x5000, 0x6000). */
function mem3(dirtyTracking = false): GuestMemoryArrayBuffer {
  return GuestMemoryArrayBuffer.fromRanges(
    [
      { start: 0x2000, size: 0x1000 },
      { start: 0x1000, size: 0x1000 },
      { start: 0x5000, size: 0x1000 },
    ],
    { dirtyTracking },
  );
}

describe("GuestMemoryArrayBuffer construction", () => {
  it("sorts regions and sums sizes", () => {
    const m = mem3();
    expect(m.regions.map((r) => r.start)).toEqual([0x1000, 0x2000, 0x5000]);
    expect(m.regions.map((r) => r.end)).toEqual([0x2000, 0x3000, 0x6000]);
    expect(m.size).toBe(0x3000);
  });
  it("rejects overlapping regions", () => {
    expect(code(() => GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x2000 }, { start: 0x1fff, size: 1 }]))).toBe(
      "Overlap",
    );
  });
  it("rejects empty, negative, fractional regions", () => {
    expect(code(() => GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0 }]))).toBe("InvalidArgument");
    expect(code(() => GuestMemoryArrayBuffer.fromRanges([{ start: -1, size: 1 }]))).toBe("InvalidArgument");
    expect(code(() => GuestMemoryArrayBuffer.fromRanges([{ start: 0.5, size: 1 }]))).toBe("InvalidArgument");
  });
  it("rejects regions ending above 2^52", () => {
    expect(code(() => GuestMemoryArrayBuffer.fromRanges([{ start: 2 ** 52 - 1, size: 2 }]))).toBe("AddressTooLarge");
    // ending exactly at 2^52 is fine
    const m = GuestMemoryArrayBuffer.fromRanges([{ start: 2 ** 52 - 16, size: 16 }]);
    m.writeU64(2 ** 52 - 8, 7n);
    expect(m.readU64(2 ** 52 - 8)).toBe(7n);
    expect(code(() => m.readU64(2 ** 52 - 4))).toBe("OutOfBounds");
  });
  it("rejects a region that does not fit its buffer", () => {
    const buffer = new ArrayBuffer(0x1000);
    expect(code(() => GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x1000, buffer, byteOffset: 1 }]))).toBe(
      "InvalidArgument",
    );
  });
  it("can place several regions in one buffer", () => {
    const buffer = new SharedArrayBuffer(0x2000);
    const m = GuestMemoryArrayBuffer.fromRanges([
      { start: 0x10000, size: 0x1000, buffer, byteOffset: 0 },
      { start: 0x40000, size: 0x1000, buffer, byteOffset: 0x1000 },
    ]);
    m.writeU32(0x40004, 0x11223344);
    expect(new DataView(buffer).getUint32(0x1004, true)).toBe(0x11223344);
  });
});

describe("lookup", () => {
  const m = mem3();
  it("findRegion", () => {
    expect(m.findRegion(0x1000)?.start).toBe(0x1000);
    expect(m.findRegion(0x2fff)?.start).toBe(0x2000);
    expect(m.findRegion(0x3000)).toBeUndefined();
    expect(m.findRegion(0)).toBeUndefined();
    expect(m.findRegion(Number.NaN)).toBeUndefined();
    expect(m.findRegion(-5)).toBeUndefined();
  });
  it("checkRange spans contiguous regions, not holes", () => {
    expect(m.checkRange(0x1000, 0x2000)).toBe(true);
    expect(m.checkRange(0x1ff0, 0x20)).toBe(true);
    expect(m.checkRange(0x2ff0, 0x11)).toBe(false);
    expect(m.checkRange(0x3000, 0)).toBe(false);
    expect(m.checkRange(0x5000, 0x1000)).toBe(true);
    expect(m.checkRange(0x5000, 0x1001)).toBe(false);
    expect(m.checkRange(0x5000, -1)).toBe(false);
    expect(m.checkRange(0x5000, 0.5)).toBe(false);
    expect(m.checkRange(2 ** 60, 1)).toBe(false);
  });
});

describe("scalar access", () => {
  it("is little-endian", () => {
    const m = mem3();
    m.writeU64(0x1000, 0x0102030405060708n);
    expect(m.readU8(0x1000)).toBe(0x08);
    expect(m.readU16(0x1000)).toBe(0x0708);
    expect(m.readU32(0x1000)).toBe(0x05060708);
    expect(m.readU32(0x1004)).toBe(0x01020304);
    expect(m.readU64Split(0x1000)).toEqual({ lo: 0x05060708, hi: 0x01020304 });
    m.writeU16(0x1100, 0xbeef);
    expect([m.readU8(0x1100), m.readU8(0x1101)]).toEqual([0xef, 0xbe]);
    m.writeU32(0x1200, 0xffffffff);
    expect(m.readU32(0x1200)).toBe(0xffffffff);
    m.writeU8(0x1300, 0xff);
    expect(m.readU8(0x1300)).toBe(0xff);
    m.writeU64(0x1400, 0xffff_ffff_ffff_ffffn);
    expect(m.readU64(0x1400)).toBe(0xffff_ffff_ffff_ffffn);
  });
  it("spans two contiguous regions", () => {
    const m = mem3();
    m.writeU64(0x1ffc, 0x1122334455667788n);
    expect(m.readU64(0x1ffc)).toBe(0x1122334455667788n);
    expect(m.readU32(0x1ffc)).toBe(0x55667788);
    expect(m.readU32(0x2000)).toBe(0x11223344);
    m.writeU16(0x1fff, 0xabcd);
    expect(m.readU16(0x1fff)).toBe(0xabcd);
    expect(m.readU8(0x2000)).toBe(0xab);
    expect(m.readU64Split(0x1ffe)).toEqual({ lo: 0x33abcd66, hi: 0x1122 });
  });
  it("throws Hole for an address in no region", () => {
    const m = mem3();
    for (const a of [0, 0xfff, 0x3000, 0x4fff, 0x6000, 2 ** 52 - 1]) {
      expect(code(() => m.readU8(a))).toBe("Hole");
      expect(code(() => m.writeU32(a, 1))).toBe("Hole");
    }
  });
  it("throws OutOfBounds when running past backed memory, and writes nothing", () => {
    const m = mem3();
    m.writeU32(0x2ffc, 0x01020304);
    expect(code(() => m.readU64(0x2ffc))).toBe("OutOfBounds");
    expect(code(() => m.writeU64(0x2ffc, 0xffff_ffff_ffff_ffffn))).toBe("OutOfBounds");
    expect(m.readU32(0x2ffc)).toBe(0x01020304);
    expect(code(() => m.readU16(0x5fff))).toBe("OutOfBounds");
    expect(code(() => m.writeU16(0x5fff, 0xffff))).toBe("OutOfBounds");
    expect(m.readU8(0x5fff)).toBe(0);
  });
  it("rejects malformed addresses", () => {
    const m = mem3();
    expect(code(() => m.readU8(2 ** 52))).toBe("AddressTooLarge");
    expect(code(() => m.readU8(2 ** 64))).toBe("AddressTooLarge");
    expect(code(() => m.readU8(Number.POSITIVE_INFINITY))).toBe("AddressTooLarge");
    expect(code(() => m.readU8(-1))).toBe("InvalidArgument");
    expect(code(() => m.readU8(Number.NaN))).toBe("InvalidArgument");
    // a fractional address inside a region must not be truncated
    m.readU8(0x1000); // prime the last-region cache
    expect(code(() => m.readU16(4096.5))).toBe("InvalidArgument");
    expect(code(() => m.writeU16(4096.5, 1))).toBe("InvalidArgument");
    expect(code(() => m.slice(4096.5, 1))).toBe("InvalidArgument");
    expect(code(() => m.read(4096.5, new Uint8Array(4)))).toBe("InvalidArgument");
  });
  it("refuses non-number addresses on every path, never coercing them (a string or null from a restored JSON)", () => {
    const m = mem3(true);
    m.write(0x1010, new Uint8Array([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]));
    m.clearDirty();
    for (const bad of [null, true, "4112", "0x1010", [0x1010], { valueOf: () => 0x1010 }] as unknown as number[]) {
      m.readU8(0x1000); // prime the last-region cache: the fast paths are the ones that coerced
      const ops: [string, () => unknown][] = [
        ["readU8", () => m.readU8(bad)],
        ["readU16", () => m.readU16(bad)],
        ["readU32", () => m.readU32(bad)],
        ["readU64", () => m.readU64(bad)],
        ["readU64Split", () => m.readU64Split(bad)],
        ["readU64AsAddress", () => m.readU64AsAddress(bad)],
        ["read", () => m.read(bad, new Uint8Array(2))],
        ["slice", () => m.slice(bad, 2)],
        ["loadU16Acquire", () => m.loadU16Acquire(bad)],
        ["loadU32Acquire", () => m.loadU32Acquire(bad)],
        ["write", () => m.write(bad, new Uint8Array([1]))],
        ["storeU16Release", () => m.storeU16Release(bad, 1)],
        ["storeU32Release", () => m.storeU32Release(bad, 1)],
        ["writeU8", () => m.writeU8(bad, 1)],
        ["writeU16", () => m.writeU16(bad, 1)],
        ["writeU32", () => m.writeU32(bad, 1)],
        ["writeU64", () => m.writeU64(bad, 1n)],
      ];
      for (const [name, op] of ops) expect([name, JSON.stringify(bad), code(op)]).toEqual([name, JSON.stringify(bad), "InvalidArgument"]);
    }
    expect(m.readU64(0x1010)).toBe(0x8877665544332211n);
    expect(m.readU64(0x1000)).toBe(0n);
    expect([...m.dirtyPages()]).toEqual([]);
  });
  it("rejects values out of the type's range (never truncates)", () => {
    const m = mem3();
    expect(code(() => m.writeU8(0x1000, 256))).toBe("InvalidArgument");
    expect(code(() => m.writeU8(0x1000, -1))).toBe("InvalidArgument");
    expect(code(() => m.writeU16(0x1000, 0x10000))).toBe("InvalidArgument");
    expect(code(() => m.writeU16(0x1000, 1.5))).toBe("InvalidArgument");
    expect(code(() => m.writeU32(0x1000, 2 ** 32))).toBe("InvalidArgument");
    expect(code(() => m.writeU32(0x1000, Number.NaN))).toBe("InvalidArgument");
    expect(code(() => m.writeU64(0x1000, 1n << 64n))).toBe("InvalidArgument");
    expect(code(() => m.writeU64(0x1000, -1n))).toBe("InvalidArgument");
    expect(code(() => m.storeU16Release(0x1000, 0x10000))).toBe("InvalidArgument");
    expect(code(() => m.storeU32Release(0x1000, -1))).toBe("InvalidArgument");
    expect(m.readU64(0x1000)).toBe(0n);
  });
  it("readU64AsAddress refuses values at or above 2^52", () => {
    const m = mem3();
    m.writeU64(0x1000, (1n << 52n) - 1n);
    expect(m.readU64AsAddress(0x1000)).toBe(2 ** 52 - 1);
    m.writeU64(0x1000, 1n << 52n);
    expect(code(() => m.readU64AsAddress(0x1000))).toBe("AddressTooLarge");
    m.writeU64(0x1000, 0xffff_ffff_ffff_ffffn);
    expect(code(() => m.readU64AsAddress(0x1000))).toBe("AddressTooLarge");
    m.writeU64(0x1ffc, 0x000f_ffff_0000_0001n);
    expect(m.readU64AsAddress(0x1ffc)).toBe(0x000f_ffff_0000_0001);
  });
});

describe("bulk access", () => {
  it("read/write within one region", () => {
    const m = mem3();
    m.write(0x5010, Uint8Array.of(1, 2, 3));
    const d = new Uint8Array(5);
    m.read(0x500f, d);
    expect([...d]).toEqual([0, 1, 2, 3, 0]);
  });
  it("read/write across contiguous regions", () => {
    const m = mem3();
    const src = Uint8Array.from({ length: 0x2000 }, (_, i) => i & 0xff);
    m.write(0x1000, src);
    const d = new Uint8Array(0x2000);
    m.read(0x1000, d);
    expect(d).toEqual(src);
  });
  it("is all-or-nothing", () => {
    const m = mem3();
    expect(code(() => m.write(0x2f00, new Uint8Array(0x101).fill(9)))).toBe("OutOfBounds");
    expect(m.readU8(0x2f00)).toBe(0);
    const d = new Uint8Array(0x101).fill(7);
    expect(code(() => m.read(0x2f00, d))).toBe("OutOfBounds");
    expect(d.every((b) => b === 7)).toBe(true);
  });
  it("zero-length accesses need a backed address", () => {
    const m = mem3();
    m.read(0x1000, new Uint8Array(0));
    m.write(0x2fff, new Uint8Array(0));
    expect(code(() => m.read(0x3000, new Uint8Array(0)))).toBe("Hole");
  });
});

describe("slice", () => {
  it("is a live view inside one region", () => {
    const m = mem3();
    const v = m.slice(0x1010, 4);
    v.set([1, 2, 3, 4]);
    expect(m.readU32(0x1010)).toBe(0x04030201);
    m.writeU8(0x1010, 9);
    expect(v[0]).toBe(9);
  });
  it("refuses to span regions, even contiguous ones", () => {
    const m = mem3();
    expect(code(() => m.slice(0x1ffe, 4))).toBe("OutOfBounds");
    expect(code(() => m.slice(0x3000, 1))).toBe("Hole");
    expect(code(() => m.slice(0x1000, -1))).toBe("InvalidArgument");
    expect(code(() => m.slice(0x1000, 1.5))).toBe("InvalidArgument");
    expect(m.slice(0x1000, 0x1000).length).toBe(0x1000);
  });
});

describe("atomics", () => {
  it("load/store u16 and u32", () => {
    const m = mem3();
    m.storeU16Release(0x5002, 0xfffe);
    expect(m.loadU16Acquire(0x5002)).toBe(0xfffe);
    expect(m.readU16(0x5002)).toBe(0xfffe);
    m.storeU32Release(0x5004, 0x89abcdef);
    expect(m.loadU32Acquire(0x5004)).toBe(0x89abcdef);
    expect(m.readU32(0x5004)).toBe(0x89abcdef);
  });
  it("requires natural alignment", () => {
    const m = mem3();
    expect(code(() => m.loadU16Acquire(0x5001))).toBe("Unaligned");
    expect(code(() => m.storeU16Release(0x5001, 1))).toBe("Unaligned");
    expect(code(() => m.loadU32Acquire(0x5002))).toBe("Unaligned");
    expect(code(() => m.storeU32Release(0x5006, 1))).toBe("Unaligned");
    expect(m.readU64(0x5000)).toBe(0n);
  });
  it("checks host alignment too", () => {
    const buffer = new SharedArrayBuffer(0x20);
    const m = GuestMemoryArrayBuffer.fromRanges([{ start: 0x1000, size: 0x10, buffer, byteOffset: 1 }]);
    expect(code(() => m.loadU16Acquire(0x1000))).toBe("Unaligned");
    expect(m.readU16(0x1000)).toBe(0);
  });
  it("works on non-shared buffers", () => {
    const m = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x100 }], { shared: false });
    m.storeU16Release(0x10, 5);
    expect(m.loadU16Acquire(0x10)).toBe(5);
  });
  it("throws range errors", () => {
    const m = mem3();
    expect(code(() => m.loadU16Acquire(0x3000))).toBe("Hole");
    expect(code(() => m.loadU32Acquire(0x6000))).toBe("Hole");
  });
});

describe("close", () => {
  it("makes every access throw Closed", () => {
    const m = mem3();
    m.readU8(0x1000);
    m.close();
    expect(m.isClosed).toBe(true);
    expect(m.regions).toEqual([]);
    expect(code(() => m.readU8(0x1000))).toBe("Closed");
    expect(code(() => m.loadU16Acquire(0x1000))).toBe("Closed");
    expect(m.checkRange(0x1000, 1)).toBe(false);
  });
});

describe("dirty tracking through the memory", () => {
  it("marks pages on every write path", () => {
    const m = mem3(true);
    expect(m.dirtyTracking).toBe(true);
    m.writeU8(0x1000, 1);
    m.writeU64(0x1ffc, 1n); // spans 0x1000 page of region 1 and 0x2000 page of region 2
    m.write(0x5000, new Uint8Array(1));
    m.storeU16Release(0x5ffe, 1);
    expect([...m.dirtyPages()]).toEqual([0x1000, 0x2000, 0x5000]);
    m.clearDirty();
    expect([...m.dirtyPages()]).toEqual([]);
    m.markDirty(0x1000, 0x1001);
    expect([...m.dirtyPages()]).toEqual([0x1000, 0x2000]);
  });
  it("markDirty inside the last-hit region (the fast path) marks, and checks its range as the slow path does", () => {
    const m = mem3(true);
    m.writeU8(0x5000, 1); // the last hit is now the region at 0x5000
    m.clearDirty();
    m.markDirty(0x5800, 0x10);
    expect([...m.dirtyPages()]).toEqual([0x5000]);
    m.markDirty(0x5000, 1);
    expect([...m.dirtyPages()]).toEqual([0x5000]);
    for (const [addr, len] of [[0x5800, -1], [0x5800 + 0.5, 1], [0x5800, 1.5], [0x5800, NaN], [-1, 1], [0x5800, "16" as unknown as number]] as const) {
      expect(code(() => m.markDirty(addr, len))).toBe("InvalidArgument");
    }
    expect(code(() => m.markDirty(0x5ff0, 0x20))).toBe("OutOfBounds"); // past the region's end: the slow path says so
    expect([...m.dirtyPages()]).toEqual([0x5000]);
    const plain = mem3(false);
    plain.writeU8(0x5000, 1);
    plain.markDirty(0x5800, 0x10); // no bitmap: nothing to mark, no error
    expect(plain.dirtyTracking).toBe(false);
  });
  it("reads do not mark", () => {
    const m = mem3(true);
    m.readU64(0x1000);
    m.read(0x1000, new Uint8Array(0x2000));
    m.loadU32Acquire(0x5000);
    expect([...m.dirtyPages()]).toEqual([]);
  });
  it("failed writes do not mark", () => {
    const m = mem3(true);
    expect(code(() => m.write(0x2fff, new Uint8Array(2)))).toBe("OutOfBounds");
    expect(code(() => m.writeU16(0x1000, -1))).toBe("InvalidArgument");
    expect([...m.dirtyPages()]).toEqual([]);
  });
});
