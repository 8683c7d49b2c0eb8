import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

// Regression: a mapping created in a worker is unmapped by its backing-store
// deleter while the worker's isolate is torn down, after Node has dlclose()d
// the addon for that worker. Without `-z nodelete` (binding.gyp) the deleter's
// code is gone by then and the whole process segfaults. Run in a child
// process so that a crash shows up as a failed assertion, not a lost runner.
describe("worker teardown", () => {
  it("survives workers that exit while their mappings are still alive", () => {
    const script = fileURLToPath(new URL("../test/fixtures/worker-teardown.mjs", import.meta.url));
    const r = spawnSync(process.execPath, [script], { encoding: "utf8", timeout: 60_000 });
    expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: "" });
    expect(r.stdout).toContain("survived 3 worker teardowns");
  });
});
