/**
 * pnpm bench:net — guest-to-host network throughput over a tap, our VMM against
 * QEMU (`-netdev tap`, no vhost) with the micro-guest's `bench-net` mode, runs
 * interleaved: QEMU, ours, QEMU, ours, … (BENCH_RUNS, default 3).
 *
 * Each run gets a fresh persistent tap (10.0.2.2/24, up) in a network namespace
 * the bench creates, and the VMM runs inside that namespace. The guest sends
 * n = 20000 frames of 1514 bytes (plus the 12-byte header), 32 in flight, and
 * reports TSC cycles; both VMMs run on the host's TSC (neither sets its rate),
 * converted with the host's rate from KVM_GET_TSC_KHZ (QEMU's default CPU model
 * has no TSC leaf for the guest to read). The kernel counts the frames (tap rx) and drops
 * them (an experimental ethertype), and the bench checks that it counted all.
 * The headline `ratio` times those 20000 frames after BENCH_NET_WARM (default
 * 20000) untimed frames the guest sends first the same way (`warm=`, as
 * bench:peer's blk warm_ops, fio's ramp_time), for both VMMs alike: a steady
 * state. Each round also runs both VMMs cold (no warm-up, `cold_ratio`): our
 * cold 20000-frame time is mostly V8 warm-up (interpreted and baseline code,
 * TurboFan compiling on the same two cores, ~75 ms in all), and with
 * BENCH_NET_SUSTAINED frames (default 200000, 0 to skip; cold start included,
 * `sustained_ratio`).
 * Host-to-guest: each round also runs both VMMs with the micro-guest's
 * `bench-net-rx` mode (BENCH_NET_RX frames, default 200000, 0 to skip): the guest
 * posts 64 receive buffers and prints `net_rx_ready`, then test/net_rx_sender.c
 * (built with gcc here, run in the namespace) sends the frames into the tap
 * through an AF_PACKET socket, pacing itself on the tap's tx_packets counter
 * (at most 256 frames not yet taken by the VMM, below the tap's queue of 500,
 * so no frame is dropped); the guest counts them, checks sizes and sequence
 * numbers, and times first to last frame (`rx_ratio`); `rx_steady_ratio` times the frames after
 * the first tenth alone (the guest's `net_rx_tenth_cycles`), for both VMMs alike: our first tenth
 * runs while TurboFan compiles the receive path. Appends a line to BENCHMARKS.md; the
 * last line printed is `{"bench":"net-tx",...}` with the rx figures in it.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release } from "node:os";
import { fileURLToPath } from "node:url";
import { NetNamespace, uniqueIfName } from "@ts-vmm/test-utils/node";
import { buildMicroGuest, kvmTscHz, qemuLauncher, runGuest, tscHz, type VmmLauncher } from "@ts-vmm/test-guests";
import { inNamespace } from "../test/ns-launcher.js";
import { buildRxSender, runRxGuest } from "../test/net-rx.js";
import { oursLauncher } from "../test/ours-launcher.js";

const RUNS = Number(process.env["BENCH_RUNS"] ?? 3);
const FRAMES = 20000;
/** Untimed frames the guest sends before the headline run's timed ones (0: the headline run is cold too). */
const WARM_FRAMES = Number(process.env["BENCH_NET_WARM"] ?? 20000);
/** A second, longer run of each VMM: throughput once our JIT has warmed up (the 20000-frame run is mostly warm-up). */
const SUSTAINED_FRAMES = Number(process.env["BENCH_NET_SUSTAINED"] ?? 200000);
const SIZE = 1514;
/** Host-to-guest frames per run (0 skips the rx runs). */
const RX_FRAMES = Number(process.env["BENCH_NET_RX"] ?? 200000);

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};


