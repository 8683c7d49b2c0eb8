/**
 * Snapshot and restore of an L2 guest inside L1 (see nested.ts): one guest
 * step runs the VMM, and at a serial marker L1 pauses the guest through the
 * VMM's API (PATCH /vm, Firecracker's shape) for a while and resumes it,
 * then signals the VMM to write a snapshot, lets the guest run on a moment,
 * kills the VMM, and continues the guest from the snapshot files in a new
 * VMM process. Both processes' serial output and stderr are kept; what L1
 * saw and when (its uptime) goes to the step's side lines (`snap-…`).
 */
import { TestGuestsError } from "./error.js";
import type { ProcessPlan } from "./launcher.js";
import type { SerialLine } from "./results.js";

/** Signals a VMM may take for "write a snapshot now". */
export type SnapshotSignal = "SIGUSR1" | "SIGUSR2" | "SIGHUP";

/**
 * What a launcher needs to say so that the nested harness can snapshot its
 * VMM and restore it in a new process (see {@link NestedSnapshot}).
 */
export interface SnapshotLauncher {
  /** Extra arguments for the first VMM: write a snapshot into `dir` on `signal`; serve the API on `apiSock` when given. */
  snapshotArgs(o: { readonly dir: string; readonly signal: SnapshotSignal; readonly apiSock?: string }): string[];
  /** Text on the VMM's stderr once the snapshot is written (its files complete). */
  readonly snapshotDoneText: string;
  /** Text on the VMM's stderr if writing the snapshot failed. */
  readonly snapshotFailedText: string;
  /** The new VMM process that continues the guest from the snapshot in `dir`. */
  restorePlan(o: { readonly dir: string; readonly extraArgs: readonly string[] }): ProcessPlan;
}

/** A snapshot/restore of one nested guest (see {@link NestedGuest.snapshot}). */
export interface NestedSnapshot {
  /** L1 starts once a serial line of the first VMM contains this text. */
  readonly atSerial: string;
  /** Where the snapshot goes, a directory inside L1 (emptied first). Default `/run/tsvmm/snap-<step>`. */
  readonly dir?: string;
  /** The signal (default SIGUSR1). */
  readonly signal?: SnapshotSignal;
  /**
   * Pause the guest through the API for this many ms first (PATCH /vm
   * Paused, GET / while paused, PATCH /vm Resumed), counting the serial lines
   * the VMM writes while it is paused. 0 or absent: no pause, no API socket.
   */
  readonly pauseMs?: number;
  /** After the pause, before the snapshot, ms (default 2000). */
  readonly beforeSnapshotMs?: number;
  /** After the snapshot is written, the first VMM runs on this long before L1 kills it, ms (default 1500). */
  readonly keepRunningMs?: number;
  /** L1 notes its uptime when the restored VMM first writes a line containing this text (default: its first line). */
  readonly restoredMarker?: string;
  /** Arguments appended to the restore process (after the launcher's). */
  readonly restoreArgs?: readonly string[];
}

/** What L1 reported about a snapshot step (all times are L1's uptime in s, null if never reached). */
export interface NestedSnapshotReport {
  /** The API answers, `"<status> <body>"` (null without a pause). */
  readonly pause: {
    readonly paused: string;
    /** GET / while paused. */
    readonly info: string;
    readonly resumed: string;
    /** Serial lines of the first VMM 1 s into the pause and at its end: equal if the guest stood still. */
    readonly linesAtPause: number;
    readonly linesAtResume: number;
    readonly pausedAt: number | null;
    readonly resumedAt: number | null;
  } | null;
  /** Serial lines of the first VMM when L1 sent the signal. */
  readonly linesAtSignal: number | null;
  readonly signalAt: number | null;
  /** When the done (or failed) text appeared on its stderr. */
  readonly writtenAt: number | null;
  /** Whether the done text appeared (false: the failed text, or nothing within 60 s). */
  readonly written: boolean;
  /** `ls -l` of the snapshot directory after it was written. */
  readonly files: string;
  /** When L1 started the restore process. */
  readonly restoreStartAt: number | null;
  /** When the restored VMM's first line with {@link NestedSnapshot.restoredMarker} arrived. */
  readonly restoredMarkerAt: number | null;
  /** L1's current clocksource and its kernel's TSC calibration/instability lines (its KVM has a master clock only on `tsc`). */
  readonly l1Clocksource: string;
}

/** The first VMM of a snapshot step (the one L1 snapshotted and killed). */
export interface NestedSnapshotted {
  readonly lines: readonly SerialLine[];
  readonly serial: string;
  /** Its stderr (at most 64 KiB). */
  readonly vmmLog: string;
  /** Its exit status in L1 (137 when L1 killed it after the snapshot). */
  readonly status: number;
  /** `snapshot` when L1 killed it after the snapshot as planned; `exit` or `timeout` otherwise. */
  readonly reason: string;
  /** What L1 did and when. */
  readonly report: NestedSnapshotReport;
}

