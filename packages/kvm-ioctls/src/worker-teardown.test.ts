import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describeKvm } from "@ts-vmm/test-utils";
import { expect, it } from "vitest";

// Workers that create a VM, memory and a vCPU (its kvm_run page mapped in the
// worker), run it and exit — closing everything, leaving it to teardown, or
// being terminated — must not take the process down. The kvm_ioctls addon has
// no finalizers or backing-store deleters of its own (the mappings belong to
// vmm-sys-util, linked with -z nodelete), so it needs no -z nodelete; this test
// guards that. Runs the built dist/ in a child process so a crash is a failed
// assertion (audit of 2026-11-22).
describeKvm("worker teardown", () => {
  it("survives workers that exit or are terminated with a VM and vCPU open", () => {
    const script = fileURLToPath(new URL("../test/fixtures/worker-teardown.mjs", import.meta.url));
    const r = spawnSync(process.execPath, ["--expose-gc", script], { encoding: "utf8", timeout: 60_000 });
    expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: "" });
    expect(r.stdout).toContain("survived 4 worker teardowns");
    expect(r.stdout.match(/: IoOut$/gm)).toHaveLength(4);
  });
});
