import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DEFAULT_RESERVED, E820Type, buildE820, ramBelow } from "./e820.js";
import { LoaderError } from "./error.js";
import { MMIO_HOLE_END, MMIO_HOLE_START, ramRegions } from "./layout.js";

describe("ramRegions", () => {
  it("puts RAM below the 3 GiB MMIO hole and the rest from 4 GiB", () => {
    expect(ramRegions(256 << 20)).toEqual([{ start: 0, size: 256 << 20 }]);
    expect(ramRegions(4 * 2 ** 30)).toEqual([
      { start: 0, size: MMIO_HOLE_START },
      { start: MMIO_HOLE_END, size: 2 ** 30 },
    ]);
    expect(() => ramRegions(1 << 20)).toThrow(LoaderError);
    expect(() => ramRegions((256 << 20) + 1)).toThrow(LoaderError);
  });
});

describe("buildE820", () => {
  it("describes our layout for 256 MiB", () => {
    expect(buildE820(ramRegions(256 << 20))).toEqual([
      { addr: 0, size: 0x9fc00, type: E820Type.Ram },
      { addr: 0x9fc00, size: 0x400, type: E820Type.Reserved },
      { addr: 0xe0000, size: 0x20000, type: E820Type.Reserved },
      { addr: 0x100000, size: (256 << 20) - 0x100000, type: E820Type.Ram },
    ]);
  });

  it("keeps the MMIO hole out of the map for 6 GiB", () => {
    const map = buildE820(ramRegions(6 * 2 ** 30));
    expect(map.at(-2)).toEqual({ addr: 0x100000, size: MMIO_HOLE_START - 0x100000, type: E820Type.Ram });
    expect(map.at(-1)).toEqual({ addr: MMIO_HOLE_END, size: 3 * 2 ** 30, type: E820Type.Ram });
    expect(ramBelow(map, 0x8000_0000).at(-1)).toEqual([0x100000, 0x8000_0000]);
  });

  it("refuses overlapping reserved ranges and more than 128 entries", () => {
    expect(() => buildE820(ramRegions(64 << 20), [...DEFAULT_RESERVED, { addr: 0x9fd00, size: 16, type: 2 }])).toThrow(
      expect.objectContaining({ code: "Overlap" }),
    );
    const many = Array.from({ length: 130 }, (_, i) => ({ addr: 0x200000 + i * 0x2000, size: 0x1000, type: E820Type.Reserved }));
    expect(() => buildE820(ramRegions(64 << 20), many)).toThrow(expect.objectContaining({ code: "TooManyEntries" }));
  });

  it("is sorted, disjoint, and conserves RAM outside reserved and legacy ranges (property)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 512, max: 1 << 21 }).map((p) => p * 4096),
        fc.array(fc.record({ addr: fc.integer({ min: 0, max: 1 << 20 }).map((p) => p * 4096), size: fc.integer({ min: 1, max: 64 }).map((p) => p * 4096) }), { maxLength: 6 }),
        (size, extra) => {
          const reserved = [...DEFAULT_RESERVED];
          for (const e of extra) {
            if (reserved.every((r) => e.addr + e.size <= r.addr || e.addr >= r.addr + r.size)) reserved.push({ ...e, type: E820Type.Reserved });
          }
          const map = buildE820(ramRegions(size), reserved);
          for (let i = 1; i < map.length; i++) expect(map[i]!.addr).toBeGreaterThanOrEqual(map[i - 1]!.addr + map[i - 1]!.size);
          for (const e of map) {
            if (e.type !== E820Type.Ram) continue;
            expect(e.addr + e.size <= 0xa0000 || e.addr >= 0x100000).toBe(true);
            expect(e.addr + e.size <= MMIO_HOLE_START || e.addr >= MMIO_HOLE_END).toBe(true);
            for (const r of reserved) expect(e.addr + e.size <= r.addr || e.addr >= r.addr + r.size).toBe(true);
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});
