// Adaptive, bounded polling of a queue after the device ran out of work (the
// idea of QEMU's aio poll-max-ns, our own code): instead of going back to the
// event loop at once, the device thread looks at the avail ring for a short
// window, so a driver that posts its next request a few microseconds after
// seeing the last completion is served without a sleep and a wake-up of the
// device thread (on a virtualized host, a halted CPU and an IPI).
//
// The window adapts to the gaps the driver leaves: after each gap (from the
// moment the device ran out of work until the next request was seen, by
// polling or through a notification), a gap no longer than `maxMs` doubles
// the window (from 1/8 of `maxMs`, up to `maxMs`); a longer gap sets it to 0
// (no polling), so a guest that is idle, or requests that come too far apart
// for a window to catch them, cost nothing but one clock read per
// notification. A window that ends without a request also counts as a
// longer gap when the request then comes later than `maxMs`.

/** Clock in milliseconds (monotonic, sub-microsecond resolution). @internal */
export type PollClock = () => number;

/** @internal */
export class QueuePoll {
  /** Largest window, ms (0: polling off). */
  readonly maxMs: number;
  /** Current window, ms. */
  windowMs = 0;
  /** When the device last ran out of work (ms, clock time), or -1 before the first time. */
  #idleSince = -1;
  /** Requests found by polling. */
  hits = 0;
  /** Windows that ended without a request. */
  misses = 0;
  readonly #now: PollClock;

  constructor(maxMs: number, now: PollClock) {
    this.maxMs = maxMs;
    this.#now = now;
  }

  /** The clock. */
  now(): number {
    return this.#now();
  }

  /** A request arrived at `now` after the device had run out of work: adapt the window to that gap. */
  arrived(now: number): void {
    const since = this.#idleSince;
    if (since < 0 || this.maxMs <= 0) return;
    this.#idleSince = -1;
    const gap = now - since;
    if (gap <= this.maxMs) {
      this.windowMs = this.windowMs === 0 ? this.maxMs / 8 : Math.min(this.maxMs, this.windowMs * 2);
    } else {
      this.windowMs = 0;
    }
  }

  /** The device ran out of work at `now` (its next request, whenever it comes, closes the gap). */
  idle(now: number): void {
    if (this.#idleSince < 0) this.#idleSince = now;
  }

  /** Forgets the current gap (reset, pause): the next request does not adapt the window. */
  forget(): void {
    this.#idleSince = -1;
  }
}
