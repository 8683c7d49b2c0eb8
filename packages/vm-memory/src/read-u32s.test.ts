import { describe, expect, it } from "vitest";
import { GuestMemoryError, type GuestMemoryErrorCode } from "./error.js";
import { GuestMemoryArrayBuffer } from "./guest-memory-array-buffer.js";
import type { GuestMemory } from "./guest-memory.js";
import { GuestMemoryMmap } from "./guest-memory-mmap.js";

// readU32s: one checked read of a small record (a 16-byte virtqueue descriptor as four
// words) on every backend, at region edges, across contiguous regions, into holes, and
// at the top of the address space. The property test (guest-memory.property.test.ts)
// checks it against the reference model on random layouts as well.

function code(fn: () => unknown): GuestMemoryErrorCode | "none" {
  try {
    fn();
    return "none";
  } catch (e) {
    if (e instanceof GuestMemoryError) return e.code;
    throw e;
  }
}

/** [0x1000, 0x3000) as two contiguous regions split at 0x2000, a hole, then [0x5000, 0x6000). */
const LAYOUT = [
  { start: 0x1000, size: 0x1000 },
  { start: 0x2000, size: 0x1000 },
  { start: 0x5000, size: 0x1000 },
];

const backends: [string, () => GuestMemory & { close(): void }][] = [
  ["GuestMemoryArrayBuffer (shared)", () => GuestMemoryArrayBuffer.fromRanges(LAYOUT)],
  ["GuestMemoryArrayBuffer (not shared)", () => GuestMemoryArrayBuffer.fromRanges(LAYOUT, { shared: false })],
  ["GuestMemoryMmap (memfd)", () => GuestMemoryMmap.fromRanges(LAYOUT)],
  ["GuestMemoryMmap (anonymous)", () => GuestMemoryMmap.fromRanges(LAYOUT, { backing: "anonymous" })],
];

/** Fills every backed byte with a pattern that differs at every address. */
function fill(mem: GuestMemory): void {
  for (const r of LAYOUT) for (let a = r.start; a < r.start + r.size; a++) mem.writeU8(a, (a * 7 + (a >> 8)) & 0xff);
}

/** What the scalar reads give for the words at `addr`. */
function scalar(mem: GuestMemory, addr: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => mem.readU32(addr + 4 * i));
}

