/** One line of guest serial output, with the host time it arrived. */
export interface SerialLine {
  /** The line without its terminator (`\r` stripped). */
  readonly text: string;
  /** Milliseconds since the VMM process was started when the line was complete. */
  readonly tMs: number;
}

/** A `FAIL <check> <detail>` line. */
export interface FailedCheck {
  /** The check's name, e.g. `blk.write-read`. */
  readonly check: string;
  /** The rest of the line: what the guest saw. */
  readonly detail: string;
}

/** A `SKIP <check> <reason>` line (for example a device the VMM does not provide). */
export interface SkippedCheck {
  /** The check or device kind, e.g. `rtc`. */
  readonly check: string;
  /** Why it was skipped, e.g. `absent`. */
  readonly reason: string;
}

/** A `RESULT key=value` line. */
export interface ResultValue {
  readonly key: string;
  /** Everything after the first `=`, unparsed. */
  readonly value: string;
  /** Host arrival time of the line, ms since the VMM started. */
  readonly tMs: number;
}

/** What the micro-guest reported, parsed from its serial lines. */
export interface GuestResults {
  /** Checks reported as `PASS <check>`, in order. */
  readonly passed: readonly string[];
  /** `FAIL` lines, in order. */
  readonly failed: readonly FailedCheck[];
  /** `SKIP` lines, in order. */
  readonly skipped: readonly SkippedCheck[];
  /** Every `RESULT` line in order (keys may repeat, e.g. `tsc_mark`). */
  readonly all: readonly ResultValue[];
  /** The last value of each `RESULT` key. */
  readonly values: Readonly<Record<string, string>>;
}

/**
 * Parses the micro-guest's result protocol: `PASS <check>`,
 * `FAIL <check> <detail>`, `SKIP <check> <reason>` and `RESULT key=value`
 * lines; every other line is ignored. A `FAIL` may start mid-line (the CPL0
 * trap handler prints a newline first), so the markers are searched for at
 * the start of each line only after trimming.
 */
export function parseResults(lines: readonly SerialLine[]): GuestResults {
  const passed: string[] = [];
  const failed: FailedCheck[] = [];
  const skipped: SkippedCheck[] = [];
  const all: ResultValue[] = [];
  const values: Record<string, string> = {};
  for (const { text, tMs } of lines) {
    const t = text.trim();
    const m = /^(PASS|FAIL|SKIP|RESULT) (\S+)(?: (.*))?$/.exec(t);
    if (!m) continue;
    const [, kind, word = "", rest = ""] = m;
    if (kind === "PASS") passed.push(word);
    else if (kind === "FAIL") failed.push({ check: word, detail: rest });
    else if (kind === "SKIP") skipped.push({ check: word, reason: rest });
    else {
      const kv = `${word}${rest ? ` ${rest}` : ""}`;
      const eq = kv.indexOf("=");
      if (eq <= 0) continue;
      const key = kv.slice(0, eq);
      const value = kv.slice(eq + 1);
      all.push({ key, value, tMs });
      values[key] = value;
    }
  }
  return { passed, failed, skipped, all, values };
}

/**
 * The guest's TSC frequency in Hz: from `RESULT tsc_khz=` when the guest could
 * read it from CPUID, else from the first and last `RESULT tsc_mark=` lines
 * and the host times they arrived (good to well under 1 % over a run of a
 * second or more). Returns null when neither is available.
 */
export function tscHz(results: GuestResults): number | null {
  const khz = Number(results.values["tsc_khz"]);
  if (Number.isFinite(khz) && khz > 0) return khz * 1000;
  const marks = results.all.filter((r) => r.key === "tsc_mark");
  const first = marks[0];
  const last = marks[marks.length - 1];
  if (!first || !last || last.tMs - first.tMs < 50) return null;
  const cycles = Number(BigInt(last.value) - BigInt(first.value));
  return cycles / ((last.tMs - first.tMs) / 1000);
}
