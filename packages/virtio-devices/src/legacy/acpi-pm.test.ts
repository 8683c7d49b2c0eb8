import { describe, expect, it } from "vitest";
import { AcpiPm } from "./acpi-pm.js";

const b = (...v: number[]): Uint8Array => Uint8Array.from(v);
const rd = (d: { read(o: number, b: Uint8Array): void }, o: number): number => {
  const r = b(0);
  d.read(o, r);
  return r[0]!;
};

describe("AcpiPm", () => {
  it("powers off on SLP_EN with SLP_TYP 5 and resets on RESET_VALUE 1; ignores everything else", () => {
    const got: string[] = [];
    const pm = new AcpiPm((e) => got.push(e));
    pm.write(0, b(0x14)); // SLP_TYP 5 without SLP_EN
    pm.write(0, b(0x20 | (3 << 2))); // S3: not supported
    pm.write(1, b(0x80)); // clearing WAK_STS
    pm.write(2, b(2));
    expect(got).toEqual([]);
    pm.write(0, b(0x20 | (5 << 2)));
    pm.write(2, b(1));
    expect(got).toEqual(["PowerOff", "Reset"]);
    expect(rd(pm, 1)).toBe(0);
  });
});
