import { Worker, isMainThread, threadId } from "node:worker_threads";
import { installKickSignal, tgkill } from "@ts-vmm/vmm-sys-util";
import { type KvmError, fromSysError } from "./errors.js";
import { RUN } from "./layouts/kvm-run.js";
import { native } from "./native.js";

/**
 * What a vCPU needs in another thread: its fd, the shared kvm_run page, a
 * cell holding the tid of the thread that runs it, and the kick signal.
 * Plain data: pass it to a worker with postMessage (the SharedArrayBuffers
 * are shared, not copied).
 */
export interface VcpuTransferable {
  readonly fd: number;
  readonly id: number;
  /** The kvm_run mapping (MmapRegion.buffer); keeps the mapping alive. */
  readonly run: SharedArrayBuffer;
  /** Int32 cell: tid of the thread currently running the vCPU, 0 if none. */
  readonly tid: SharedArrayBuffer;
  /** Real-time signal that kicks the vCPU thread out of KVM_RUN. */
  readonly kickSignal: number;
  /** KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2), 0 if unsupported. */
  readonly xsave2Size: number;
  /** KVM_CHECK_EXTENSION(KVM_CAP_NESTED_STATE) of the VM, 0 (the default) if unsupported. */
  readonly nestedStateSize?: number;
}

/**
 * Kicks a vCPU out of KVM_RUN from any thread: sets kvm_run.immediate_exit,
 * then sends the kick signal to the thread recorded in the tid cell.
 *
 * Race-free: if the vCPU thread is not in KVM_RUN yet, immediate_exit makes
 * its next KVM_RUN return at once; if it is inside, the signal interrupts it.
 * Either way run() returns `{ kind: "Intr" }` and clears immediate_exit.
 * Kicks that arrive together coalesce into one Intr: after an Intr, check
 * whatever request state the kick was about before running again.
 */
export class VcpuKicker {
  readonly #run: Uint8Array;
  readonly #tid: Int32Array;
  readonly #signal: number;

  constructor(t: VcpuTransferable) {
    this.#run = new Uint8Array(t.run, 0, RUN.size);
    this.#tid = new Int32Array(t.tid, 0, 1);
    this.#signal = t.kickSignal;
  }

  /** Sets immediate_exit, then signals the vCPU thread. @throws {@link KvmError} if tgkill fails other than with ESRCH (thread gone). */
  kick(): void {
    Atomics.store(this.#run, RUN.immediateExit, 1);
    const tid = Atomics.load(this.#tid, 0);
    if (tid <= 0) return;
    try {
      tgkill(tid, this.#signal);
    } catch (e) {
      if ((e as { code?: string }).code !== "ESRCH") throw fromSysError(e, "tgkill");
    }
  }
}

let kickSignal: number | undefined;

/** The process-wide kick signal, installing its (empty, non-restarting) handler once. @internal */
export function ensureKickSignal(): number {
  if (kickSignal === undefined) kickSignal = installKickSignal();
  return kickSignal;
}

let threadRecorded = false;

/**
 * Records this thread's `threadId` in the addon, once per thread, before its first
 * vCPU run (so `worker.terminate()` in another thread can find its vCPUs). @internal
 */
export function recordRunThread(): void {
  if (threadRecorded) return;
  threadRecorded = true;
  native().setThreadId?.(threadId);
}

const TERMINATE_KICK = Symbol.for("@ts-vmm/kvm-ioctls.terminate-kick");

/**
 * Teardown kicks (issue 14 item 4): Node joins worker threads on `process.exit()` and
 * in `worker.terminate()`, and a worker blocked in KVM_RUN under a spinning guest never
 * comes back to JavaScript, so both hung. Importing this package therefore (a) in the
 * main thread adds a `process.on("exit")` listener that kicks every vCPU thread of the
 * process out of KVM_RUN and keeps it out, and (b) in every thread wraps
 * `Worker.prototype.terminate` to do the same for that worker's threads first. Each waits
 * at most ~2 s. Without the real addon (an injected binding) both do nothing.
 */
function installTeardownKicks(): void {
  const kickAll = (id: number): void => {
    const n = native();
    if (typeof n.kickRunning !== "function") return;
    n.kickRunning(ensureKickSignal(), id);
  };
  if (isMainThread) process.on("exit", () => kickAll(-1));
  const proto = Worker.prototype as unknown as Record<symbol, unknown> & { terminate: (this: Worker) => Promise<number> };
  if (proto[TERMINATE_KICK] === true) return;
  const terminate = proto.terminate;
  proto.terminate = function (this: Worker): Promise<number> {
    if (this.threadId >= 0) kickAll(this.threadId);
    return terminate.call(this);
  };
  proto[TERMINATE_KICK] = true;
}

installTeardownKicks();
