import { constants } from "node:os";
import { check, closedError, invalid } from "./errors.js";
import { native } from "./native.js";
import { intArg } from "./validate.js";

/** The longest delay or interval accepted: one day, in milliseconds. */
const MAX_MS = 86_400_000;

function msArg(name: string, v: unknown, min: number): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > MAX_MS) {
    throw invalid(`${name} must be a number of milliseconds in [${min}, ${MAX_MS}], got ${String(v)}`);
  }
  return v;
}

/**
 * A one-shot or periodic timer that sends a real-time signal to the thread that created it
 * (timer_create(2) with CLOCK_MONOTONIC and SIGEV_THREAD_ID). With the kick signal
 * (`installKickSignal`), it bounds a blocking system call of that thread — KVM_RUN,
 * poll(2), read(2) return `EINTR` when it fires — without another thread to send the signal.
 * A signal that arrives while the thread is not blocked is absorbed by the no-op handler, so
 * a caller that must not miss it uses an interval (the next expiry interrupts) or checks the
 * time before blocking.
 *
 * Works on any thread (a worker's timer signals that worker). `close()` deletes the timer;
 * a timer that is not closed lives until the process ends.
 */
export class ThreadTimer {
  #id: number;

  private constructor(id: number) {
    this.#id = id;
  }

  /**
   * Creates a disarmed timer for the calling thread.
   * @param signo - a real-time signal with a handler installed (`installKickSignal`)
   * @returns the timer
   * @throws VmmSysError `InvalidArgument` for a signal that is not real-time or has no
   *   handler (its default action would end the process); an errno name if timer_create fails
   */
  static create(signo: number): ThreadTimer {
    const n = native();
    intArg("signo", signo, n.sigrtmin(), n.sigrtmax());
    const r = n.threadTimerCreate(signo);
    if (r === -constants.errno.EINVAL) throw invalid(`no handler is installed for signal ${signo}: call installKickSignal first`);
    return new ThreadTimer(check("timer_create", r));
  }

  /**
   * Arms the timer: first expiry after `firstMs`, then every `intervalMs` (0: once).
   * Re-arming replaces the previous setting.
   * @param firstMs - milliseconds until the first expiry (> 0, at most one day)
   * @param intervalMs - milliseconds between later expiries, 0 for none (default 0)
   * @throws VmmSysError `Closed` after `close()`; `InvalidArgument` for bad times
   */
  arm(firstMs: number, intervalMs = 0): void {
    const id = this.#live();
    msArg("firstMs", firstMs, 0.000001);
    msArg("intervalMs", intervalMs, 0);
    check("timer_settime", native().threadTimerSet(id, Math.max(1, Math.round(firstMs * 1e6)), Math.round(intervalMs * 1e6)));
  }

  /**
   * Stops the timer (no further expiry); it can be armed again.
   * @throws VmmSysError `Closed` after `close()`
   */
  disarm(): void {
    check("timer_settime", native().threadTimerSet(this.#live(), 0, 0));
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#id < 0;
  }

  /** Deletes the timer. Idempotent. */
  close(): void {
    if (this.#id < 0) return;
    const id = this.#id;
    this.#id = -1;
    check("timer_delete", native().threadTimerDelete(id));
  }

  #live(): number {
    if (this.#id < 0) throw closedError("ThreadTimer");
    return this.#id;
  }
}
