// `--disk` / `--net` device flags and their rate limits, parsed without running anything.
import { describe, expect, it } from "vitest";
import { UsageError, rateLimitOf, virtioArgs } from "../src/cli-args.js";

describe("--disk and --net flags", () => {
  it("parses disks with ro and rate limits, nets with tap, mac and rate limits, in flag order", () => {
    const got = virtioArgs({
      disk: ["a.img", "b.img,ro", "c.img,bw=1000000,ops=50,bw_burst=4096", "d.img,poll_us=0", "e.img,ro,poll_us=1000"],
      net: ["tap=tap0", "tap=tsvmm%d,mac=52:54:00:12:34:56,ops=100,ops_burst=10"],
      rng: true,
    });
    expect(got).toEqual([
      { kind: "blk", path: "a.img", readOnly: false },
      { kind: "blk", path: "b.img", readOnly: true },
      { kind: "blk", path: "c.img", readOnly: false, rateLimiter: { bandwidth: { size: 1000000, refillTimeMs: 1000, oneTimeBurst: 4096 }, ops: { size: 50, refillTimeMs: 1000 } } },
      { kind: "blk", path: "d.img", readOnly: false, pollMaxUs: 0 },
      { kind: "blk", path: "e.img", readOnly: true, pollMaxUs: 1000 },
      { kind: "net", tap: "tap0" },
      { kind: "net", tap: "tsvmm%d", mac: "52:54:00:12:34:56", rateLimiter: { ops: { size: 100, refillTimeMs: 1000, oneTimeBurst: 10 } } },
      { kind: "rng" },
    ]);
  });

  it("refuses malformed flags with the flag's syntax", () => {
    const bad: [Record<string, string[]>, RegExp][] = [
      [{ net: ["mac=52:54:00:12:34:56"] }, /--net takes tap=NAME/],
      [{ net: ["tap="] }, /--net takes tap=NAME/],
      [{ net: ["tap=a,tap=b"] }, /tap given twice/],
      [{ net: ["tap=a,mac=52-54"] }, /mac= must look like/],
      [{ net: ["tap=a,bw=1.5"] }, /--net bw= must be a whole number/],
      [{ net: ["tap=a,ops=0"] }, /--net ops= must be a whole number/],
      [{ net: ["tap=a,ops_burst=3"] }, /ops_burst needs ops/],
      [{ disk: [",ro"] }, /--disk takes PATH/],
      [{ disk: ["a.img,rw"] }, /--disk takes PATH/],
      [{ disk: ["a.img,bw"] }, /--disk takes PATH/],
      [{ disk: ["a.img,bw=2000000000000"] }, /--disk bw= must be a whole number from 1 to 1099511627776/],
    ];
    for (const [v, msg] of bad) {
      expect(() => virtioArgs(v), JSON.stringify(v)).toThrow(UsageError);
      expect(() => virtioArgs(v)).toThrow(msg);
    }
  });

  it("rateLimitOf: no keys, no limiter", () => {
    expect(rateLimitOf("--disk", new Map())).toBeUndefined();
  });
});
