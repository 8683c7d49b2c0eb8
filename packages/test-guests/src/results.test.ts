import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseResults, tscHz, type SerialLine } from "./results.js";

const lines = (...t: string[]): SerialLine[] => t.map((text, i) => ({ text, tMs: i * 100 }));

describe("parseResults", () => {
  it("sorts PASS, FAIL, SKIP and RESULT lines and ignores the rest", () => {
    const r = parseResults(
      lines("booting", "PASS blk.init", "FAIL blk.read poll 0 status 255", "SKIP rtc absent", "RESULT a=1", "RESULT cmdline=\"x y=z\"", "RESULT a=2", "PASSX no"),
    );
    expect(r.passed).toEqual(["blk.init"]);
    expect(r.failed).toEqual([{ check: "blk.read", detail: "poll 0 status 255" }]);
    expect(r.skipped).toEqual([{ check: "rtc", reason: "absent" }]);
    expect(r.values).toEqual({ a: "2", cmdline: "\"x y=z\"" });
    expect(r.all.map((v) => v.key)).toEqual(["a", "cmdline", "a"]);
  });

  it("finds a FAIL printed after a partial line (the CPL0 trap handler starts with a newline)", () => {
    const r = parseResults(lines("RESULT x=", "FAIL trap vector=0x6 err=0x0"));
    expect(r.failed[0]?.check).toBe("trap");
  });

  it("never throws on arbitrary serial garbage", () => {
    fc.assert(
      fc.property(fc.array(fc.string({ unit: "binary" }), { maxLength: 20 }), (ts) => {
        const r = parseResults(lines(...ts));
        expect(r.passed.length + r.failed.length + r.skipped.length + r.all.length).toBeLessThanOrEqual(ts.length);
      }),
      { numRuns: 300 },
    );
  });
});

describe("tscHz", () => {
  it("prefers the frequency the guest read from CPUID", () => {
    expect(tscHz(parseResults(lines("RESULT tsc_khz=2000000", "RESULT tsc_mark=1", "RESULT tsc_mark=2")))).toBe(2e9);
  });

  it("calibrates from tsc_mark lines and their arrival times", () => {
    const r = parseResults([
      { text: "RESULT tsc_khz=unknown", tMs: 0 },
      { text: "RESULT tsc_mark=9007199254740993", tMs: 10 },
      { text: "RESULT tsc_mark=9007202254740993", tMs: 1010 },
    ]);
    expect(tscHz(r)).toBeCloseTo(3e9, -3);
  });

  it("returns null when the marks are too close to calibrate", () => {
    expect(tscHz(parseResults(lines("RESULT tsc_mark=1")))).toBeNull();
  });
});
