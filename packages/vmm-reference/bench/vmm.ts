/**
 * pnpm bench:vmm — the control plane's numbers (issue 11), on real KVM with
 * the micro-guest (mode=ticker) in a 256 MiB VM:
 *
 * - `snapshot_restore_ms`: in a running process (modules loaded, a vCPU
 *   worker prestarted as `ts-vmm` and the pool keep them), from the call of
 *   `Vmm.restore()` (reading and checking the state file: CRC, every field,
 *   the CPU) through `run()` to "running again": vCPU 0's worker entering
 *   KVM_RUN with the restored state (`Vmm.whenRunning()`, stamped in the
 *   worker). Median of RESTORE_RUNS (15) after 2 warm-ups.
 * - `snapshot_restore_process_ms`: from spawning `ts-vmm run --restore
 *   SNAP,mem=MEM` to the restored guest's first serial bytes arriving on the
 *   bench's pipe (the guest ticks every ~0.1 ms, so its next line comes right
 *   after it runs). Includes Node's start, module loading, the restore and
 *   the pipe. Median of PROCESS_RUNS (9) after 1 warm-up.
 * - `pool_p50_ms` / `pool_p99_ms`: a SnapshotPool of POOL_SIZE (4); 100
 *   requests, each `take()` to its guest running (runningAt - requestedAt),
 *   then the VM is released and the next request waits until the pool is full
 *   again (steady-state hand-out, never a restore on demand: `taken_cold` says).
 * - `api_p50_ms`: PUT /machine-config over the API socket (bench/api-latency.ts),
 *   median of 5 runs' p50 over 400 requests.
 *
 * Prints one line per phase and a JSON last line
 * `{"bench":"vmm","snapshot_restore_ms":…,"snapshot_restore_process_ms":…,"pool_p50_ms":…,"pool_p99_ms":…,"api_p50_ms":…}`.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildMicroGuest } from "@ts-vmm/test-guests";
import { SnapshotPool, Vmm, closePrestartedVcpuWorkers, prestartVcpuWorkers, prestartedVcpuWorkers } from "../src/index.js";
import { absoluteNow } from "../src/startup-trace.js";
import { apiLatency } from "./api-latency.js";

const RESTORE_RUNS = 15;
const PROCESS_RUNS = 9;
const POOL_SIZE = 4;
const POOL_REQUESTS = 100;
const MEM_MIB = 256;
const CLI = fileURLToPath(new URL("../dist/bin.js", import.meta.url));

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const quantile = (xs: readonly number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * q))]!;
};
const median = (xs: readonly number[]): number => quantile(xs, 0.5);
const r3 = (x: number): number => Number(x.toFixed(3));
const spread = (xs: readonly number[]): string => `median ${median(xs).toFixed(2)} ms (min ${Math.min(...xs).toFixed(2)}, max ${Math.max(...xs).toFixed(2)}, n=${xs.length})`;
const until = async (cond: () => boolean, ms = 30_000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await sleep(1);
  }
};

console.log(`machine: ${cpus()[0]?.model ?? "unknown"}, ${cpus().length} CPUs, load ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);
const elf = (await buildMicroGuest()).elf;
const dir = mkdtempSync(join(tmpdir(), "ts-vmm-bench-vmm-"));
const snapshotPath = join(dir, "vm.snap"), memFilePath = join(dir, "vm.mem");
try {
  // The snapshot: a 256 MiB ticker, paused after a few ticks.
  {
    let out = "";
    const vm = Vmm.create({ kernel: elf, cmdline: "mode=ticker ticks=4000000000 spin=300000", memMiB: MEM_MIB });
    const run = vm.run({ serial: (b) => { if (out.length < 4096) out += Buffer.from(b).toString(); } });
    await until(() => (out.match(/RESULT tick=/g) ?? []).length > 5);
    await vm.pause();
    const info = await vm.snapshot({ snapshotPath, memFilePath });
    vm.stop();
    await run;
    vm.close();
    console.log(`snapshot: ${info.stateBytes} bytes of state, ${info.memoryBytesWritten >> 20} MiB of memory, taken in ${info.durationMs.toFixed(1)} ms`);
  }

  // Restore to running, in this process.
  const toRunning: number[] = [], restoreOnly: number[] = [], toOutput: number[] = [];
  for (let i = 0; i < RESTORE_RUNS + 2; i++) {
    prestartVcpuWorkers(1);
    await sleep(150); // the prestarted worker has loaded (as in a process that has been up a while)
    let firstOutput = 0;
    const t0 = absoluteNow();
    const vm = Vmm.restore({ snapshotPath, memFilePath });
    const t1 = absoluteNow();
    const run = vm.run({ serial: () => { if (firstOutput === 0) firstOutput = absoluteNow(); } });
    const at = await vm.whenRunning();
    await until(() => firstOutput !== 0, 5_000);
    vm.stop();
    await run;
    vm.close();
    if (i < 2) continue; // warm-up
    restoreOnly.push(t1 - t0);
    toRunning.push(at - t0);
    toOutput.push(firstOutput - t0);
  }
  await closePrestartedVcpuWorkers();
  console.log(`restore to running (in process): ${spread(toRunning)}; Vmm.restore() alone ${spread(restoreOnly)}; to the first serial bytes on the main thread ${spread(toOutput)}`);

  // Restore to the first output, with the process start.
  const withProcess: number[] = [];
  for (let i = 0; i < PROCESS_RUNS + 1; i++) {
    const t0 = absoluteNow();
    const child = spawn(process.execPath, [CLI, "run", "--restore", `${snapshotPath},mem=${memFilePath}`], { stdio: ["ignore", "pipe", "ignore"] });
    const first = await new Promise<number>((resolve, reject) => {
      child.stdout.once("data", () => resolve(absoluteNow()));
      child.once("exit", (c) => reject(new Error(`ts-vmm run --restore exited with ${String(c)} before any output`)));
    });
    child.removeAllListeners("exit");
    const gone = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await gone;
    if (i > 0) withProcess.push(first - t0);
  }
  console.log(`restore with the process start (spawn to the guest's first output): ${spread(withProcess)}`);

  // The pool: 100 hand-outs, each from a full pool.
  const pool = await SnapshotPool.create({ snapshotPath, memFilePath, size: POOL_SIZE });
  const handout: number[] = [];
  try {
    for (let i = 0; i < POOL_REQUESTS; i++) {
      await until(() => pool.ready === POOL_SIZE && prestartedVcpuWorkers() >= POOL_SIZE);
      await sleep(20); // the newest prestarted worker has loaded
      const v = await pool.take();
      handout.push(v.runningAt - v.requestedAt);
      await pool.release(v.id);
    }
  } finally {
    await pool.close();
    await closePrestartedVcpuWorkers();
  }
  const ps = pool.stats();
  console.log(`pool of ${POOL_SIZE}: ${POOL_REQUESTS} hand-outs (take() to the guest running): p50 ${quantile(handout, 0.5).toFixed(3)} ms, p90 ${quantile(handout, 0.9).toFixed(3)} ms, p99 ${quantile(handout, 0.99).toFixed(3)} ms, slowest ${[...handout].sort((a, b) => b - a).slice(0, 5).map((x) => x.toFixed(1)).join(", ")} ms; ${ps.takenCold} restored on demand`);

  const api = await apiLatency(5, 400);
  console.log(`API: PUT /machine-config p50 ${median(api.p50s).toFixed(3)} ms (median of 5 runs of 400)`);

  console.log(JSON.stringify({
    bench: "vmm",
    snapshot_restore_ms: r3(median(toRunning)),
    snapshot_restore_process_ms: r3(median(withProcess)),
    pool_p50_ms: r3(quantile(handout, 0.5)),
    pool_p99_ms: r3(quantile(handout, 0.99)),
    api_p50_ms: r3(median(api.p50s)),
    restore_call_ms: r3(median(restoreOnly)),
    restore_first_output_ms: r3(median(toOutput)),
    pool_taken_cold: ps.takenCold,
    mem_mib: MEM_MIB,
    load: loadavg()[0],
  }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
