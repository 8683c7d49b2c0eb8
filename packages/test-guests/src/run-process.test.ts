import { readdirSync, readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { describe, expect, it } from "vitest";
import { containedCommand, parseReaperReport } from "./contain.js";
import type { ProcessPlan } from "./launcher.js";
import { runProcess } from "./run-process.js";
import { SerialSink } from "./serial-sink.js";

const plan = (script: string): ProcessPlan => ({ kind: "process", file: "sh", args: ["-c", script], guestExitValue: (c) => c });
const ctl = (timeoutMs: number) => ({ sink: new SerialSink(performance.now()), matches: () => false, timeoutMs, stopTimeoutMs: 2000 });
const arg = `30.${process.pid}777`;
function sleepers(): number[] {
  return readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return readFileSync(`/proc/${d}/cmdline`, "latin1") === `sleep\0${arg}\0` && !/^\d+ \(.*\) [ZX] /.test(readFileSync(`/proc/${d}/stat`, "latin1"));
      } catch {
        return false;
      }
    })
    .map(Number);
}

describe("process-group containment (the fallback without root)", () => {
  it("kills the group on timeout even after the leader exited (a grandchild holding stdout)", async () => {
    const t0 = performance.now();
    const r = await runProcess(plan(`sleep ${arg} & echo started; exit 0`), ctl(500), "process-group");
    const wall = performance.now() - t0;
    expect(r.containment).toBe("process-group");
    expect(r.timedOut).toBe(true); // stdout stayed open until the harness killed the group
    expect(wall).toBeLessThan(1500);
    expect(sleepers()).toEqual([]);
  });
});

describe("the reaper's report", () => {
  it("decodes raw wait statuses, exec failures and silence", () => {
    expect(parseReaperReport("status 768\n")).toEqual({ kind: "status", code: 3, signal: null });
    expect(parseReaperReport("status 9\n")).toEqual({ kind: "status", code: null, signal: "SIGKILL" });
    expect(parseReaperReport("status 139\n")).toEqual({ kind: "status", code: null, signal: "SIGSEGV" }); // 11 | core dumped
    expect(parseReaperReport("exec-failed No such file or directory\n")).toEqual({ kind: "exec-failed", reason: "No such file or directory" });
    expect(parseReaperReport("")).toEqual({ kind: "none" });
  });

  it("wraps the command only for pid-namespace containment", () => {
    expect(containedCommand("qemu", ["-m", "64M"], "process-group")).toEqual({ file: "qemu", args: ["-m", "64M"] });
    const c = containedCommand("qemu", ["-m", "64M"], "pid-namespace");
    expect(c.file).toBe("setpriv");
    expect(c.args.slice(0, 7)).toEqual(["--pdeathsig", "KILL", "unshare", "--pid", "--fork", "--kill-child", "perl"]);
    expect(c.args.slice(-3)).toEqual(["qemu", "-m", "64M"]);
  });
});