/** The line L1 prints between the two VMMs of a snapshot step (with the step's id and the first VMM's end). */
export const RESTORE_MARKER = "TSVMM-STEP-RESTORE ";
/** The line between the two VMMs' stderr in a snapshot step's log block. */
export const LOG_SPLIT_MARKER = "TSVMM-STEP-LOG-SPLIT ";

/** A tiny HTTP-over-Unix-socket client for L1 (busybox has no curl; node is in L1 with the VMM): prints `<status> <body>`. */
const API_CLIENT = [
  `const [s, m, p, b] = process.argv.slice(1);`,
  `const t = setTimeout(() => { console.log("timeout"); process.exit(1); }, 30000);`,
  `const r = require("http").request({ socketPath: s, method: m, path: p, headers: b ? { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(b) } : {} }, (x) => {`,
  `  let d = ""; x.setEncoding("utf8"); x.on("data", (c) => { d += c; }); x.on("end", () => { clearTimeout(t); console.log(x.statusCode + " " + d.replace(/\\s+/g, " ")); });`,
  `});`,
  `r.on("error", (e) => { clearTimeout(t); console.log("error " + e.message); });`,
  `r.end(b || undefined);`,
].join("\n");

/** A checked, defaulted {@link NestedSnapshot}. @internal */
export interface SnapshotPlan {
  readonly atSerial: string;
  readonly dir: string;
  readonly signal: SnapshotSignal;
  readonly pauseMs: number;
  readonly apiSock: string | null;
  readonly beforeSnapshotMs: number;
  readonly keepRunningMs: number;
  readonly restoredMarker: string | null;
  readonly doneText: string;
  readonly failedText: string;
  /** The restore process. */
  readonly restore: ProcessPlan;
}

const SAFE_PATH = /^\/[A-Za-z0-9_./-]{1,90}$/;

function checkText(name: string, t: string): void {
  if (t.length === 0 || /[\r\n]/.test(t)) throw new TestGuestsError("InvalidArgument", `${name} must be non-empty text without line breaks`);
}

function checkMs(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 600_000) throw new TestGuestsError("InvalidArgument", `${name} must be an integer in 0..600000 ms, got ${v}`);
}

/**
 * Checks a guest's snapshot options against its launcher and fills the defaults.
 * @returns the plan and the extra arguments of the first VMM.
 * @throws {@link TestGuestsError} `Unsupported` for a launcher without {@link SnapshotLauncher}, `InvalidArgument` for bad options.
 * @internal
 */
export function planSnapshot(name: string, s: NestedSnapshot, launcher: SnapshotLauncher | undefined, index: number): { plan: SnapshotPlan; firstArgs: string[] } {
  if (launcher === undefined) throw new TestGuestsError("Unsupported", `${name}: this launcher cannot snapshot and restore (no SnapshotLauncher)`);
  checkText(`${name}: snapshot.atSerial`, s.atSerial);
  if (s.restoredMarker !== undefined) checkText(`${name}: snapshot.restoredMarker`, s.restoredMarker);
  const dir = s.dir ?? `/run/tsvmm/snap-${index}`;
  if (!SAFE_PATH.test(dir) || dir.includes("..")) throw new TestGuestsError("InvalidArgument", `${name}: snapshot.dir must be an absolute path of [A-Za-z0-9_./-] without "..", got ${JSON.stringify(dir)}`);
  const signal = s.signal ?? "SIGUSR1";
  if (!["SIGUSR1", "SIGUSR2", "SIGHUP"].includes(signal)) throw new TestGuestsError("InvalidArgument", `${name}: snapshot.signal must be SIGUSR1, SIGUSR2 or SIGHUP`);
  const pauseMs = s.pauseMs ?? 0;
  const beforeSnapshotMs = s.beforeSnapshotMs ?? 2000;
  const keepRunningMs = s.keepRunningMs ?? 1500;
  checkMs(`${name}: snapshot.pauseMs`, pauseMs);
  checkMs(`${name}: snapshot.beforeSnapshotMs`, beforeSnapshotMs);
  checkMs(`${name}: snapshot.keepRunningMs`, keepRunningMs);
  const apiSock = pauseMs > 0 ? `/run/tsvmm/api-${index}.sock` : null;
  const firstArgs = launcher.snapshotArgs({ dir, signal, ...(apiSock !== null ? { apiSock } : {}) });
  const restore = launcher.restorePlan({ dir, extraArgs: s.restoreArgs ?? [] });
  checkText(`${name}: the launcher's snapshotDoneText`, launcher.snapshotDoneText);
  checkText(`${name}: the launcher's snapshotFailedText`, launcher.snapshotFailedText);
  return {
    plan: {
      atSerial: s.atSerial, dir, signal, pauseMs, apiSock, beforeSnapshotMs, keepRunningMs,
      restoredMarker: s.restoredMarker ?? null, doneText: launcher.snapshotDoneText, failedText: launcher.snapshotFailedText, restore,
    },
    firstArgs,
  };
}

