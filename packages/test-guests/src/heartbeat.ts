// Reading the heartbeat /init prints with `tsvmm.heartbeat=N` (see BEAT_MARKER in linux-kit.ts).
import { BEAT_MARKER } from "./linux-kit.js";
import type { SerialLine } from "./results.js";

/** One `TS-VMM-BEAT` line. */
export interface Heartbeat {
  /** The guest's counter (1, 2, …). */
  readonly n: number;
  /** The guest's /proc/uptime, s. */
  readonly up: number;
  /** Every 4th beat: the file read back from the disk (after dropping the page cache). */
  readonly disk?: string;
  /** Every 4th beat: completed reads of /dev/vda so far. */
  readonly reads?: number;
  /** When the line arrived (the harness's time of the line). */
  readonly tMs: number;
}

/** What a guest printed after its heartbeat. */
export interface HeartbeatLog {
  /** The beats, in the order they arrived (a beat cut in two by a snapshot is not one). */
  readonly beats: readonly Heartbeat[];
  /** Kernel messages logged after the shell marker (the `TS-VMM-BEAT-DMESG` lines, without the prefix). */
  readonly dmesg: readonly string[];
  /** The last count (`TS-VMM-BEAT-DONE n=N`), or null if the loop did not finish. */
  readonly done: number | null;
}

// /proc/uptime has two decimals: a beat cut short by a snapshot (its rest printed by the next VMM) does not match.
const BEAT = new RegExp(`${BEAT_MARKER} n=(\\d+) up=(\\d+\\.\\d\\d)(?: disk=(\\S+) reads=(\\d+))?\\s*$`);

/** Collects the heartbeat lines of a serial log (see {@link BEAT_MARKER}). */
export function parseHeartbeats(lines: readonly SerialLine[]): HeartbeatLog {
  const beats: Heartbeat[] = [];
  const dmesg: string[] = [];
  let done: number | null = null;
  for (const l of lines) {
    const d = l.text.indexOf(`${BEAT_MARKER}-DMESG `);
    if (d >= 0) {
      dmesg.push(l.text.slice(d + BEAT_MARKER.length + 7));
      continue;
    }
    const e = new RegExp(`${BEAT_MARKER}-DONE n=(\\d+)`).exec(l.text);
    if (e) {
      done = Number(e[1]);
      continue;
    }
    const m = BEAT.exec(l.text);
    if (!m) continue;
    beats.push({
      n: Number(m[1]), up: Number(m[2]), tMs: l.tMs,
      ...(m[3] !== undefined ? { disk: m[3], reads: Number(m[4]) } : {}),
    });
  }
  return { beats, dmesg, done };
}
