// Test helper: a RateLimiterClock that moves only when told.
import type { RateLimiterClock } from "../src/index.js";

/** A clock that moves only when told; timers fire in order as time passes them. */
export class ManualClock implements RateLimiterClock {
  t = 0;
  #timers = new Map<number, { at: number; cb: () => void }>();
  #next = 1;
  now(): number {
    return this.t;
  }
  set(cb: () => void, ms: number): unknown {
    const id = this.#next++;
    this.#timers.set(id, { at: this.t + ms, cb });
    return id;
  }
  clear(h: unknown): void {
    this.#timers.delete(h as number);
  }
  get pending(): number {
    return this.#timers.size;
  }
  /** The time the earliest timer fires at. */
  get nextAt(): number | undefined {
    return Math.min(...[...this.#timers.values()].map((x) => x.at));
  }
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const due = [...this.#timers.entries()].filter(([, x]) => x.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (due === undefined) break;
      this.#timers.delete(due[0]);
      this.t = due[1].at;
      due[1].cb();
    }
    this.t = end;
  }
}

