import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";

describe("README example", () => {
  it("examples/doorbell.ts runs and the worker's write is seen through the doorbell", () => {
    const script = new URL("../examples/doorbell.ts", import.meta.url).pathname;
    const r = spawnSync(process.execPath, ["--conditions=@ts-vmm/source", "--import", "tsx", script], { encoding: "utf8", timeout: 30_000 });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^host address 0x[0-9a-f]+, memfd \d+\ndoorbell x1, worker wrote cafe\n$/);
  });
});
