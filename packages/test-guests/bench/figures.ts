/** The figures of bench:peer: what is measured, and how samples become a reported figure. */
import { readFileSync } from "node:fs";
import type { DeviceKind, GuestRun, VmmLauncher } from "../src/index.js";

export type Mode = "hello" | "exits" | "blk";
export interface Metric {
  readonly key: string;
  readonly label: string;
  readonly unit: "ms" | "µs" | "IOPS";
  readonly mode: Mode;
  /** The device the figure needs (null: none). */
  readonly needs: DeviceKind | null;
  /** Lower is better (times) or higher (IOPS). */
  readonly lowerIsBetter: boolean;
}

export const EXIT_METRICS: ReadonlyArray<readonly [key: string, label: string, needs: DeviceKind | null]> = [
  ["mmio_write", "MMIO write, unclaimed address", null],
  ["mmio_read", "MMIO read, unclaimed address", null],
  ["notify", "QueueNotify (ioeventfd in QEMU)", "blk"],
  ["notify_user", "QueueNotify without ioeventfd (queue 1)", "blk"],
  ["config_read", "virtio-blk config-space read", "blk"],
  ["config_gen_read", "ConfigGeneration read", "blk"],
  ["pio_raw", "PIO from CPL3, #GP replay", null],
  ["pio_gate", "PIO via syscall gate", null],
];

export const METRICS: readonly Metric[] = [
  { key: "first_byte", label: "start → first serial byte", unit: "ms", mode: "hello", needs: null, lowerIsBetter: true },
  { key: "hello_wall", label: "hello wall", unit: "ms", mode: "hello", needs: null, lowerIsBetter: true },
  ...EXIT_METRICS.map(([key, label, needs]): Metric => ({ key, label, unit: "µs", mode: "exits", needs, lowerIsBetter: true })),
  { key: "blk_qd1", label: "blk 4 KiB random read, QD1", unit: "IOPS", mode: "blk", needs: "blk", lowerIsBetter: false },
  { key: "blk_qd32", label: "blk 4 KiB random read, QD32", unit: "IOPS", mode: "blk", needs: "blk", lowerIsBetter: false },
];

/** Per VMM: the samples of each metric (per-op TSC cycles for exits, IOPS for blk, ms for hello). */
export interface Samples {
  readonly name: string;
  readonly launcher: VmmLauncher;
  readonly values: Map<string, number[]>;
  /** Per bench-exits and bench-blk run: the old serial-arrival calibration, Hz. */
  readonly calibratedHz: { readonly exits: number[]; readonly blk: number[] };
}

/** A RESULT value that must be there and be a finite non-negative number; anything else throws. */
export function value(r: GuestRun, key: string): number {
  const raw = r.results.values[key];
  const v = Number(raw);
  if (raw === undefined || raw === "" || !Number.isFinite(v) || v < 0) {
    throw new Error(`${r.vmm}: the guest did not report RESULT ${key}= (got ${String(raw)})\n${r.serial}`);
  }
  return v;
}

export const provides = (s: Samples, kind: DeviceKind | null): boolean => kind === null || s.launcher.provides.includes(kind);

export interface Spread {
  readonly min: number;
  readonly median: number;
  readonly max: number;
}
export function spread(xs: readonly number[]): Spread {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  const median = s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
  return { min: s[0]!, median, max: s[s.length - 1]! };
}

/** A metric's figures for one VMM: a spread in the metric's unit, or null with the reason. */
export type Figure = { readonly spread: Spread; readonly cyclesMedian: number | null } | { readonly spread: null; readonly reason: string };

export function figure(s: Samples, m: Metric, hz: number, runs: number): Figure {
  if (!provides(s, m.needs)) return { spread: null, reason: `${s.name} does not provide ${m.needs} yet (not in its launcher's provides)` };
  const xs = s.values.get(m.key);
  if (!xs || xs.length !== runs) throw new Error(`${s.name}: ${m.key} has ${xs?.length ?? 0} samples, expected ${runs}`);
  if (m.unit === "µs") return { spread: spread(xs.map((c) => (c / hz) * 1e6)), cyclesMedian: spread(xs).median };
  return { spread: spread(xs), cyclesMedian: null };
}

/**
 * A VMM's resident memory beyond guest RAM, in MiB: VmRSS of the VMM process
 * minus the Rss of its guest-RAM mapping, the one mapping in /proc/<pid>/smaps
 * whose size is exactly the guest's RAM (`memMiB`; QEMU's anonymous RAM
 * block, our memfd). Throws if there is not exactly one such mapping. Sampled
 * while the micro-guest's ticker runs (no devices), at a fixed tick, so both
 * VMMs are measured at the same point of the same guest's work.
 */
export function rssBeyondGuestMiB(pid: number, memMiB: number): number {
  return rssBeyondGuestFromProc(readFileSync(`/proc/${pid}/status`, "utf8"), readFileSync(`/proc/${pid}/smaps`, "utf8"), memMiB, `pid ${pid}`);
}

/** {@link rssBeyondGuestMiB} on the text of /proc/<pid>/status and /proc/<pid>/smaps. */
export function rssBeyondGuestFromProc(status: string, smaps: string, memMiB: number, who = "the process"): number {
  const rss = Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? NaN);
  let guestRss = 0;
  let guestMaps = 0;
  let size = -1;
  for (const line of smaps.split("\n")) {
    const m = /^(Size|Rss):\s+(\d+) kB$/.exec(line);
    if (m?.[1] === "Size") size = Number(m[2]);
    else if (m?.[1] === "Rss" && size === memMiB * 1024) {
      guestRss += Number(m[2]);
      guestMaps++;
    }
  }
  if (!Number.isFinite(rss)) throw new Error(`${who}: no VmRSS in its status`);
  if (guestMaps !== 1) throw new Error(`${who}: ${guestMaps} mappings of exactly ${memMiB} MiB in smaps, expected the one guest-RAM mapping`);
  return (rss - guestRss) / 1024;
}
