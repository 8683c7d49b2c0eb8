// Adaptive, bounded polling of a queue after the device ran out of work (the
// idea of QEMU's aio poll-max-ns, our own code): instead of going back to the
// event loop at once, the device thread looks at the avail ring for a short
// window, so a driver that posts its next request a few microseconds after
// seeing the last completion is served without a sleep and a wake-up of the
// device thread (on a virtualized host, a halted CPU and an IPI).
//
// The window adapts to the gap the driver leaves (from the moment the device
// ran out of work until it saw the next request, by polling or through a
// notification):
// - a gap up to `maxMs`: the window doubles (from `maxMs`/4, at most `maxMs`);
// - a longer gap: the window halves if the window before it caught a request
//   (one late request in a stream that polling serves), else it drops to 0;
// - `MISS_RUN` windows in a row without a request: polling stops for
//   `cooldown` gaps (64, doubling up to 4096 while it keeps failing, back to
//   64 after a window that caught one). This is the case of a device thread
//   that shares its CPU with the vCPU: while it spins the vCPU cannot post,
//   so no window ever catches anything, and each one only delays the guest.
// An idle guest, or requests that come too far apart, cost one clock read per
// notification and no spinning.

/** Clock in milliseconds (monotonic, sub-microsecond resolution). @internal */
export type PollClock = () => number;

/** Windows in a row without a request before polling pauses. */
const MISS_RUN = 6;
const COOLDOWN_MIN = 64;
const COOLDOWN_MAX = 4096;

/** @internal */
export class QueuePoll {
  /** Largest window, ms (0: polling off). */
  readonly maxMs: number;
  /** Current window, ms. */
  windowMs = 0;
  /** When the device last ran out of work (ms, clock time), or -1. */
  #idleSince = -1;
  /** Requests found by polling. */
  hits = 0;
  /** Windows that ended without a request. */
  misses = 0;
  /** Misses since the last hit. */
  #missRun = 0;
  /** Whether a window caught the request that closes the current gap. */
  #caught = false;
  /** Whether the previous gap was closed by a window catching its request. */
  #lastGapCaught = false;
  /** Gaps left to wait before polling again, and the next such wait. */
  #coolLeft = 0;
  #cooldown = COOLDOWN_MIN;
  readonly #now: PollClock;

  constructor(maxMs: number, now: PollClock) {
    this.maxMs = maxMs;
    this.#now = now;
  }

  /** The clock. */
  now(): number {
    return this.#now();
  }

  /** A window caught a request. */
  hit(): void {
    this.hits++;
    this.#missRun = 0;
    this.#caught = true;
    this.#cooldown = COOLDOWN_MIN;
  }

  /** A window ended without a request. */
  miss(): void {
    this.misses++;
    if (++this.#missRun >= MISS_RUN) {
      this.#missRun = 0;
      this.windowMs = 0;
      this.#coolLeft = this.#cooldown;
      this.#cooldown = Math.min(COOLDOWN_MAX, this.#cooldown * 2);
    }
  }

  /** A request arrived at `now` after the device had run out of work: adapt the window to that gap. */
  arrived(now: number): void {
    const since = this.#idleSince;
    if (since < 0 || this.maxMs <= 0) return;
    this.#idleSince = -1;
    const caught = this.#caught;
    this.#caught = false;
    if (this.#coolLeft > 0) {
      this.#coolLeft--;
      return;
    }
    const gap = now - since;
    if (gap <= this.maxMs) {
      this.windowMs = this.windowMs === 0 ? this.maxMs / 4 : Math.min(this.maxMs, this.windowMs * 2);
    } else {
      this.windowMs = this.#lastGapCaught ? this.windowMs / 2 : 0;
    }
    this.#lastGapCaught = caught;
  }

  /** The device ran out of work at `now` (its next request, whenever it comes, closes the gap). */
  idle(now: number): void {
    if (this.#idleSince < 0) this.#idleSince = now;
  }

  /** Forgets the current gap (reset, pause): the next request does not adapt the window. */
  forget(): void {
    this.#idleSince = -1;
    this.#caught = false;
  }
}
