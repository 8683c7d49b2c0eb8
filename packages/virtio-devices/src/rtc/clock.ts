// The host clocks behind virtio-rtc, and the timers its alarms use: one seam
// (RtcHostClock) so tests can drive time by hand.

/** A timer from {@link RtcHostClock.setTimer}. */
export interface RtcTimer {
  /** Stops the timer; idempotent, and a no-op after it fired. */
  cancel(): void;
}

/**
 * Where virtio-rtc gets its time. {@link systemRtcClock} reads the host
 * clocks and uses Node timers; tests inject a clock they advance by hand.
 */
export interface RtcHostClock {
  /** Host CLOCK_REALTIME: nanoseconds since 1970-01-01 00:00 UTC, as the host keeps it (it may step). */
  realtimeNs(): bigint;
  /** Host CLOCK_MONOTONIC: nanoseconds since an epoch before the device was created; never decreases. */
  monotonicNs(): bigint;
  /**
   * Calls `fn` once after about `delayMs` milliseconds (1 ≤ delayMs ≤ 2^31 − 1).
   * The timer must not keep the process alive on its own.
   */
  setTimer(delayMs: number, fn: () => void): RtcTimer;
}

/**
 * TAI − UTC in seconds: 37 since 2017-01-01 00:00:00 UTC, when the last leap
 * second (announced in IERS Bulletin C 52, July 2016) took effect; no later
 * leap second was announced in the bulletins this was checked against (up to
 * mid-2025; the build machines cannot reach IERS). This is a constant, not a
 * lookup: when IERS announces a leap second, this number (or the device's
 * `taiOffsetSeconds` option) must change. The host kernel's own TAI offset (CLOCK_TAI −
 * CLOCK_REALTIME) is not used: it stays 0 unless an NTP daemon sets it, and
 * it reads 0 on the machines we build on.
 */
export const TAI_MINUS_UTC_SECONDS = 37;

let lastMs = Number.NaN;
let monoAtLastMs = 0n;

/**
 * Host CLOCK_REALTIME in nanoseconds: `Date.now()` (CLOCK_REALTIME to the
 * millisecond) plus the CLOCK_MONOTONIC time elapsed since this process first
 * saw that millisecond, capped below one millisecond. So a reading is never
 * ahead of the host's clock, lags it by less than 1 ms, and increases
 * between millisecond ticks instead of standing still.
 */
function realtimeNs(): bigint {
  const mono = process.hrtime.bigint();
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    monoAtLastMs = mono;
  }
  const sub = mono - monoAtLastMs;
  return BigInt(ms) * 1_000_000n + (sub < 999_999n ? sub : 999_999n);
}

/** The host's clocks (see {@link RtcHostClock}) and Node timers, unref'd. */
export const systemRtcClock: RtcHostClock = {
  realtimeNs,
  monotonicNs: () => process.hrtime.bigint(),
  setTimer(delayMs, fn) {
    const t = setTimeout(fn, delayMs);
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};
