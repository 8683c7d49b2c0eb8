import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describeWith } from "@ts-vmm/test-utils";
import { buildMicroGuest } from "@ts-vmm/test-guests";
import { afterEach, beforeAll, expect, it, vi } from "vitest";
import { readFileSync } from "node:fs";
import { cacheHeader } from "../src/code-cache.js";
import { closePrestartedVcpuWorkers, handWorkersTheirBundle, prestartCount, prestartVcpuWorkers, prestartedVcpuWorkers, takeVcpuWorker, VCPU_WORKER_BUNDLE, VCPU_WORKER_URL } from "../src/worker-pool.js";

vi.setConfig({ testTimeout: 60_000 });
const BIN = fileURLToPath(new URL("../dist/bin.cjs", import.meta.url));

it("prestartCount reads --vcpus of run only, and counts anything it cannot read as 1", () => {
  expect(prestartCount(["run", "--kernel", "k", "--vcpus", "4"])).toBe(4);
  expect(prestartCount(["run", "--vcpus=3"])).toBe(3);
  expect(prestartCount(["run", "--config", "vm.json"])).toBe(1);
  expect(prestartCount(["run", "--vcpus", "lots"])).toBe(1);
  expect(prestartCount(["cpu-features", "--vcpus", "4"])).toBe(0);
  expect(prestartCount([])).toBe(0);
});

it("the vCPU worker is the CommonJS entry the build made (its bundle with a code cache)", () => {
  expect(VCPU_WORKER_URL.pathname).toMatch(/dist\/vcpu-worker\.entry\.cjs$/);
});