async function oneRun(ns: NetNamespace, launcher: VmmLauncher, elf: string, hostHz: number, frames: number, warm: number): Promise<number> {
  const tap = uniqueIfName("tsvb");
  ns.addTap(tap);
  try {
    const before = ns.linkStats(tap).rxPackets;
    const r = await runGuest({
      vmm: inNamespace(launcher, ns), kernel: elf, cmdline: `mode=bench-net n=${frames} size=${SIZE} warm=${warm}`, memMiB: 64, timeoutMs: 60_000,
      devices: [{ kind: "net", tap }],
    });
    if (r.guestExit !== 0) throw new Error(`${launcher.name} bench-net failed: ${r.exitProblem ?? `guest exit ${String(r.guestExit)}`}\n${r.serial}\n${r.vmmLog}`);
    const cycles = Number(r.results.values["net_tx_cycles"]);
    const guestHz = tscHz(r.results);
    if (!Number.isFinite(cycles)) throw new Error(`${launcher.name}: no net_tx_cycles\n${r.serial}`);
    if (warm > 0 && Number(r.results.values["net_tx_warm_frames"]) !== warm) throw new Error(`${launcher.name}: the guest did not report its ${warm} warm-up frames\n${r.serial}`);
    // Without a TSC leaf (QEMU's default CPU) the guest's rate is estimated from the host times of
    // its tsc_mark lines, which a loaded host delays by milliseconds: allow that much over the window.
    const marks = r.results.all.filter((x) => x.key === "tsc_mark");
    const windowMs = marks.length >= 2 ? marks[marks.length - 1]!.tMs - marks[0]!.tMs : Infinity;
    const exact = Number.isFinite(Number(r.results.values["tsc_khz"]));
    const tolerance = exact ? 0.05 : Math.max(0.05, 10 / windowMs);
    if (guestHz !== null && Math.abs(guestHz / hostHz - 1) > tolerance) {
      // A rate the guest read from a CPUID leaf must be the host's (both VMMs run the guest on the
      // host's TSC; the figure below converts with the host's rate). An estimate from serial
      // timestamps is only as good as the host's scheduling: a loaded host put QEMU's at 2.84 GHz
      // for 2.6 and ended the whole bench; now it is a warning.
      const what = `${launcher.name}: guest TSC ${guestHz} Hz is not the host's ${hostHz} Hz`;
      if (exact) throw new Error(what);
      process.stderr.write(`warning: ${what} (estimated over ${windowMs.toFixed(0)} ms of serial timestamps; the figure uses the host's rate)\n`);
    }
    const hz = hostHz;
    const counted = ns.linkStats(tap).rxPackets - before;
    if (counted < warm + frames) throw new Error(`${launcher.name}: the kernel counted ${counted} of ${warm + frames} frames`);
    return (frames * SIZE) / (cycles / hz) / 1e6; // MB/s of Ethernet frames
  } finally {
    ns.ip("link", "del", tap);
  }
}

/**
 * One host-to-guest run: MB/s of Ethernet frames the guest received, first to last frame, and
 * over the frames after the first tenth alone (`steady`: a JIT-compiled VMM's warm-up left out).
 */
async function oneRxRun(ns: NetNamespace, launcher: VmmLauncher, elf: string, hostHz: number, sender: string, frames: number): Promise<{ all: number; steady: number }> {
  const tap = uniqueIfName("tsvr");
  ns.addTap(tap);
  try {
    const { run: r, senderOut } = await runRxGuest(ns, launcher, elf, sender, tap, frames, SIZE);
    if (r.guestExit !== 0) throw new Error(`${launcher.name} bench-net-rx failed: ${r.exitProblem ?? `guest exit ${String(r.guestExit)}`}\n${senderOut}\n${r.serial}\n${r.vmmLog}`);
    const v = r.results.values;
    const got = Number(v["net_rx_frames"]);
    const cycles = Number(v["net_rx_cycles"]);
    if (got !== frames || Number(v["net_rx_seq_gaps"]) !== 0 || Number(v["net_rx_bad_len"]) !== 0) {
      throw new Error(`${launcher.name}: the guest got ${got} of ${frames} frames, ${String(v["net_rx_seq_gaps"])} sequence gaps, ${String(v["net_rx_bad_len"])} bad lengths (sender: ${senderOut.trim()})`);
    }
    if (!(cycles > 0)) throw new Error(`${launcher.name}: no net_rx_cycles\n${r.serial}`);
    const tenth = Number(v["net_rx_tenth_cycles"]);
    if (!(tenth > 0 && tenth < cycles)) throw new Error(`${launcher.name}: no net_rx_tenth_cycles below net_rx_cycles\n${r.serial}`);
    const head = Math.floor(frames / 10); // the guest's mark: the frame after the first `head` intervals
    return {
      all: ((frames - 1) * SIZE) / (cycles / hostHz) / 1e6,
      steady: ((frames - 1 - head) * SIZE) / ((cycles - tenth) / hostHz) / 1e6,
    };
  } finally {
    ns.ip("link", "del", tap);
  }
}

