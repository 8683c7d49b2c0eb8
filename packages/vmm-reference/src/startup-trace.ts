// Start-up trace: with TS_VMM_TRACE_STARTUP=1 in the environment, the CLI
// prints one stderr line per phase of a run's start (process start to the
// first serial byte), each with milliseconds since the process started.
// Workers report their phases to the main thread in absolute time, so every
// line is on the main thread's clock. Off by default: one env lookup.
// TS_VMM_TRACE_STARTUP=live prints each line when it is recorded instead (in
// the order they arrive), for runs that are killed rather than exit, such as
// the nested tier's, which ends a guest with SIGKILL at its marker.
import { performance } from "node:perf_hooks";

/** Whether tracing is on (read once per thread). */
export const TRACE_STARTUP = process.env["TS_VMM_TRACE_STARTUP"] === "1" || process.env["TS_VMM_TRACE_STARTUP"] === "live";
const LIVE = process.env["TS_VMM_TRACE_STARTUP"] === "live";

/** A phase and when it happened, as milliseconds since the Unix epoch (fractional). */
export interface StartupMark {
  readonly phase: string;
  readonly at: number;
}

/** Now, in milliseconds since the epoch with performance.now()'s resolution; comparable across threads. */
export function absoluteNow(): number {
  return performance.timeOrigin + performance.now();
}

// One list per thread even if this module is loaded twice (bin.js loads it
// before the CLI bundle, which has its own copy): it lives on globalThis.
const MARKS = Symbol.for("@ts-vmm/vmm-reference/startup-marks");
const marks: StartupMark[] = ((globalThis as Record<symbol, unknown>)[MARKS] ??= []) as StartupMark[];

/** Records a phase of this thread (no-op unless tracing). */
export function mark(phase: string, at = absoluteNow()): void {
  if (!TRACE_STARTUP) return;
  if (LIVE) process.stderr.write(`ts-vmm: startup +${(at - performance.timeOrigin).toFixed(1)} ms ${phase}\n`);
  else if (marks.length < 64) marks.push({ phase, at });
}

/** The phases this thread recorded so far, in the order recorded (a vCPU worker sends them to the main thread). */
export function startupMarks(): readonly StartupMark[] {
  return [...marks];
}

/** The phases recorded so far, as lines `ts-vmm: startup +12.3 ms phase` relative to this process's start. */
export function startupLines(): string[] {
  const origin = performance.timeOrigin;
  return [...marks].sort((a, b) => a.at - b.at).map((m) => `ts-vmm: startup +${(m.at - origin).toFixed(1)} ms ${m.phase}`);
}
