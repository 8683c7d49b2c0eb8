import type { GuestResults } from "./results.js";

/** How a run ended, as {@link guestVerdict} sees it. */
export interface VerdictInput {
  /** What the VMM's own exit decodes to (the launcher's reading of its status), or null. */
  readonly vmmExitValue: number | null;
  /**
   * How many low bits of the guest's value survive the VMM's exit status
   * (QEMU's isa-debug-exit and ours: 7, as `(value << 1) | 1` in 8 bits).
   * Default 32.
   */
  readonly valueBits?: number;
  /** The guest's parsed serial output. */
  readonly results: GuestResults;
  /** The harness killed the VMM after the timeout. */
  readonly timedOut: boolean;
  /** The harness stopped the VMM on a serial marker. */
  readonly stoppedOnSerial: boolean;
}

/** The harness's verdict on a run's exit: a guest value only when the guest and the VMM agree. */
export interface Verdict {
  /** The guest's exit value, or null (see `problem`). */
  readonly guestExit: number | null;
  /** Why `guestExit` is null, as a sentence; null when it is set. */
  readonly problem: string | null;
}

/**
 * Decides what the guest's exit value was. The VMM's exit status alone never
 * counts: a VMM that dies with status 1 (QEMU with a missing kernel, Node
 * throwing, a missing script) decodes as "the guest wrote 0". A value is
 * returned only when the guest's own last `RESULT exit=<v>` line (printed by
 * the micro-guest right before every write to port 0xf4) and the VMM's
 * decoded exit agree, and the harness did not end the run itself.
 */
export function guestVerdict(input: VerdictInput): Verdict {
  if (input.timedOut) return { guestExit: null, problem: "the harness killed the VMM after the timeout" };
  if (input.stoppedOnSerial) return { guestExit: null, problem: "the harness stopped the VMM on the serial marker" };
  const printed = [...input.results.all].reverse().find((r) => r.key === "exit");
  const v = input.vmmExitValue;
  if (printed === undefined) {
    return {
      guestExit: null,
      problem:
        v === null
          ? "no debug exit: the VMM's status is not a guest value and the guest printed no RESULT exit= line"
          : `the VMM's status decodes as guest value ${v}, but the guest printed no RESULT exit= line (a VMM that died, not a guest exit)`,
    };
  }
  if (!/^\d+$/.test(printed.value) || Number(printed.value) > 0xffffffff) {
    return { guestExit: null, problem: `malformed RESULT exit=${printed.value}` };
  }
  const w = Number(printed.value);
  if (v === null) return { guestExit: null, problem: `the guest printed RESULT exit=${w}, but the VMM's status is not a debug exit` };
  const bits = input.valueBits ?? 32;
  const masked = bits >= 32 ? w : w % 2 ** bits;
  if (masked !== v) return { guestExit: null, problem: `the guest printed RESULT exit=${w}, but the VMM reports guest value ${v}` };
  return { guestExit: w, problem: null };
}
