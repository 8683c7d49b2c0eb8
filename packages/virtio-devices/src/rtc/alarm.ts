// virtio-rtc alarm handling: one alarm per clock (time, enabled), at most one
// host timer per clock, and at most one pending notification per clock.
import type { RtcHostClock, RtcTimer } from "./clock.js";

/** Clocks that may step (UTC, TAI follow the host's CLOCK_REALTIME) are re-read at least this often while an alarm is enabled. */
export const RTC_ALARM_RECHECK_MS = 1000;
/** The longest timer Node accepts (2^31 − 1 ms, about 24.8 days); a monotonic alarm further out re-arms when it fires. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** A clock an alarm watches. */
export interface RtcAlarmClock {
  /** Reads the clock in nanoseconds. */
  read(): bigint;
  /** Whether the clock can step (backwards or forwards) while running: then its alarm re-reads it every {@link RTC_ALARM_RECHECK_MS}. */
  readonly steps: boolean;
}

/** One alarm's saved state. */
export interface RtcAlarmState {
  /** Alarm time in the clock's nanoseconds, as a decimal string (a u64). */
  readonly time: string;
  /** Whether the alarm is enabled. */
  readonly enabled: boolean;
  /** Whether the clock was seen before the alarm time since the last expiration (the next progress past it expires the alarm). */
  readonly below: boolean;
}

interface Slot {
  time: bigint;
  enabled: boolean;
  below: boolean;
  timer: RtcTimer | undefined;
}

/**
 * The alarms of one virtio-rtc device. An alarm expires when its clock
 * progresses (or steps) from before the alarm time to it or past it while
 * enabled, and when the driver sets or enables an alarm whose time the clock
 * already reached. Each expiration queues one notification for the alarmq;
 * a clock has at most one queued, and disabling or setting the alarm drops it.
 * Nothing here survives {@link RtcAlarms.reset}: times go back to 0, alarms
 * are disabled, timers are cancelled and queued notifications dropped.
 */
export class RtcAlarms {
  readonly #clocks: readonly RtcAlarmClock[];
  readonly #host: RtcHostClock;
  readonly #onExpire: (id: number) => void;
  readonly #slots: Slot[];
  readonly #pending: number[] = [];
  #epoch = 0;
  #running = false;
  /** Expirations since creation. */
  expirations = 0;

  /**
   * @param clocks - the clocks, by id; every one has an alarm.
   * @param host - timers.
   * @param onExpire - called after an expiration was queued (the device then tries to deliver it).
   */
  constructor(clocks: readonly RtcAlarmClock[], host: RtcHostClock, onExpire: (id: number) => void) {
    this.#clocks = clocks;
    this.#host = host;
    this.#onExpire = onExpire;
    this.#slots = clocks.map(() => ({ time: 0n, enabled: false, below: false, timer: undefined }));
  }

  /** The alarm of clock `id` (a valid id). */
  read(id: number): { readonly time: bigint; readonly enabled: boolean } {
    const s = this.#slots[id]!;
    return { time: s.time, enabled: s.enabled };
  }

  /** SET_ALARM: the time and the enabled flag; a queued notification for this clock is dropped. */
  set(id: number, time: bigint, enabled: boolean): void {
    const s = this.#slots[id]!;
    s.time = time;
    s.enabled = enabled;
    s.below = false;
    this.#drop(id);
    this.#evaluate(id, true);
  }

  /** SET_ALARM_ENABLED: the time is kept; a queued notification for this clock is dropped. */
  setEnabled(id: number, enabled: boolean): void {
    const s = this.#slots[id]!;
    s.enabled = enabled;
    this.#drop(id);
    this.#evaluate(id, true);
  }

  /** The oldest queued notification's clock id, if any. */
  peekPending(): number | undefined {
    return this.#pending[0];
  }

  /** Removes the oldest queued notification (after it was delivered). */
  shiftPending(): void {
    this.#pending.shift();
  }

  /** Clock ids with a queued notification, oldest first. */
  get pending(): readonly number[] {
    return this.#pending;
  }

  /** Starts (or restarts) the timers of enabled alarms; called when the device is activated. */
  start(): void {
    this.#running = true;
    for (let id = 0; id < this.#slots.length; id++) this.#evaluate(id, false);
  }

  /**
   * Pause: every timer is cancelled and none is armed until {@link RtcAlarms.start};
   * the alarms (times in their clock's terms) and queued notifications are kept,
   * so an alarm that came due during the pause expires at the next start.
   */
  stop(): void {
    this.#epoch++;
    this.#running = false;
    for (const s of this.#slots) {
      s.timer?.cancel();
      s.timer = undefined;
    }
  }

  /** Device reset: every alarm back to time 0 and disabled, timers cancelled, queued notifications dropped. */
  reset(): void {
    this.#epoch++;
    this.#running = false;
    for (const s of this.#slots) {
      s.timer?.cancel();
      s.timer = undefined;
      s.time = 0n;
      s.enabled = false;
      s.below = false;
    }
    this.#pending.length = 0;
  }

  /** Number of host timers armed (at most one per clock). */
  get timers(): number {
    return this.#slots.reduce((n, s) => n + (s.timer === undefined ? 0 : 1), 0);
  }

  /** The alarms as plain JSON data. */
  state(): { readonly alarms: RtcAlarmState[]; readonly pending: number[] } {
    return {
      alarms: this.#slots.map((s) => ({ time: s.time.toString(), enabled: s.enabled, below: s.below })),
      pending: [...this.#pending],
    };
  }

  /**
   * Loads {@link RtcAlarms.state} output (already checked by persist.ts).
   * Timers start with {@link RtcAlarms.start}.
   */
  restore(alarms: readonly RtcAlarmState[], pending: readonly number[]): void {
    this.reset();
    alarms.forEach((a, id) => {
      const s = this.#slots[id]!;
      s.time = BigInt(a.time);
      s.enabled = a.enabled;
      s.below = a.below;
    });
    this.#pending.push(...pending);
  }

  #drop(id: number): void {
    const i = this.#pending.indexOf(id);
    if (i >= 0) this.#pending.splice(i, 1);
  }

  #expire(id: number): void {
    this.expirations++;
    if (!this.#pending.includes(id)) this.#pending.push(id);
    this.#onExpire(id);
  }

  /** Checks alarm `id` against its clock: expires it if due, and arms the one timer it needs. */
  #evaluate(id: number, fromRequest: boolean): void {
    const s = this.#slots[id]!;
    s.timer?.cancel();
    s.timer = undefined;
    if (!s.enabled) return;
    const clock = this.#clocks[id]!;
    const now = clock.read();
    if (now >= s.time) {
      if (fromRequest || s.below) {
        s.below = false;
        this.#expire(id);
      }
      // Only a clock that can step back can come before the alarm time again.
      if (clock.steps) this.#arm(id, RTC_ALARM_RECHECK_MS);
      return;
    }
    s.below = true;
    const cap = clock.steps ? RTC_ALARM_RECHECK_MS : MAX_TIMER_MS;
    const ms = (s.time - now + 999_999n) / 1_000_000n; // round up: a timer never fires before the alarm time is due
    this.#arm(id, ms > BigInt(cap) ? cap : Math.max(1, Number(ms)));
  }

  #arm(id: number, ms: number): void {
    if (!this.#running) return;
    const epoch = this.#epoch;
    const s = this.#slots[id]!;
    s.timer = this.#host.setTimer(ms, () => {
      if (epoch !== this.#epoch) return; // reset since
      s.timer = undefined;
      this.#evaluate(id, false);
    });
  }
}
