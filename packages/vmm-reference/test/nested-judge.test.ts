// The nested tests' judge of which runs to discard (nested-linux.ts, nestedJudge), on
// hand-made run records: the real runs are the nested tests themselves.
import type { NestedRun } from "@ts-vmm/test-guests";
import { describe, expect, it } from "vitest";
import { terminalExit } from "../src/machine/exit-reason.js";
import { nestedJudge, oursTripleFault } from "./nested-linux.js";

// The lines our CLI writes (cli.ts: `ts-vmm: ${detail}`), from the code that words them.
const detail = (rip: string): string => terminalExit(1, { kind: "Shutdown" }, () => rip)?.detail ?? "";
const TF = `ts-vmm: ${detail("0xfff0")}\n`;
const TF_AT = `ts-vmm: ${detail("0xffffffff81000123")}\n`;
const run = (problem: string | null, logs: readonly string[]): NestedRun =>
  ({ problem, guests: logs.map((vmmLog, i) => ({ name: `ours-${i + 1}`, vmmLog })) }) as unknown as NestedRun;

describe("nestedJudge", () => {
  it("reads our CLI's triple-fault line, and nothing else, as a triple fault", () => {
    expect(oursTripleFault({ vmmLog: `noise\n${TF}` })).toBe(detail("0xfff0"));
    expect(oursTripleFault({ vmmLog: TF_AT })).toBe(detail("0xffffffff81000123"));
    expect(oursTripleFault({ vmmLog: "ts-vmm: vCPU 0: KVM_EXIT_INTERNAL_ERROR at RIP 0x1000\n" })).toBeNull();
    expect(oursTripleFault({ vmmLog: "" })).toBeNull();
    expect(detail("0xfff0")).toContain("triple fault");
  });

  it("discards an environment problem every time, a triple fault of ours only once, and a clean run never", () => {
    const judge = nestedJudge((r) => r.problem, (r) => r.guests);
    expect(judge(run(null, ["", ""]))).toBeNull();
    expect(judge(run("L1 stopped responding", [TF]))).toBe("L1 stopped responding");
    expect(judge(run(null, ["", TF]))).toMatch(/^ours-2: vCPU 1: triple fault .*retried once/);
    // The second triple fault is the run's result: the test then fails on it.
    expect(judge(run(null, [TF, ""]))).toBeNull();
    expect(judge(run("L1 stopped responding", [TF]))).toBe("L1 stopped responding");
  });

  it("looks only at the VMMs `boots` picks out", () => {
    const judge = nestedJudge(() => null, (r) => r.guests.filter((g) => g.name === "ours-1"));
    expect(judge(run(null, ["", TF]))).toBeNull();
    expect(judge(run(null, [TF, ""]))).toMatch(/^ours-1: /);
  });
});
