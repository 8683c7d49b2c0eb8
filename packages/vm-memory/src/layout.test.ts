import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { GuestMemoryError } from "./error.js";
import { GuestMemoryArrayBuffer } from "./guest-memory-array-buffer.js";
import { defineLayout, readObj, writeObj } from "./layout.js";

// struct virtq_desc, virtio 1.2 section 2.7.5
const VirtqDesc = defineLayout("virtq_desc", 16, {
  addr: { type: "addr", offset: 0 },
  len: { type: "u32", offset: 8 },
  flags: { type: "u16", offset: 12 },
  next: { type: "u16", offset: 14 },
});

const Mixed = defineLayout("mixed", 24, {
  a: { type: "u8", offset: 0 },
  tag: { type: "bytes", offset: 1, length: 3 },
  raw: { type: "u64", offset: 8 },
  b: { type: "u32", offset: 16 },
  // bytes 20..23 are padding
});

function code(fn: () => unknown): string {
  try {
    fn();
    return "none";
  } catch (e) {
    return e instanceof GuestMemoryError ? e.code : "other";
  }
}

describe("defineLayout", () => {
  it("rejects fields outside the layout, overlaps, bad sizes and types", () => {
    expect(code(() => defineLayout("x", 4, { a: { type: "u64", offset: 0 } }))).toBe("InvalidArgument");
    expect(code(() => defineLayout("x", 8, { a: { type: "u32", offset: 0 }, b: { type: "u16", offset: 3 } }))).toBe("InvalidArgument");
    expect(code(() => defineLayout("x", 0, {}))).toBe("InvalidArgument");
    expect(code(() => defineLayout("x", 8, { a: { type: "u8", offset: -1 } }))).toBe("InvalidArgument");
    expect(code(() => defineLayout("x", 8, { a: { type: "bytes", offset: 0, length: 0 } }))).toBe("InvalidArgument");
    expect(code(() => defineLayout("x", 8, { a: { type: "f32" as "u32", offset: 0 } }))).toBe("InvalidArgument");
  });
  it("is frozen", () => {
    expect(Object.isFrozen(VirtqDesc)).toBe(true);
  });
});

describe("readObj / writeObj", () => {
  it("round-trips a virtq_desc, little-endian", () => {
    const m = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x1000 }]);
    writeObj(m, 0x100, VirtqDesc, { addr: 0x000f_0000_1234_5678, len: 0x200, flags: 3, next: 7 });
    expect(m.readU32(0x100)).toBe(0x12345678);
    expect(m.readU32(0x104)).toBe(0x000f0000);
    expect(m.readU16(0x10e)).toBe(7);
    const d = readObj(m, 0x100, VirtqDesc);
    expect(d).toEqual({ addr: 0x000f_0000_1234_5678, len: 0x200, flags: 3, next: 7 });
    const n: number = d.addr; // typed as number
    const l: number = d.len;
    expect(l).toBe(0x200);
    expect(n).toBe(d.addr);
  });
  it("refuses an addr field at or above 2^52 read from the guest", () => {
    const m = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x1000 }]);
    m.writeU64(0x100, 1n << 52n);
    const e = (() => {
      try {
        readObj(m, 0x100, VirtqDesc);
      } catch (x) {
        return x as GuestMemoryError;
      }
      return undefined;
    })();
    expect(e?.code).toBe("AddressTooLarge");
    expect(e?.addr).toBe(0x100);
  });
  it("handles u64 as bigint, bytes as copies, and zeroes padding", () => {
    const m = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x100 }]);
    m.write(0, new Uint8Array(24).fill(0xee));
    writeObj(m, 0, Mixed, { a: 1, tag: Uint8Array.of(9, 8, 7), raw: 0xffff_ffff_ffff_fffen, b: 0xdeadbeef });
    expect(m.readU32(20)).toBe(0);
    expect(m.readU8(4)).toBe(0);
    const v = readObj(m, 0, Mixed);
    const raw: bigint = v.raw; // typed as bigint
    expect(raw).toBe(0xffff_ffff_ffff_fffen);
    expect([...v.tag]).toEqual([9, 8, 7]);
    v.tag[0] = 0;
    expect(m.readU8(1)).toBe(9); // a copy, not a view
  });
  it("spans contiguous regions", () => {
    const m = GuestMemoryArrayBuffer.fromRanges([
      { start: 0, size: 0x1000 },
      { start: 0x1000, size: 0x1000 },
    ]);
    writeObj(m, 0xff8, VirtqDesc, { addr: 42, len: 1, flags: 2, next: 3 });
    expect(readObj(m, 0xff8, VirtqDesc)).toEqual({ addr: 42, len: 1, flags: 2, next: 3 });
  });
  it("validates every field before writing anything", () => {
    const m = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x100 }]);
    const bad = [
      { addr: 2 ** 52, len: 0, flags: 0, next: 0 },
      { addr: -1, len: 0, flags: 0, next: 0 },
      { addr: 0, len: 2 ** 32, flags: 0, next: 0 },
      { addr: 0, len: 0, flags: 0x10000, next: 0 },
      { addr: 0, len: 0, flags: 0, next: 1.5 },
      { addr: 0, len: 0, flags: 0 } as unknown as { addr: number; len: number; flags: number; next: number },
    ];
    for (const v of bad) {
      expect(code(() => writeObj(m, 0x10, VirtqDesc, v))).toBe("InvalidArgument");
    }
    expect(code(() => writeObj(m, 0, Mixed, { a: 0, tag: new Uint8Array(2), raw: 0n, b: 0 }))).toBe("InvalidArgument");
    expect(code(() => writeObj(m, 0, Mixed, { a: 0, tag: new Uint8Array(3), raw: -1n, b: 0 }))).toBe("InvalidArgument");
    expect(m.slice(0, 0x100).every((b) => b === 0)).toBe(true);
  });
  it("throws range errors without writing", () => {
    const m = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x100 }]);
    expect(code(() => writeObj(m, 0xf8, VirtqDesc, { addr: 1, len: 1, flags: 1, next: 1 }))).toBe("OutOfBounds");
    expect(code(() => readObj(m, 0x100, VirtqDesc))).toBe("Hole");
    expect(m.readU64(0xf8)).toBe(0n);
  });
});

describe("readObj on hostile bytes", () => {
  it("decodes anything the guest wrote, or refuses an addr >= 2^52, nothing else", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (bytes) => {
        const m = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 16 }]);
        m.write(0, bytes);
        const hi = bytes[4]! | (bytes[5]! << 8) | (bytes[6]! << 16) | (bytes[7]! << 24);
        const lo = (bytes[0]! | (bytes[1]! << 8) | (bytes[2]! << 16) | (bytes[3]! << 24)) >>> 0;
        if (hi >>> 0 >= 2 ** 20) {
          expect(code(() => readObj(m, 0, VirtqDesc))).toBe("AddressTooLarge");
        } else {
          const d = readObj(m, 0, VirtqDesc);
          expect(d.addr).toBe((hi >>> 0) * 2 ** 32 + lo);
          expect(Number.isSafeInteger(d.addr)).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });
});
