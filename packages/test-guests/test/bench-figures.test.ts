import { describe, expect, it } from "vitest";
import { figure, METRICS, spread, value, type Samples } from "../bench/figures.js";
import { parseResults, qemuLauncher, type GuestRun, type VmmLauncher } from "../src/index.js";

const metric = (key: string) => {
  const m = METRICS.find((x) => x.key === key);
  if (!m) throw new Error(key);
  return m;
};
const samples = (launcher: VmmLauncher, values: Record<string, number[]>): Samples => ({
  name: launcher.name,
  launcher,
  values: new Map(Object.entries(values)),
  calibratedHz: { exits: [], blk: [] },
});
const noDevices: VmmLauncher = { name: "ours", provides: [], plan: () => ({ kind: "process", file: "true", args: [], guestExitValue: () => null }) };

describe("bench:peer figures", () => {
  it("min / median / max", () => {
    expect(spread([5, 1, 3])).toEqual({ min: 1, median: 3, max: 5 });
    expect(spread([4, 1, 2, 3])).toEqual({ min: 1, median: 2.5, max: 4 });
  });

  it("a value the guest did not print is an error, not NaN", () => {
    const run = { vmm: "qemu", serial: "", results: parseResults([{ text: "RESULT exits_mmio_write_n=5", tMs: 0 }, { text: "RESULT blk_qd1_ops=", tMs: 0 }]) } as unknown as GuestRun;
    expect(value(run, "exits_mmio_write_n")).toBe(5);
    expect(() => value(run, "exits_mmio_write_cycles")).toThrow(/did not report RESULT exits_mmio_write_cycles=/);
    expect(() => value(run, "blk_qd1_ops")).toThrow(/did not report/);
  });

  it("converts per-op cycles to µs with the TSC rate and keeps the cycles", () => {
    const f = figure(samples(qemuLauncher, { mmio_write: [2600, 5200, 7800] }), metric("mmio_write"), 2.6e9, 3);
    expect(f.spread).toEqual({ min: 1, median: 2, max: 3 });
    expect(f.spread && f.cyclesMedian).toBe(5200);
  });

  it("a figure needing a device the VMM does not provide is null with the reason", () => {
    const f = figure(samples(noDevices, {}), metric("blk_qd32"), 2.6e9, 3);
    expect(f).toEqual({ spread: null, reason: "ours does not provide blk yet (not in its launcher's provides)" });
  });

  it("missing samples of a provided figure are an error", () => {
    expect(() => figure(samples(qemuLauncher, { blk_qd1: [1, 2] }), metric("blk_qd1"), 2.6e9, 3)).toThrow(/2 samples, expected 3/);
    expect(() => figure(samples(noDevices, {}), metric("mmio_read"), 2.6e9, 1)).toThrow(/0 samples/);
  });
});
