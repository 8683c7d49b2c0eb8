import { spawn, type ChildProcess } from "node:child_process";
import type { Readable } from "node:stream";
import { containedCommand, containment, parseReaperReport, type Containment } from "./contain.js";
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
  const end = (): void => {
    killTree(child);
    killRequested();
  };
  let stderr = "";
  let report = "";
  child.stderr?.on("data", (b: Buffer) => {
    if (stderr.length < 1 << 20) stderr += b.toString("utf8");
  });
  (child.stdio[3] as Readable | null | undefined)?.on("data", (b: Buffer) => {
    report += b.toString("latin1");
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
      code = null;
      signal = null;
    } else [code, signal] = first;
    let valueFromVmm = true;
    if (how === "pid-namespace" && first !== "stuck") {
      const r = parseReaperReport(report);
      if (r.kind === "exec-failed") throw new TestGuestsError("SpawnFailed", `could not start ${plan.file}: ${r.reason}`);
      if (r.kind === "status") {
        code = r.code;
        signal = r.signal;
      } else {
        // unshare (or the reaper) ended without the VMM's status: killed by the harness, or unshare failed.
        valueFromVmm = false;
        if (!timedOut && !stoppedOnSerial) problems.push(`the reaper reported no VMM status (unshare exit ${String(code)}, signal ${String(signal)})`);
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
