import { describe, expect, it } from "vitest";
import { DebugExit, debugExitStatus } from "./debug-exit.js";

const b = (...v: number[]): Uint8Array => Uint8Array.from(v);

describe("DebugExit", () => {
  it("reports the little-endian value of 1-, 2- and 4-byte writes", () => {
    const got: number[] = [];
    const d = new DebugExit((v) => got.push(v));
    d.write(0, b(0x05));
    d.write(0, b(0x34, 0x12));
    d.write(0, b(0x78, 0x56, 0x34, 0xf2));
    expect(got).toEqual([5, 0x1234, 0xf2345678]);
  });

  it("maps values to QEMU's isa-debug-exit status", () => {
    expect(debugExitStatus(0)).toBe(1);
    expect(debugExitStatus(1)).toBe(3);
    expect(debugExitStatus(0x80)).toBe(1);
  });
});
