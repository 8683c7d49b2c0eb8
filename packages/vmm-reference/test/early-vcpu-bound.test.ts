// vCPU 0's early window has a hard bound (DESIGN.md, start-up): a guest that makes no exits
// (`cli; hlt`) with a vCPU 0 worker that dies before it can kick still leaves the main thread
// at the bound. Were the bound broken, run() would block this thread's event loop for good,
// and no vitest timeout could fire: so the run is done by a child vitest process (this file,
// with TS_VMM_TEST_EARLY_BOUND_CHILD=1) that the parent kills after a timeout.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { describeWith } from "@ts-vmm/test-utils";
import { expect, it, vi } from "vitest";

const CHILD = process.env["TS_VMM_TEST_EARLY_BOUND_CHILD"] === "1";

// The worker run() takes for vCPU 0 throws at once (as a bundle that fails to load would):
// it never says it is ready, never kicks.
vi.mock("../src/worker-pool.js", async (importOriginal) => {
  const orig = await importOriginal<typeof import("../src/worker-pool.js")>();
  return {
    ...orig,
    takeVcpuWorker: <T>(data: T): Worker =>
      process.env["TS_VMM_TEST_EARLY_BOUND_CHILD"] === "1"
        ? new Worker("throw new Error('boom: the worker failed at load')", { eval: true })
        : orig.takeVcpuWorker(data),
  };
});

/** `cli; hlt`: no exit to the VMM ever (the in-kernel LAPIC keeps the halted vCPU in KVM). */
const HALT = [0xfa, 0xf4, 0xeb, 0xfc];

describeWith({ kvm: true }, "vCPU 0's early window: the hard bound", () => {
  // Only one of the two tests is registered: the child's here, the parent's below.
  if (CHILD) it("(child) a guest without exits and a dead worker: run() returns at the bound, given-up, then the worker's error", async () => {
    const { Vmm } = await import("../src/index.js");
    const { rawElf } = await import("./raw-elf.js");
    const maxMs = 20;
    const vmm = Vmm.create({ kernel: rawElf(HALT), memMiB: 16, earlyVcpu: true, earlyVcpuMaxMs: maxMs });
    const t0 = performance.now();
    const p = vmm.run({ serial: () => {} });
    const blockedMs = performance.now() - t0;
    const w = vmm.earlyWindow;
    expect(w?.outcome).toBe("given-up");
    // No exit of the guest's: only the timer's Intr (the no-op kick handler) got it out.
    expect(w!.exits).toBeGreaterThanOrEqual(1);
    expect(w!.exits).toBeLessThanOrEqual(2);
    expect(w!.durationMs).toBeGreaterThanOrEqual(maxMs - 1);
    expect(w!.durationMs).toBeLessThan(maxMs + 200);
    expect(blockedMs).toBeLessThan(500);
    const r = await p;
    vmm.close();
    expect(r.reason).toBe("Error");
    expect(r.detail).toContain("vCPU 0 worker failed: boom");
    expect(r.exits["IoOut"] ?? 0).toBe(0);
    expect(vmm.state).toBe("Stopped");
  });

  else it("a guest without exits and a dead worker does not block the event loop past the bound (run in a child with a timeout)", async () => {
    const file = fileURLToPath(import.meta.url);
    const res = await new Promise<{ code: number | null; signal: string | null; out: string }>((resolve) => {
      // Its own reporter only: no JSON report over the parent's (.vitest-report.json).
      execFile("npx", ["vitest", "run", "--reporter=default", file], {
        cwd: fileURLToPath(new URL("..", import.meta.url)),
        env: { ...process.env, TS_VMM_TEST_EARLY_BOUND_CHILD: "1", NO_COLOR: "1", FORCE_COLOR: "0" },
        timeout: 90_000,
        killSignal: "SIGKILL",
        maxBuffer: 16 << 20,
      }, (err, stdout, stderr) => {
        const e = err as (Error & { code?: unknown; signal?: string | null }) | null;
        resolve({ code: e === null ? 0 : typeof e.code === "number" ? e.code : null, signal: e?.signal ?? null, out: `${stdout}\n${stderr}` });
      });
    });
    expect(res.signal, `the child was killed: run() did not return (output:\n${res.out})`).toBeNull();
    expect(res.code, res.out).toBe(0);
    // The child ran its test (not skipped) and it passed.
    // eslint-disable-next-line no-control-regex
    expect(res.out.replace(/\x1b\[[0-9;]*m/g, "")).toMatch(/Tests\s+1 passed/);
  }, 120_000);
});
