import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { firstOverlap, isGuestAddress, isGuestRange, overlaps } from "./ranges.js";

describe("guest ranges", () => {
  it("isGuestAddress / isGuestRange: safe integers inside 2^52", () => {
    expect([0, 2 ** 52 - 1].map(isGuestAddress)).toEqual([true, true]);
    expect([-1, 2 ** 52, 1.5, NaN, Infinity].map(isGuestAddress)).toEqual([false, false, false, false, false]);
    expect(isGuestRange(2 ** 52 - 4096, 4096)).toBe(true);
    expect(isGuestRange(2 ** 52, 0)).toBe(true); // an empty range may end at the top
    expect(isGuestRange(2 ** 52 - 4096, 4097)).toBe(false);
    expect(isGuestRange(0, -1)).toBe(false);
    expect(isGuestRange(0, 2 ** 53)).toBe(false);
  });

  it("overlaps: half-open, empty ranges never overlap", () => {
    expect(overlaps(0, 10, 9, 20)).toBe(true);
    expect(overlaps(0, 10, 10, 20)).toBe(false);
    expect(overlaps(5, 5, 0, 10)).toBe(false);
    expect(overlaps(0, 10, 2, 3)).toBe(true);
  });

  it("firstOverlap finds an overlap exactly when some pair overlaps", () => {
    const range = fc.tuple(fc.integer({ min: 0, max: 100 }), fc.integer({ min: 0, max: 20 })).map(([a, n]) => ({ a, e: a + n }));
    fc.assert(
      fc.property(fc.array(range, { maxLength: 12 }), (rs) => {
        const brute = rs.some((x, i) => rs.some((y, j) => i < j && overlaps(x.a, x.e, y.a, y.e)));
        const found = firstOverlap(rs, (r) => r.a, (r) => r.e);
        expect(found !== undefined).toBe(brute);
        if (found) expect(overlaps(found[0].a, found[0].e, found[1].a, found[1].e)).toBe(true);
      }),
    );
  });
});