describeWith({ kvm: true, tools: ["gcc", "ld"] }, "start-up: prestarted workers and the bundled CLI", () => {
  let elf = "";
  beforeAll(async () => {
    elf = (await buildMicroGuest()).elf;
  }, 120_000);
  afterEach(async () => closePrestartedVcpuWorkers());

  it("prestarted workers wait without holding the process, and a taken one is handed its data", async () => {
    prestartVcpuWorkers(2);
    expect(prestartedVcpuWorkers()).toBe(2);
    // A worker given a malformed vCPU fails in fromTransferable: proof that it ran main() with the message's data.
    const w = takeVcpuWorker({ vcpu: null });
    expect(prestartedVcpuWorkers()).toBe(1);
    const err = await new Promise<Error>((resolve) => w.once("error", resolve));
    expect(err.message).toMatch(/vcpu|transferable|null/i);
  });

  it("workers prestarted for their bundle from the parent run it once handed, or read it themselves when taken first", async () => {
    expect(VCPU_WORKER_BUNDLE).toMatch(/dist\/vcpu-worker\.run\.cjs$/);
    prestartVcpuWorkers(1, { bundleFromParent: true });
    let handed = 0;
    handWorkersTheirBundle(() => {
      handed++;
      const bytes = readFileSync(VCPU_WORKER_BUNDLE!);
      return { bytes, header: cacheHeader(bytes) };
    });
    expect(handed).toBe(1);
    // Nobody waits any more: a second call reads nothing.
    handWorkersTheirBundle(() => {
      handed++;
      return null;
    });
    expect(handed).toBe(1);
    const a = takeVcpuWorker({ vcpu: null });
    expect((await new Promise<Error>((resolve) => a.once("error", resolve))).message).toMatch(/vcpu|transferable|null/i);
    // Taken before any bundle was handed: it is told to read the file itself, then gets its data.
    prestartVcpuWorkers(1, { bundleFromParent: true });
    const b = takeVcpuWorker({ vcpu: null });
    expect((await new Promise<Error>((resolve) => b.once("error", resolve))).message).toMatch(/vcpu|transferable|null/i);
  });

  it("the ts-vmm binary boots the micro-guest through the bundle with prestarted workers, and the trace names every phase in order", () => {
    const r = spawnSync(process.execPath, [BIN, "run", "--kernel", elf, "--cmdline", "mode=hello", "--mem", "64", "--vcpus", "2"], {
      env: { ...process.env, TS_VMM_TRACE_STARTUP: "1" }, encoding: "utf8", timeout: 30_000,
    });
    expect(r.stdout, r.stderr).toContain("hello from the ts-vmm micro-guest");
    expect(r.status, r.stderr).toBe(1); // debug-exit value 0: (0 << 1) | 1
    const phases = r.stderr.split("\n").filter((l) => l.startsWith("ts-vmm: startup +")).map((l) => l.replace(/^ts-vmm: startup \+[\d.]+ ms /, ""));
    for (const p of ["node bootstrap done", "vCPU workers prestarting", "ts-vmm binary loaded", "cli modules loaded", "kvm opened", "kernel loaded", "vcpus set up", "vCPU 0 worker spawned", "vCPU 1 worker spawned", "vCPU 0: first KVM_RUN, on the main thread", "first serial output on the main thread"]) {
      expect(phases, r.stderr).toContain(p);
    }
    // A worker posts its phases just before its first KVM_RUN; one still loading when the
    // guest ends (all of hello can run in vCPU 0's early window on a loaded host) is ended first.
    const endedEarly = phases.includes("vCPU 0 ended in the early window");
    const workerPhases = ["vCPU 1: worker thread started", "vCPU 1: worker modules loaded", "vCPU 1: start message received", "vCPU 1: first KVM_RUN"];
    if (!endedEarly || phases.includes("vCPU 1: first KVM_RUN")) for (const p of workerPhases) expect(phases, r.stderr).toContain(p);
    const at = (p: string): number => Number(/\+([\d.]+) ms/.exec(r.stderr.split("\n").find((l) => l.endsWith(` ${p}`))!)![1]);
    expect(at("kvm opened")).toBeLessThan(at("vcpus set up"));
    expect(at("vCPU workers prestarting")).toBeLessThan(at("ts-vmm binary loaded"));
    if (phases.includes("vCPU 1: first KVM_RUN")) expect(at("vCPU 1: worker thread started")).toBeLessThan(at("vCPU 1: worker modules loaded"));
    // vCPU 0 starts on the main thread (its early window) and moves to its worker once that is ready.
    expect(at("vcpus set up")).toBeLessThanOrEqual(at("vCPU 0: first KVM_RUN, on the main thread"));
    expect(at("vCPU 0: first KVM_RUN, on the main thread")).toBeLessThan(at("first serial output on the main thread"));
    // Unless the guest ended in the window (its worker then never runs it): hello takes a few ms.
    // vCPU 0's worker reports its phases only if it took the vCPU (else it is ended before it posts them).
    if (phases.includes("vCPU 0 handed to its worker")) {
      for (const p of ["vCPU 0: worker thread started", "vCPU 0: worker modules loaded", "vCPU 0: start message received", "vCPU 0: first KVM_RUN"]) expect(phases, r.stderr).toContain(p);
      expect(at("vCPU 0: first KVM_RUN, on the main thread")).toBeLessThan(at("vCPU 0: first KVM_RUN"));
    }
    else expect(endedEarly || phases.some((p) => p.startsWith("vCPU 0's early window given up")), r.stderr).toBe(true);
  });

  it("with TS_VMM_EARLY_VCPU=0 vCPU 0 runs in its prestarted worker from the start, and the trace has all of that worker's phases in order", () => {
    const r = spawnSync(process.execPath, [BIN, "run", "--kernel", elf, "--cmdline", "mode=hello", "--mem", "64"], {
      env: { ...process.env, TS_VMM_TRACE_STARTUP: "1", TS_VMM_EARLY_VCPU: "0" }, encoding: "utf8", timeout: 30_000,
    });
    expect(r.stdout, r.stderr).toContain("hello from the ts-vmm micro-guest");
    expect(r.status, r.stderr).toBe(1);
    const phases = r.stderr.split("\n").filter((l) => l.startsWith("ts-vmm: startup +")).map((l) => l.replace(/^ts-vmm: startup \+[\d.]+ ms /, ""));
    const at = (p: string): number => Number(/\+([\d.]+) ms/.exec(r.stderr.split("\n").find((l) => l.endsWith(` ${p}`))!)![1]);
    const worker0 = ["vCPU 0 worker spawned", "vCPU 0: worker thread started", "vCPU 0: worker modules loaded", "vCPU 0: start message received", "vCPU 0: first KVM_RUN", "first serial output on the main thread"];
    for (const p of worker0) expect(phases, r.stderr).toContain(p);
    expect(phases.some((p) => p.startsWith("vCPU 0: first KVM_RUN, on the main thread")), r.stderr).toBe(false);
    expect(phases.some((p) => p.includes("early window")), r.stderr).toBe(false);
    // The worker's own phases are in order, and it ran the guest before the first byte came out.
    expect(at("vCPU 0: worker thread started")).toBeLessThan(at("vCPU 0: worker modules loaded"));
    expect(at("vCPU 0: start message received")).toBeLessThan(at("vCPU 0: first KVM_RUN"));
    expect(at("vCPU 0: first KVM_RUN")).toBeLessThan(at("first serial output on the main thread"));
  });
});
