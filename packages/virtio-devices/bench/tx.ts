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
import { type NetNamespace, uniqueIfName } from "@ts-vmm/test-utils/node";
import { GuestMemoryMmap } from "@ts-vmm/vm-memory/mmap";
// The built package, not src/ (see bench/rig.ts).
import { TapBackend, VirtioNet } from "@ts-vmm/virtio-devices";
import { FRAME, bringUp, cNsPerFrame, frameBytes, median, runAgainstC } from "./rig.js";

const BATCH = 64;
const FRAMES = Number(process.env["BENCH_TX_FRAMES"] ?? 200_000);
const WARM = 50_000;
const ROUNDS = 5;

function ours(ns: NetNamespace): number {
  const tap = uniqueIfName("tsvt");
  const backend = TapBackend.open({ name: tap });
  ns.adopt(tap);
  const dev = new VirtioNet({ backend, mac: "52:54:00:12:34:56" });
  const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 0x100_0000 }]);
  try {
    const [, txq] = bringUp(dev, mem);
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

runAgainstC({
  bench: "net-tx-device",
  cSource: "tap-writev.c",
  frames: FRAMES,
  c: (ns, exe) => cNsPerFrame(ns, exe, (tap) => [tap, String(FRAMES), String(WARM), String(FRAME)]),
  ours: (ns) => ({ perFrame: ours(ns) }),
});
