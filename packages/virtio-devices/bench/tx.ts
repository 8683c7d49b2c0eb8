/**
 * pnpm --filter @ts-vmm/virtio-devices bench:tx — the cost of virtio-net's transmit path per
 * frame, against a C loop doing only the system call, in the same run.
 *
 * Ours: a VirtioNet on a real tap (moved into a network namespace the bench creates, up) with
 * the mock driver over mmap'd (SharedArrayBuffer) guest memory, as the reference VMM has it
 * (the built package, run on node as a consumer runs it: `pnpm build` first);
 * the driver fills the transmit ring with BATCH one-buffer chains (12-byte header + FRAME
 * bytes), and the bench times `processTx()` alone (pop, checks, the writev, the used ring),
 * not the mock's work. C: bench/tap-writev.c, writev(2) of the same header and frame to
 * another tap in the namespace. Frames carry an experimental ethertype that the kernel drops,
 * as bench:net's. Prints `ours_ns_per_frame`, `c_ns_per_frame` and `ratio` (ours / C; 1.0 is
 * a device that costs nothing over the system call) as the JSON last line.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, release, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { NetNamespace, uniqueIfName } from "@ts-vmm/test-utils/node";
import { GuestMemoryMmap } from "@ts-vmm/vm-memory/mmap";
import { MockSplitQueue } from "@ts-vmm/virtio-queue/mock";
// The built package, not src/: the device's code runs as a consumer's does (tsx's transform
// of the sources makes each use of an imported constant several times slower).
import {
  MMIO,
  MmioTransport,
  STATUS_ACKNOWLEDGE,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FEATURES_OK,
  TapBackend,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_MAC,
  VirtioNet,
} from "@ts-vmm/virtio-devices";

const FRAME = 1514;
const BATCH = 64;
const FRAMES = Number(process.env["BENCH_TX_FRAMES"] ?? 200_000);
const WARM = 50_000;
const ROUNDS = 5;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1] as number;
};

function frameBytes(): Uint8Array {
  const f = new Uint8Array(12 + FRAME);
  f.fill(0xff, 12, 18);
  f.set([0x52, 0x54, 0x00, 0x12, 0x34, 0x56], 18);
  f[24] = 0x88;
  f[25] = 0xb5;
  return f;
}

/** The driver's bring-up (status, features with EVENT_IDX, both queues of 256) through the transport; the transmit queue's mock. */
function bringUpTx(dev: VirtioNet, mem: GuestMemoryMmap): MockSplitQueue {
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
  return mocks[1] as MockSplitQueue;
}

function ours(ns: NetNamespace): number {
  const tap = uniqueIfName("tsvt");
  const backend = TapBackend.open({ name: tap });
  ns.adopt(tap);
  const dev = new VirtioNet({ backend, mac: "52:54:00:12:34:56" });
  const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 0x100_0000 }]);
  try {
    const txq = bringUpTx(dev, mem);
    const frame = frameBytes();
    // BATCH frame buffers, 4 KiB apart, written once (the device only reads them).
    const base = 0x40_0000;
    for (let i = 0; i < BATCH; i++) mem.write(base + i * 0x1000, frame);
    const run = (frames: number): number => {
      let ns = 0;
      for (let sent = 0; sent < frames; sent += BATCH) {
        for (let i = 0; i < BATCH; i++) txq.addChain([{ addr: base + i * 0x1000, len: frame.length }]);
        const t0 = process.hrtime.bigint();
        dev.processTx();
        ns += Number(process.hrtime.bigint() - t0);
        const used = txq.takeUsed().length;
        if (used !== BATCH) throw new Error(`the device returned ${used} of ${BATCH} chains (metrics: ${JSON.stringify(dev.metrics)})`);
      }
      return ns / frames;
    };
    run(WARM);
    const before = dev.metrics.txFrames;
    const per: number[] = [];
    for (let k = 0; k < ROUNDS; k++) per.push(run(FRAMES));
    const sent = dev.metrics.txFrames - before;
    if (sent !== ROUNDS * FRAMES) throw new Error(`the tap took ${sent} of ${ROUNDS * FRAMES} frames`);
    return median(per);
  } finally {
    dev.close();
    mem.close?.();
  }
}

function c(ns: NetNamespace, exe: string): number {
  const tap = uniqueIfName("tsvc");
  ns.addTap(tap);
  const out = ns.exec(exe, tap, String(FRAMES), String(WARM), String(FRAME));
  const m = /c_ns_per_frame ([\d.]+)/.exec(out);
  if (m === null) throw new Error(`tap-writev printed: ${out}`);
  return Number(m[1]);
}

const dir = mkdtempSync(join(tmpdir(), "bench-tx-"));
const exe = join(dir, "tap-writev");
execFileSync("gcc", ["-O2", "-o", exe, fileURLToPath(new URL("./tap-writev.c", import.meta.url))]);
const ns = NetNamespace.create("bntx");
try {
  const o: number[] = [];
  const k: number[] = [];
  for (let i = 0; i < 3; i++) {
    k.push(c(ns, exe));
    o.push(ours(ns));
  }
  const result = {
    bench: "net-tx-device",
    frame_bytes: FRAME,
    frames: FRAMES,
    ours_ns_per_frame: Math.round(median(o)),
    c_ns_per_frame: Math.round(median(k)),
    ratio: Number((median(o) / median(k)).toFixed(3)),
    ours_runs: o.map(Math.round),
    c_runs: k.map(Math.round),
    machine: `${cpus()[0]?.model ?? "?"} x${cpus().length}, Linux ${release()}, load ${loadavg()[0]?.toFixed(1)}`,
  };
  console.log(JSON.stringify(result));
} finally {
  ns.close();
  rmSync(dir, { recursive: true, force: true });
}
