/**
 * What bench/tx.ts and bench/rx.ts share: the frame they carry, the mock driver's bring-up of a
 * VirtioNet through the transport, medians, and the run against a C loop.
 *
 * The benches import the built package, not src/: the device's code runs as a consumer's does
 * (tsx's transform of the sources makes each use of an imported constant several times slower).
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, release, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { NetNamespace, uniqueIfName } from "@ts-vmm/test-utils/node";
import type { GuestMemoryMmap } from "@ts-vmm/vm-memory/mmap";
import { MockSplitQueue } from "@ts-vmm/virtio-queue/mock";
import {
  MMIO,
  MmioTransport,
  STATUS_ACKNOWLEDGE,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FEATURES_OK,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_MAC,
  type VirtioNet,
} from "@ts-vmm/virtio-devices";

/** Ethernet frame bytes (without the 12-byte vnet header). */
export const FRAME = 1514;

/** The median of `xs` (the upper one of an even count). */
export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1] as number;
};

/** A zero 12-byte vnet header and a broadcast frame of {@link FRAME} bytes with an experimental ethertype (0x88b5: the kernel drops it). */
export function frameBytes(): Uint8Array {
  const f = new Uint8Array(12 + FRAME);
  f.fill(0xff, 12, 18);
  f.set([0x52, 0x54, 0x00, 0x12, 0x34, 0x56], 18);
  f[24] = 0x88;
  f[25] = 0xb5;
  return f;
}

/** The driver's bring-up (status, features with EVENT_IDX, both queues of 256) through the transport; the mocks of the receive and transmit queues. */
export function bringUp(dev: VirtioNet, mem: GuestMemoryMmap): [MockSplitQueue, MockSplitQueue] {
  const t = new MmioTransport(dev, { mem, irq: { trigger() {} } });
  const features = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC | VIRTIO_F_EVENT_IDX;
  const status = (v: number): void => t.writeRegister(MMIO.Status, v);
  status(STATUS_ACKNOWLEDGE);
  status(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
  t.writeRegister(MMIO.DriverFeaturesSel, 0);
  t.writeRegister(MMIO.DriverFeatures, Number(features & 0xffff_ffffn));
  t.writeRegister(MMIO.DriverFeaturesSel, 1);
  t.writeRegister(MMIO.DriverFeatures, Number(features >> 32n));
  status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
  if ((t.readRegister(MMIO.Status) & STATUS_FEATURES_OK) === 0) throw new Error("FEATURES_OK refused");
  const mocks: MockSplitQueue[] = [];
  for (let i = 0; i < 2; i++) {
    const base = 0x10000 + i * 0x20000;
    const m = new MockSplitQueue(mem, 256, { base, scratch: [base + 0x10000, base + 0x20000] });
    t.writeRegister(MMIO.QueueSel, i);
    t.writeRegister(MMIO.QueueNum, m.size);
    t.writeRegister(MMIO.QueueDescLow, m.descTable);
    t.writeRegister(MMIO.QueueDescHigh, 0);
    t.writeRegister(MMIO.QueueDriverLow, m.availRing);
    t.writeRegister(MMIO.QueueDriverHigh, 0);
    t.writeRegister(MMIO.QueueDeviceLow, m.usedRing);
    t.writeRegister(MMIO.QueueDeviceHigh, 0);
    t.writeRegister(MMIO.QueueReady, 1);
    mocks.push(m);
  }
  status(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
  return [mocks[0] as MockSplitQueue, mocks[1] as MockSplitQueue];
}


/** The C program's `c_ns_per_frame` figure, run inside `ns` with a new tap (up) as its first argument. */
export function cNsPerFrame(ns: NetNamespace, exe: string, args: (tap: string) => string[]): number {
  const tap = uniqueIfName("tsvc");
  ns.addTap(tap);
  const out = ns.exec(exe, ...args(tap));
  const m = /c_ns_per_frame ([\d.]+)/.exec(out);
  if (m === null) throw new Error(`${exe} printed: ${out}`);
  return Number(m[1]);
}

/** One device bench: its name, its C program (a file in bench/) and the two measurements. */
export interface AgainstC {
  readonly bench: string;
  readonly cSource: string;
  readonly frames: number;
  /** ns per frame of the C loop (`exe` built from `cSource`). */
  c(ns: NetNamespace, exe: string): number;
  /** ns per frame of the device, and figures for the JSON line; `dir` is a scratch directory. */
  ours(ns: NetNamespace, exe: string, dir: string): { perFrame: number; extra?: Record<string, unknown> };
}

/**
 * Builds the C program, makes a network namespace, runs C then ours three times, and prints
 * the JSON line: medians, `ratio` (ours / C), each run, the extra figures (the last run's),
 * the machine.
 */
export function runAgainstC(b: AgainstC): void {
  const dir = mkdtempSync(join(tmpdir(), `${b.bench}-`));
  const exe = join(dir, b.cSource.replace(/\.c$/, ""));
  execFileSync("gcc", ["-O2", "-o", exe, fileURLToPath(new URL(`./${b.cSource}`, import.meta.url))]);
  const ns = NetNamespace.create("bndv");
  try {
    const o: number[] = [];
    const k: number[] = [];
    let extra: Record<string, unknown> = {};
    for (let i = 0; i < 3; i++) {
      k.push(b.c(ns, exe));
      const r = b.ours(ns, exe, dir);
      o.push(r.perFrame);
      extra = { ...extra, ...r.extra };
    }
    const result = {
      bench: b.bench,
      frame_bytes: FRAME,
      frames: b.frames,
      ours_ns_per_frame: Math.round(median(o)),
      c_ns_per_frame: Math.round(median(k)),
      ratio: Number((median(o) / median(k)).toFixed(3)),
      ours_runs: o.map(Math.round),
      c_runs: k.map(Math.round),
      ...extra,
      machine: `${cpus()[0]?.model ?? "?"} x${cpus().length}, Linux ${release()}, load ${loadavg()[0]?.toFixed(1)}`,
    };
    console.log(JSON.stringify(result));
  } finally {
    ns.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
