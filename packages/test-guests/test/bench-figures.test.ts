import { describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { figure, METRICS, rssBeyondGuestFromProc, rssBeyondGuestMiB, spread, value, type Samples } from "../bench/figures.js";
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

  it("RSS beyond guest RAM: VmRSS minus the Rss of the one mapping of exactly the guest's size", () => {
    const status = "Name:\tqemu\nVmHWM:\t   38956 kB\nVmRSS:\t   38000 kB\n";
    const map = (size: number, rss: number, what: string): string => `7f0000000000-7f0004000000 rw-p 00000000 00:00 0 ${what}\nSize:             ${size} kB\nRss:              ${rss} kB\nPss:              ${rss} kB\n`;
    const smaps = map(65536, 6144, "") + map(65404, 0, "") + map(6176, 3516, "[heap]");
    expect(rssBeyondGuestFromProc(status, smaps, 64)).toBeCloseTo((38000 - 6144) / 1024, 6);
    expect(() => rssBeyondGuestFromProc(status, smaps + map(65536, 10, ""), 64)).toThrow(/2 mappings of exactly 64 MiB/);
    expect(() => rssBeyondGuestFromProc(status, smaps, 128)).toThrow(/0 mappings/);
    expect(() => rssBeyondGuestFromProc("Name:\tx\n", smaps, 64)).toThrow(/no VmRSS/);
  });

  it("RSS beyond guest RAM reads a live process's /proc files (this one, with a mapping of a size it has once)", () => {
    // No mapping of this process is exactly 1 TiB: the real files parse, and the count check fires.
    expect(readFileSync("/proc/self/smaps", "utf8")).toMatch(/^Rss:/m);
    expect(() => rssBeyondGuestMiB(process.pid, 1024 * 1024)).toThrow(/0 mappings of exactly 1048576 MiB/);
  });
});