describe.each(backends)("readU32s on %s", (_name, make) => {
  it("reads a descriptor as the four scalar u32 reads do, aligned or not, at both ends of a region", () => {
    const mem = make();
    fill(mem);
    const d = new Uint32Array(4);
    for (const a of [0x1000, 0x1010, 0x1003, 0x1ff0, 0x5000, 0x5ff0, 0x5fef]) {
      mem.readU32s(a, d);
      expect([...d]).toEqual(scalar(mem, a, 4));
    }
    // The flags/next (split) or id/flags (packed) halves of the last word.
    mem.writeU16(0x1018 + 12, 0x1234);
    mem.writeU16(0x1018 + 14, 0xfedc);
    mem.readU32s(0x1018, d);
    expect([d[3]! & 0xffff, d[3]! >>> 16]).toEqual([0x1234, 0xfedc]);
    mem.close();
  });

  it("spans two contiguous regions, from either side of the last-hit region", () => {
    const mem = make();
    fill(mem);
    const d = new Uint32Array(4);
    for (const a of [0x1ff8, 0x1ff1, 0x1ffc, 0x1fff]) {
      mem.readU8(0x1000); // last hit: the first region
      mem.readU32s(a, d);
      expect([...d]).toEqual(scalar(mem, a, 4));
      mem.readU8(0x2800); // last hit: the second region
      mem.readU32s(a, d);
      expect([...d]).toEqual(scalar(mem, a, 4));
    }
    mem.close();
  });

  it("refuses a record that runs past backed memory or starts in a hole, leaving dest unchanged", () => {
    const mem = make();
    fill(mem);
    const cases: [number, GuestMemoryErrorCode][] = [
      [0x2ff1, "OutOfBounds"], // one byte over the end of [0x1000, 0x3000) into the hole
      [0x2ffc, "OutOfBounds"],
      [0x5ff1, "OutOfBounds"], // one byte over the end of memory
      [0x3000, "Hole"],
      [0x4ffc, "Hole"], // ends inside the next region, but starts in the hole
      [0x0, "Hole"],
      [0x6000, "Hole"],
      [2 ** 52 - 8, "Hole"],
    ];
    for (const [a, c] of cases) {
      const d = new Uint32Array(4).fill(0xa5a5a5a5);
      expect([a, code(() => mem.readU32s(a, d))]).toEqual([a, c]);
      expect([...d]).toEqual([0xa5a5a5a5, 0xa5a5a5a5, 0xa5a5a5a5, 0xa5a5a5a5]);
      // The same error as a bulk read of the same 16 bytes.
      expect(code(() => mem.read(a, new Uint8Array(16)))).toBe(c);
    }
    // The record's last byte is the region's last: fine.
    expect(code(() => mem.readU32s(0x2ff0, new Uint32Array(4)))).toBe("none");
    expect(code(() => mem.readU32s(0x5ff0, new Uint32Array(4)))).toBe("none");
    mem.close();
  });

  it("refuses malformed addresses with the typed error, never wrapping", () => {
    const mem = make();
    const d = new Uint32Array(4).fill(1);
    for (const [a, c] of [
      [-1, "InvalidArgument"],
      [-16, "InvalidArgument"],
      [4096.5, "InvalidArgument"],
      [Number.NaN, "InvalidArgument"],
      [Number.POSITIVE_INFINITY, "AddressTooLarge"],
      [2 ** 52, "AddressTooLarge"],
      [2 ** 64, "AddressTooLarge"],
      [2 ** 64 - 16 + 0x1000, "AddressTooLarge"], // would wrap to 0x1000 in u64 arithmetic
      [Number.MAX_SAFE_INTEGER, "AddressTooLarge"],
    ] as [number, GuestMemoryErrorCode][]) {
      expect([a, code(() => mem.readU32s(a, d))]).toEqual([a, c]);
    }
    expect(code(() => mem.readU32s(0x1000n as unknown as number, d))).toBe("InvalidArgument");
    expect([...d]).toEqual([1, 1, 1, 1]);
    mem.close();
  });

  it("reads records of other sizes; an empty one only checks the address", () => {
    const mem = make();
    fill(mem);
    for (const n of [1, 2, 3, 8]) {
      const d = new Uint32Array(n);
      mem.readU32s(0x1ffc, d);
      expect([...d]).toEqual(scalar(mem, 0x1ffc, n));
    }
    expect(code(() => mem.readU32s(0x1000, new Uint32Array(0)))).toBe("none");
    expect(code(() => mem.readU32s(0x3000, new Uint32Array(0)))).toBe("Hole");
    mem.close();
  });

  it("copies: a later guest write does not change dest", () => {
    const mem = make();
    const d = new Uint32Array(4);
    mem.writeU32(0x5004, 0x11223344);
    mem.readU32s(0x5000, d);
    mem.writeU32(0x5004, 0x55667788);
    expect(d[1]).toBe(0x11223344);
    mem.close();
  });

  it("throws Closed after close", () => {
    const mem = make();
    mem.readU32s(0x1000, new Uint32Array(4));
    mem.close();
    expect(code(() => mem.readU32s(0x1000, new Uint32Array(4)))).toBe("Closed");
  });
});

describe("readU32s at the top of the address space", () => {
  it("reads the last 16 bytes below 2^52 and refuses anything past them", () => {
    const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 2 ** 52 - 0x1000, size: 0x1000 }]);
    mem.writeU32(2 ** 52 - 4, 0xcafef00d);
    const d = new Uint32Array(4);
    mem.readU32s(2 ** 52 - 16, d);
    expect(d[3]).toBe(0xcafef00d);
    expect(code(() => mem.readU32s(2 ** 52 - 12, d))).toBe("OutOfBounds");
    expect(code(() => mem.readU32s(2 ** 52 - 1, d))).toBe("OutOfBounds");
    expect(d[3]).toBe(0xcafef00d);
  });
});