const secs = (ms: number): string => (ms / 1000).toFixed(3);

/**
 * The shell of L1's snapshot driver for step `tag`: a function `snapdrv`
 * that the first VMM's read loop starts in the background at the marker.
 * It reads `$pid` (the first VMM) and writes `snap-…` lines to `side`.
 * @internal
 */
export function snapshotDriver(p: SnapshotPlan, tag: string, side: string, node: string, q: (s: string) => string): string[] {
  const serial = `/tmp/serial-${tag}`;
  const err = `/tmp/err-${tag}`;
  const up = `$(cut -d' ' -f1 /proc/uptime)`;
  const api = (method: string, path: string, body?: string): string => `$(snapapi ${method} ${path}${body !== undefined ? ` ${q(body)}` : ""})`;
  const lines: string[] = [];
  if (p.apiSock !== null) {
    lines.push(`snapapi() { ${q(node)} -e ${q(API_CLIENT)} ${q(p.apiSock)} "$@" 2>&1 | tr '\\n' ' ' | head -c 300; }`);
  }
  lines.push(`snapdrv() {`);
  if (p.apiSock !== null) {
    lines.push(
      `  a=${api("PATCH", "/vm", JSON.stringify({ state: "Paused" }))}; t1=${up}`,
      `  sleep 1; c1=$(wc -l < ${serial}); g=${api("GET", "/")}`,
      `  sleep ${secs(Math.max(0, p.pauseMs - 1000))}; c2=$(wc -l < ${serial})`,
      `  b=${api("PATCH", "/vm", JSON.stringify({ state: "Resumed" }))}; t2=${up}`,
      `  echo "snap-paused at=$t1 $a" >> ${side}; echo "snap-info $g" >> ${side}`,
      `  echo "snap-resumed at=$t2 $b" >> ${side}; echo "snap-lines paused=$c1 resumed=$c2" >> ${side}`,
    );
  }
  lines.push(
    `  sleep ${secs(p.beforeSnapshotMs)}`,
    `  c=$(wc -l < ${serial}); t3=${up}; kill -${p.signal.slice(3)} $pid`,
    `  k=0; while ! grep -qF ${q(p.doneText)} ${err} && ! grep -qF ${q(p.failedText)} ${err} && [ $k -lt 600 ]; do sleep 0.1; k=$((k+1)); done`,
    `  t4=${up}; ok=no; grep -qF ${q(p.doneText)} ${err} && ok=yes`,
    `  echo "snap-signal at=$t3 lines=$c" >> ${side}; echo "snap-written at=$t4 ok=$ok" >> ${side}`,
    `  echo "snap-files $(ls -l ${q(p.dir)} | tr -s ' ' | tr '\\n' ';')" >> ${side}`,
    `  sleep ${secs(p.keepRunningMs)}`,
    `  echo snapshot > /tmp/why-${tag}; { kill -9 -$pid || kill -9 $pid; } 2>/dev/null`,
    `}`,
  );
  return lines;
}

/** Parses a step's `snap-…` side lines. @internal */
export function snapshotReport(side: readonly string[], withPause: boolean): NestedSnapshotReport {
  const get = (k: string): string | undefined => side.find((l) => l.startsWith(`snap-${k} `) || l === `snap-${k}`)?.slice(k.length + 6);
  const at = (k: string): number | null => {
    const m = /\bat=([\d.]+)/.exec(get(k) ?? "");
    return m ? Number(m[1]) : null;
  };
  const answer = (k: string): string => (get(k) ?? "").replace(/^at=[\d.]+ ?/, "").trim();
  const lines = /paused=(\d+) resumed=(\d+)/.exec(get("lines") ?? "");
  const sig = /\blines=(\d+)/.exec(get("signal") ?? "");
  return {
    pause: withPause
      ? {
          paused: answer("paused"), info: (get("info") ?? "").trim(), resumed: answer("resumed"),
          linesAtPause: lines ? Number(lines[1]) : -1, linesAtResume: lines ? Number(lines[2]) : -1,
          pausedAt: at("paused"), resumedAt: at("resumed"),
        }
      : null,
    linesAtSignal: sig ? Number(sig[1]) : null,
    signalAt: at("signal"),
    writtenAt: at("written"),
    written: /\bok=yes\b/.test(get("written") ?? ""),
    files: (get("files") ?? "").trim(),
    restoreStartAt: at("restore-start"),
    restoredMarkerAt: at("restored-marker"),
    l1Clocksource: (get("l1-clocksource") ?? "").trim(),
  };
}
