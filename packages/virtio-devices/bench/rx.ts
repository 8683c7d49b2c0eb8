/**
 * pnpm --filter @ts-vmm/virtio-devices bench:rx — the cost of virtio-net's receive path per
 * frame, against a C loop doing only the system call, in the same run.
 *
 * Ours: a VirtioNet on a real tap (moved into a network namespace the bench creates, up) with
 * the mock driver over mmap'd (SharedArrayBuffer) guest memory, as the reference VMM has it
 * (the built package: `pnpm build` first). A sender (bench/tap-rx.c, its own process, told
 * over FIFOs) sends FILL frames through an AF_PACKET socket on the tap (untimed; the tap queues
 * them for its reader), then the driver
 * posts BATCH one-buffer receive chains of 12 + FRAME bytes at a time and the bench times
 * `processRx()` alone (pop, checks, the readv, num_buffers, the used ring), not the mock's
 * work. C: `tap-rx read`, readv(2) of the same frames, from the same kind of sender, from
 * another tap into a buffer and a spare, as the device reads. Prints `ours_ns_per_frame`, `c_ns_per_frame` and `ratio`
 * (ours / C; 1.0 is a device that costs nothing over the system call) as the JSON last line.
 */
import { execFileSync, spawn } from "node:child_process";
import { closeSync, openSync, readSync, writeSync } from "node:fs";
import { join } from "node:path";
import { type NetNamespace, uniqueIfName } from "@ts-vmm/test-utils/node";
import { GuestMemoryMmap } from "@ts-vmm/vm-memory/mmap";
// The built package, not src/ (see bench/rig.ts).
import { TapBackend, VirtioNet } from "@ts-vmm/virtio-devices";
import { FRAME, bringUp, cNsPerFrame, median, runAgainstC } from "./rig.js";

const BATCH = 64;
/** Frames queued in the tap at a time: 7 turns' worth, below the tap's queue of 500. */
const FILL = 7 * BATCH;
const FRAMES = Number(process.env["BENCH_RX_FRAMES"] ?? 50_176);
const WARM = 20_160;
const ROUNDS = 5;
const BUF = 12 + FRAME;

/** The sender on FIFOs in `dir`: `fill()` returns once FILL more frames wait in the tap. */
function sender(ns: NetNamespace, exe: string, dir: string, tap: string): { fill(): void; close(): void } {
  const go = join(dir, `${tap}.go`);
  const done = join(dir, `${tap}.done`);
  execFileSync("mkfifo", [go, done]);
  const child = spawn(ns.execPrefix[0] as string, [...ns.execPrefix.slice(1), exe, "serve", tap, String(FILL), String(FRAME), go, done], { stdio: ["ignore", "ignore", "inherit"] });
  // Opened in the sender's order (go, then done): each open waits for the other end.
  const goFd = openSync(go, "w");
  const doneFd = openSync(done, "r");
  const byte = new Uint8Array(1);
  return {
    fill() {
      writeSync(goFd, byte);
      if (readSync(doneFd, byte) !== 1) throw new Error("the sender stopped");
    },
    close() {
      closeSync(goFd);
      closeSync(doneFd);
      child.kill();
    },
  };
}

function ours(ns: NetNamespace, exe: string, dir: string): { perFrame: number; table: boolean } {
  const tap = uniqueIfName("tsvr");
  const backend = TapBackend.open({ name: tap });
  ns.adopt(tap);
  const send = sender(ns, exe, dir, tap);
  const dev = new VirtioNet({ backend, mac: "52:54:00:12:34:56" });
  const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 0x100_0000 }]);
  try {
    const [rxq] = bringUp(dev, mem);
    const base = 0x40_0000;
    const run = (frames: number): number => {
      let t = 0;
      let got = 0;
      while (got < frames) {
        send.fill();
        for (let turn = 0; turn < FILL / BATCH; turn++) {
          for (let i = 0; i < BATCH; i++) rxq.addChain([{ addr: base + i * 0x1000, len: BUF, writable: true }]);
          const t0 = process.hrtime.bigint();
          dev.processRx();
          t += Number(process.hrtime.bigint() - t0);
          const used = rxq.takeUsed();
          if (used.length !== BATCH || used.some((u) => u.len !== BUF)) {
            throw new Error(`the device filled ${used.length} of ${BATCH} chains, lengths ${[...new Set(used.map((u) => u.len))].join(", ")} (metrics: ${JSON.stringify(dev.metrics)})`);
          }
          got += BATCH;
        }
      }
      // The last frame's bytes as the tap gave them: num_buffers 1, the sender's ethertype.
      const last = mem.slice(base + (BATCH - 1) * 0x1000, BUF);
      if (last[10] !== 1 || last[11] !== 0 || last[24] !== 0x88 || last[25] !== 0xb5) throw new Error("a received frame is not the one sent");
      return t / got;
    };
    run(WARM);
    const per: number[] = [];
    for (let k = 0; k < ROUNDS; k++) per.push(run(FRAMES));
    return { perFrame: median(per), table: dev.metrics.rxTable === dev.metrics.rxFrames };
  } finally {
    send.close();
    dev.close();
    mem.close?.();
  }
}

let everyFrameThroughTable = true;
runAgainstC({
  bench: "net-rx-device",
  cSource: "tap-rx.c",
  frames: FRAMES,
  c: (ns, exe) => cNsPerFrame(ns, exe, (tap) => ["read", tap, String(FRAMES), String(FILL), String(FRAME)]),
  ours: (ns, exe, dir) => {
    const r = ours(ns, exe, dir);
    everyFrameThroughTable &&= r.table; // over all runs: the last run's extra is printed
    return { perFrame: r.perFrame, extra: { every_frame_through_table: everyFrameThroughTable } };
  },
});
