// process.exit() and worker.terminate() while a worker's vCPU is inside KVM_RUN
// (issue 14 item 4). Before the fix both hung (the child was killed by the timeout).
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describeKvm } from "@ts-vmm/test-utils";
import { describe, expect, it } from "vitest";

const script = fileURLToPath(new URL("./fixtures/exit-while-running.mjs", import.meta.url));

describeKvm("teardown with a vCPU inside KVM_RUN", () => {
  for (const mode of ["exit", "terminate"]) {
    it(`${mode === "exit" ? "process.exit()" : "worker.terminate()"} returns while a worker spins in a guest`, () => {
      const t0 = Date.now();
      const r = spawnSync(process.execPath, [script, mode], { encoding: "utf8", timeout: 15_000 });
      const ms = Date.now() - t0;
      expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: "" });
      expect(r.stdout).toMatch(mode === "exit" ? /^exit took \d+ ms$/m : /^terminate took \d+ ms, code 1$/m);
      expect(ms).toBeLessThan(10_000);
    });
  }
});

describe("worker.terminate() inside the addon's init", () => {
  it("ends only the worker, never the process (no fatal error from a failed Node-API call)", () => {
    const fixture = fileURLToPath(new URL("./fixtures/terminate-in-init.mjs", import.meta.url));
    const r = spawnSync(process.execPath, [fixture, "30"], { encoding: "utf8", timeout: 60_000 });
    expect({ status: r.status, signal: r.signal, stderr: r.stderr.slice(0, 2000) }).toEqual({ status: 0, signal: null, stderr: "" });
    expect(r.stdout.trim()).toBe("done 30");
  });
});
