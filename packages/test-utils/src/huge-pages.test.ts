import { describe, expect, it } from "vitest";
import { describeWith } from "./gate.js";
import { readHugePagePool, reserveHugePages, residentPages, smapsEntry } from "./huge-pages.js";
import { readFileSync } from "node:fs";

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
  it("reserves pages and gives the same number back", async () => {
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
    expect(await r.settle()).toBe(true); // nothing left to give back
  });
});

describe("smapsEntry", () => {
  it("finds a mapping by its start address", () => {
    const maps = readFileSync("/proc/self/maps", "utf8").split("\n");
    const first = /^([0-9a-f]+)-/.exec(maps[0]!)![1]!;
    const e = smapsEntry(BigInt(`0x${first}`));
    expect(e).toBeDefined();
    expect(e!["Size"]).toBeGreaterThan(0);
    expect(e!["KernelPageSize"]).toBeGreaterThanOrEqual(4);
    expect(smapsEntry(1n)).toBeUndefined();
  });
});

describe("residentPages", () => {
  it("counts present pages", () => {
    const maps = readFileSync("/proc/self/maps", "utf8");
    const stack = /^([0-9a-f]+)-([0-9a-f]+) .*\[stack\]$/m.exec(maps)!;
    const end = BigInt(`0x${stack[2]!}`);
    // The top page of the main thread's stack is in use, so present.
    expect(residentPages(end - 4096n, 4096)).toBe(1);
  });
});

