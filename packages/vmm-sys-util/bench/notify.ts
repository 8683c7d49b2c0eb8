// Notification latencies on this machine, as medians of several runs, with a baseline measured
// in the same run (CONTRIBUTING: benchmarks report ratios against a baseline):
//   1. eventfd write -> FdWatcher callback on the same thread, against setImmediate -> callback
//      (both cost one libuv loop iteration; the difference is epoll + the read).
//   2. main thread -> worker blocked in pollFd on an eventfd -> Atomics.notify back, against the
//      same round trip with the worker blocked in Atomics.wait.
// Run: pnpm run bench (prints a Markdown table row to append to BENCHMARKS.md).
import { cpus } from "node:os";
import { Worker } from "node:worker_threads";
import { EventFd, FdWatcher } from "../src/index.js";

const RUNS = 7;
const ITER = Number(process.env["BENCH_ITER"] ?? 2000);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function sameThread(kind: "eventfd" | "immediate"): Promise<number> {
  const e = new EventFd();
  let resolveOne: (() => void) | undefined;
  const w = FdWatcher.watch(e.fd, { readable: true }, () => {
    e.tryRead();
    resolveOne?.();
  });
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < ITER; i++) {
    await new Promise<void>((r) => {
      resolveOne = r;
      if (kind === "eventfd") e.write(1);
      else setImmediate(r);
    });
  }
  const ns = Number(process.hrtime.bigint() - t0) / ITER;
  w.close();
  e.close();
  return ns / 1000;
}

const workerSource = `
const { workerData } = require("node:worker_threads");
const { createRequire } = require("node:module");
const addon = createRequire(workerData.base)("./build/Release/vmm_sys_util.node");
const flag = new Int32Array(workerData.sab);
for (;;) {
  if (workerData.mode === "eventfd") { addon.poll(workerData.fd, 1, -1); addon.eventfdRead(workerData.fd); }
  else { Atomics.wait(flag, 0, 0); Atomics.store(flag, 0, 0); }
  Atomics.add(flag, 1, 1); Atomics.notify(flag, 1);
}`;

async function crossThread(mode: "eventfd" | "atomics"): Promise<number> {
  const e = new EventFd();
  const sab = new SharedArrayBuffer(8);
  const flag = new Int32Array(sab);
  const base = new URL("../", import.meta.url).href;
  const worker = new Worker(workerSource, { eval: true, workerData: { sab, fd: e.fd, mode, base } });
  let failed: unknown;
  worker.on("error", (err) => (failed = err));
  await new Promise((r) => setTimeout(r, 300));
  if (failed !== undefined) throw failed;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < ITER; i++) {
    const before = Atomics.load(flag, 1);
    if (mode === "eventfd") e.write(1);
    else {
      Atomics.store(flag, 0, 1);
      Atomics.notify(flag, 0);
    }
    if (Atomics.wait(flag, 1, before, 2000) === "timed-out") throw new Error(`${mode} worker did not answer`);
  }
  const us = Number(process.hrtime.bigint() - t0) / ITER / 1000;
  // A worker blocked in a native poll(2) cannot be terminated until the call returns: wake it.
  const done = worker.terminate();
  e.write(1);
  await done;
  e.close();
  return us;
}

const rows: Record<string, number[]> = { eventfd: [], immediate: [], xEventfd: [], xAtomics: [] };
for (let r = 0; r < RUNS; r++) {
  rows["eventfd"]!.push(await sameThread("eventfd"));
  rows["immediate"]!.push(await sameThread("immediate"));
  rows["xEventfd"]!.push(await crossThread("eventfd"));
  rows["xAtomics"]!.push(await crossThread("atomics"));
}
const m = Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, median(v)])) as Record<string, number>;
const date = new Date().toISOString().slice(0, 10);
console.log(`| date | machine | eventfd->FdWatcher (us) | setImmediate baseline (us) | ratio | worker pollFd round trip (us) | Atomics.wait baseline (us) | ratio |`);
console.log(`|---|---|---|---|---|---|---|---|`);
console.log(
  `| ${date} | ${cpus()[0]?.model ?? "?"} x${cpus().length}, Node ${process.version} | ${m["eventfd"]!.toFixed(2)} | ${m["immediate"]!.toFixed(2)} | ${(m["eventfd"]! / m["immediate"]!).toFixed(2)} | ${m["xEventfd"]!.toFixed(2)} | ${m["xAtomics"]!.toFixed(2)} | ${(m["xEventfd"]! / m["xAtomics"]!).toFixed(2)} |`,
);
