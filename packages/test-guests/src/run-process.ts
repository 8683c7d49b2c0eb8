import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import type { Readable } from "node:stream";
import { containedCommand, containment, parseReaperReport, reaperPid, type Containment } from "./contain.js";
import { TestGuestsError } from "./error.js";
import type { ProcessPlan } from "./launcher.js";
import type { Ended, RunControl } from "./serial-sink.js";

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/**
 * SIGKILLs the child's process group (which still works after the group
 * leader exited, as long as a member is left) and the child itself. Under
 * `pid-namespace` containment the child is `unshare`: its death takes the
 * reaper (pid 1) and with it every process of the namespace.
 */
function killTree(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    /* no such group (any more) */
  }
  try {
    child.kill("SIGKILL");
  } catch {
    /* already gone */
  }
}

/** True while a process of group `pgid` is alive (a zombie is dead: it only waits to be reaped). */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch {
    return false; // ESRCH: the group is empty
  }
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${d}/stat`, "latin1");
    } catch {
      continue; // gone meanwhile
    }
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(f[2]) === pgid && f[0] !== "Z" && f[0] !== "X") return true;
  }
  return false;
}

/** Polls until no live process is left in the child's process group, at most `ms`. */
async function groupGone(child: ChildProcess, ms: number): Promise<boolean> {
  const pgid = child.pid;
  if (pgid === undefined) return true;
  const deadline = Date.now() + ms;
  while (groupAlive(pgid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
  return true;
}

/** Runs a {@link ProcessPlan} under the machine's {@link Containment} until it ends or is ended. */
export async function runProcess(plan: ProcessPlan, ctl: RunControl, how: Containment = containment()): Promise<Ended & { containment: Containment }> {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", () => {
      for (const c of live) killTree(c);
    });
  }
  const cmd = containedCommand(plan.file, plan.args, how);
  let child: ChildProcess;
  try {
    child = spawn(cmd.file, cmd.args, {
      detached: true, // own process group
      stdio: ["ignore", "pipe", "pipe", how === "pid-namespace" ? "pipe" : "ignore"],
      env: plan.env ? { ...process.env, ...plan.env } : process.env,
    });
  } catch (cause) {
    throw new TestGuestsError("SpawnFailed", `could not start ${plan.file}`, { cause });
  }
  live.add(child);
  const problems: string[] = [];
  let timedOut = false;
  let stoppedOnSerial = false;
  let callbackError: unknown;
  let childClosed = false;
  let killRequested: () => void = () => {};
  const killed = new Promise<void>((res) => (killRequested = res));
  let ending = false;
  let report = "";
  let reaperKilled = false;
  // In a pid namespace the run is ended by killing the reaper (pid 1 there): its exit
  // completes only once every process of the namespace is gone, and unshare, which
  // waits for it, exits after that, so 'close' means nothing is left. Killing unshare
  // first would let 'close' come while the kernel is still killing the namespace.
  const killReaper = (): boolean => {
    const pid = reaperPid(report);
    if (pid === null || childClosed) return false;
    if (!reaperKilled) {
      reaperKilled = true;
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        /* already gone */
      }
    }
    return true;
  };
  const end = (): void => {
    if (!ending) {
      ending = true;
      // Not started far enough to know the reaper: kill unshare when it reports, or at
      // the latest after stopTimeoutMs.
      if (how === "process-group" || !killReaper()) {
        if (how === "process-group") killTree(child);
        else setTimeout(() => killTree(child), ctl.stopTimeoutMs).unref();
      }
    }
    killRequested();
  };
  let stderr = "";
  child.stderr?.on("data", (b: Buffer) => {
    if (stderr.length < 1 << 20) stderr += b.toString("utf8");
  });
  (child.stdio[3] as Readable | null | undefined)?.on("data", (b: Buffer) => {
    report += b.toString("latin1");
    if (ending) killReaper();
  });
  child.stdout?.on("data", (b: Buffer) => {
    try {
      ctl.sink.push(b);
      if (!stoppedOnSerial && !timedOut && ctl.matches()) {
        stoppedOnSerial = true;
        end();
      }
    } catch (e) {
      callbackError ??= e;
      end();
    }
  });
  const timer = setTimeout(() => {
    timedOut = true;
    end();
  }, ctl.timeoutMs);
  try {
    const closed = new Promise<[number | null, NodeJS.Signals | null]>((res, rej) => {
      child.once("error", (cause) => rej(new TestGuestsError("SpawnFailed", `could not start ${plan.file}: ${cause.message}`, { cause })));
      child.once("close", (c, s) => {
        childClosed = true;
        res([c, s]);
      });
    });
    // After a kill the close must follow promptly; a process stuck in the kernel must not hang the run.
    const stuck = killed.then(() => new Promise<"stuck">((res) => setTimeout(() => res("stuck"), ctl.stopTimeoutMs).unref()));
    const first = await Promise.race([closed, stuck]);
    if (callbackError !== undefined) throw callbackError;
    let code: number | null;
    let signal: NodeJS.Signals | null;
    if (first === "stuck") {
      problems.push(`the VMM's stdio did not close within ${ctl.stopTimeoutMs} ms of SIGKILL`);
      killTree(child);
      code = null;
      signal = null;
    } else [code, signal] = first;
    if (how === "process-group") {
      // SIGKILL to the group, then wait until the kernel has removed every member: a
      // member that does not hold stdout may still be dying when 'close' arrives.
      killTree(child);
      if (!(await groupGone(child, ctl.stopTimeoutMs))) problems.push(`processes of the VMM's group were still there ${ctl.stopTimeoutMs} ms after SIGKILL`);
    }
    let valueFromVmm = true;
    if (how === "pid-namespace" && first !== "stuck") {
      const r = parseReaperReport(report);
      if (r.kind === "exec-failed") throw new TestGuestsError("SpawnFailed", `could not start ${plan.file}: ${r.reason}`);
      if (r.kind === "status") {
        code = r.code;
        signal = r.signal;
      } else {
        // No status from the reaper: the harness killed it (the kernel then SIGKILLed the
        // VMM with the rest of the namespace), or unshare or the reaper failed.
        valueFromVmm = false;
        if (reaperKilled || ((timedOut || stoppedOnSerial) && code === null)) {
          code = null;
          signal = "SIGKILL";
        } else problems.push(`the reaper reported no VMM status (unshare exit ${String(code)}, signal ${String(signal)})`);
      }
    }
    const vmmExitValue = valueFromVmm && first !== "stuck" ? plan.guestExitValue(code, signal) : null;
    return {
      vmmExit: { code, signal },
      vmmExitValue,
      ...(plan.exitValueBits !== undefined ? { valueBits: plan.exitValueBits } : {}),
      timedOut,
      stoppedOnSerial,
      vmmLog: stderr,
      problems,
      containment: how,
    };
  } finally {
    clearTimeout(timer);
    // Whatever the VMM left in its group (process-group containment; in a pid
    // namespace nothing outlives the reaper, and the reaped pid must not be reused).
    if (!childClosed || how === "process-group") killTree(child);
    live.delete(child);
  }
}
