// kick(): a guest spinning at CPL3 in a worker thread is stopped from the main thread.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { describeKvm } from "@ts-vmm/test-utils";
import { afterEach, expect, it } from "vitest";
import { type TestVm, CODE, asm, makeVm } from "./guest.js";
import { VcpuKicker } from "../src/index.js";

const worker = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "run-worker.mjs");
const dist = join(dirname(fileURLToPath(import.meta.url)), "..", "dist", "index.js");

let g: TestVm | undefined;
afterEach(() => {
  g?.close();
  g = undefined;
});

interface Result {
  exits: { kind: string; ms: number }[];
  rip: string;
  error?: string;
}

function startWorker(vm: TestVm, runs: number, onReady: (w: Worker, n: number) => void): Promise<Result> {
  return new Promise((resolve, reject) => {
    // execArgv: [] drops the test runner's source condition, so the worker loads dist/.
    const w = new Worker(worker, { workerData: { vcpu: vm.vcpu.toTransferable(), runs }, execArgv: [] });
    let n = 0;
    w.on("message", (m: { ready?: boolean } & Result) => {
      if (m.ready) onReady(w, n++);
      else if (m.error) reject(new Error(m.error));
      else resolve(m);
    });
    w.on("error", reject);
  });
}

describeKvm("kick() from another thread", () => {
  it("the worker build exists (pnpm run build)", () => {
    expect(existsSync(dist)).toBe(true);
  });

  it("ends a guest stuck in an infinite loop in a worker; run() returns Intr", async () => {
    g = makeVm([...asm.jmpSelf]);
    const kicker = new VcpuKicker(g.vcpu.toTransferable());
    const r = await startWorker(g, 2, () => {
      setTimeout(() => kicker.kick(), 150);
    });
    expect(r.exits.map((e) => e.kind)).toEqual(["Intr", "Intr"]);
    // The guest really ran for a while, then was interrupted, each time.
    for (const e of r.exits) expect(e.ms).toBeGreaterThanOrEqual(100);
    expect(BigInt(r.rip)).toBe(BigInt(CODE));
    expect(g.vcpu.immediateExit).toBe(false);
  });

  it("a kick before the worker enters KVM_RUN is not lost (immediate_exit)", async () => {
    g = makeVm([...asm.jmpSelf]);
    g.vcpu.kick(); // no thread runs it yet: only immediate_exit is set
    expect(g.vcpu.immediateExit).toBe(true);
    const r = await startWorker(g, 1, () => {});
    expect(r.exits.map((e) => e.kind)).toEqual(["Intr"]);
    expect(r.exits[0]!.ms).toBeLessThan(100);
  });

  it("a worker's close() of its borrowed vCPU clears the kick target, so later kicks signal nobody", async () => {
    g = makeVm([...asm.jmpSelf]);
    const t = g.vcpu.toTransferable();
    const tid = new Int32Array(t.tid, 0, 1);
    let seen = 0;
    const w = new Worker(worker, { workerData: { vcpu: t, runs: 1 }, execArgv: [] });
    w.on("message", (m: { ready?: boolean }) => {
      if (m.ready) setTimeout(() => { seen = Atomics.load(tid, 0); g!.vcpu.kick(); }, 150);
    });
    await new Promise((res) => w.on("exit", res));
    expect(seen).toBeGreaterThan(0); // the worker's thread was the kick target while it ran
    expect(Atomics.load(tid, 0)).toBe(0); // and its close() cleared it
  });
});
