import { describe, expect, it } from "vitest";
import { describeWith } from "./gate.js";
import { readHugePagePool, reserveHugePages } from "./huge-pages.js";

describe("huge page pools", () => {
  it("reads the 2 MiB pool, or says there is none", () => {
    const p = readHugePagePool(2 << 20);
    if (p === undefined) return expect(readHugePagePool(3 << 20)).toBeUndefined();
    expect(p.pageSize).toBe(2 << 20);
    for (const v of [p.total, p.free, p.reserved]) expect(Number.isSafeInteger(v) && v >= 0).toBe(true);
    expect(p.free).toBeLessThanOrEqual(p.total + 1_000_000);
  });
});

describeWith({ root: true }, "huge page reservations", () => {
  it("reserves pages and gives the same number back", () => {
    const before = readHugePagePool(2 << 20)!;
    const r = reserveHugePages(4);
    try {
      expect(r.added).toBe(4);
      expect(readHugePagePool(2 << 20)!.total).toBe(before.total + 4);
    } finally {
      r.release();
      r.release();
    }
    expect(readHugePagePool(2 << 20)!.total).toBe(before.total);
  });
});