function appendToBenchmarks(text: string): void {
  const file = fileURLToPath(new URL("../../../BENCHMARKS.md", import.meta.url));
  const begin = "<!-- vmm-reference-net:begin -->";
  const end = "<!-- vmm-reference-net:end -->";
  let doc = existsSync(file) ? readFileSync(file, "utf8") : "# Benchmarks\n";
  if (!doc.includes(begin)) {
    doc = `${doc.trimEnd()}\n\n## vmm-reference: virtio-net guest-to-host throughput over a tap (\`pnpm bench:net\`)\n\n` +
      `Micro-guest \`bench-net\`: ${FRAMES} frames of ${SIZE} bytes, 32 in flight, into a tap in a private network namespace;\n` +
      "QEMU microvm with `-netdev tap` (no vhost) in the same run. MB/s of Ethernet frames, TSC-timed in the guest.\n" +
      "Target: ours / QEMU ≥ 1.0.\n\n" +
      `${begin}\n${end}\n`;
  }
  doc = doc.replace(end, `${text.trimEnd()}\n\n${end}`);
  writeFileSync(file, doc);
}

async function main(): Promise<void> {
  const elf = (await buildMicroGuest()).elf;
  const hz = kvmTscHz();
  const ns = NetNamespace.create("bench");
  const q: number[] = [];
  const o: number[] = [];
  const qc: number[] = [];
  const oc: number[] = [];
  const qs: number[] = [];
  const os: number[] = [];
  const qr: number[] = [];
  const or: number[] = [];
  const qrs: number[] = [];
  const ors: number[] = [];
  const sender = RX_FRAMES > 0 ? buildRxSender() : "";
  try {
    for (let i = 0; i < RUNS; i++) {
      q.push(await oneRun(ns, qemuLauncher, elf, hz, FRAMES, WARM_FRAMES));
      o.push(await oneRun(ns, oursLauncher, elf, hz, FRAMES, WARM_FRAMES));
      if (WARM_FRAMES > 0) {
        qc.push(await oneRun(ns, qemuLauncher, elf, hz, FRAMES, 0));
        oc.push(await oneRun(ns, oursLauncher, elf, hz, FRAMES, 0));
      }
      if (SUSTAINED_FRAMES > 0) {
        qs.push(await oneRun(ns, qemuLauncher, elf, hz, SUSTAINED_FRAMES, 0));
        os.push(await oneRun(ns, oursLauncher, elf, hz, SUSTAINED_FRAMES, 0));
      }
      if (RX_FRAMES > 0) {
        const qx = await oneRxRun(ns, qemuLauncher, elf, hz, sender, RX_FRAMES);
        const ox = await oneRxRun(ns, oursLauncher, elf, hz, sender, RX_FRAMES);
        qr.push(qx.all);
        or.push(ox.all);
        qrs.push(qx.steady);
        ors.push(ox.steady);
      }
    }
  } finally {
    ns.close();
  }
  const qm = median(q);
  const om = median(o);
  const ratio = Number((om / qm).toFixed(3));
  const qcm = qc.length > 0 ? median(qc) : NaN;
  const ocm = oc.length > 0 ? median(oc) : NaN;
  const coldRatio = Number((ocm / qcm).toFixed(3));
  const qsm = qs.length > 0 ? median(qs) : NaN;
  const osm = os.length > 0 ? median(os) : NaN;
  const sustainedRatio = Number((osm / qsm).toFixed(3));
  const qrm = qr.length > 0 ? median(qr) : NaN;
  const orm = or.length > 0 ? median(or) : NaN;
  const rxRatio = Number((orm / qrm).toFixed(3));
  const qrsm = qrs.length > 0 ? median(qrs) : NaN;
  const orsm = ors.length > 0 ? median(ors) : NaN;
  const rxSteadyRatio = Number((orsm / qrsm).toFixed(3));
  let qemuVersion = "QEMU (version unknown)";
  try {
    qemuVersion = execFileSync("qemu-system-x86_64", ["--version"], { encoding: "utf8" }).split("\n")[0]!.trim();
  } catch {
    /* keep the placeholder */
  }
  const when = new Date().toISOString().slice(0, 16).replace("T", " ");
  const cpu = cpus()[0]?.model.replace(/\s+/g, " ").trim() ?? "unknown CPU";
  const f = (xs: number[]): string => xs.map((x) => x.toFixed(0)).join(", ");
  const line =
    `- ${when} UTC — ${cpu} x${cpus().length}, Linux ${release()}, load average ${loadavg()[0]!.toFixed(1)}; ${qemuVersion}; ${RUNS} run(s) each: ` +
    `${FRAMES} frames after ${WARM_FRAMES} untimed: QEMU ${qm.toFixed(0)} MB/s (runs: ${f(q)}); ours ${om.toFixed(0)} MB/s (runs: ${f(o)}); ratio ${ratio}` +
    (qc.length > 0 ? `; ${FRAMES} frames cold: QEMU ${qcm.toFixed(0)} MB/s (runs: ${f(qc)}); ours ${ocm.toFixed(0)} MB/s (runs: ${f(oc)}); ratio ${coldRatio}` : "") +
    (qs.length > 0
      ? `; ${SUSTAINED_FRAMES} frames: QEMU ${qsm.toFixed(0)} MB/s (runs: ${f(qs)}); ours ${osm.toFixed(0)} MB/s (runs: ${f(os)}); ratio ${sustainedRatio}`
      : "") +
    (qr.length > 0
      ? `; host-to-guest ${RX_FRAMES} frames: QEMU ${qrm.toFixed(0)} MB/s (runs: ${f(qr)}); ours ${orm.toFixed(0)} MB/s (runs: ${f(or)}); ratio ${rxRatio}` +
        `; host-to-guest after the first tenth: QEMU ${qrsm.toFixed(0)} MB/s (runs: ${f(qrs)}); ours ${orsm.toFixed(0)} MB/s (runs: ${f(ors)}); ratio ${rxSteadyRatio}`
      : "");
  console.log(line);
  appendToBenchmarks(line);
  console.log(JSON.stringify({ bench: "net-tx", frames: FRAMES, frame_bytes: SIZE, warm_frames: WARM_FRAMES, ours_mb_s: Number(om.toFixed(1)), qemu_mb_s: Number(qm.toFixed(1)), ratio,
    ...(qc.length > 0 ? { cold_ours_mb_s: Number(ocm.toFixed(1)), cold_qemu_mb_s: Number(qcm.toFixed(1)), cold_ratio: coldRatio } : {}),
    ...(qs.length > 0 ? { sustained_frames: SUSTAINED_FRAMES, sustained_ours_mb_s: Number(osm.toFixed(1)), sustained_qemu_mb_s: Number(qsm.toFixed(1)), sustained_ratio: sustainedRatio } : {}),
    ...(qr.length > 0 ? { rx_frames: RX_FRAMES, rx_ours_mb_s: Number(orm.toFixed(1)), rx_qemu_mb_s: Number(qrm.toFixed(1)), rx_ratio: rxRatio,
      rx_steady_ours_mb_s: Number(orsm.toFixed(1)), rx_steady_qemu_mb_s: Number(qrsm.toFixed(1)), rx_steady_ratio: rxSteadyRatio } : {}) }));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
