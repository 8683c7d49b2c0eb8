// Token buckets for device I/O (bytes and operations), in the shape of
// Firecracker's rate limiter: each bucket has a size, a time to refill from
// empty to full and a one-time burst used before the refilled tokens.
import { VirtioDeviceError } from "./errors.js";

/** One token bucket's settings. */
export interface TokenBucketConfig {
  /** Tokens the bucket holds when full (bytes or operations), an integer ≥ 1. */
  readonly size: number;
  /** Milliseconds to refill the bucket from empty to full, an integer ≥ 1 (1000 makes `size` a per-second rate). */
  readonly refillTimeMs: number;
  /** Extra tokens spent before the refilled ones and never refilled (default 0). */
  readonly oneTimeBurst?: number;
}

/** The buckets of a {@link RateLimiter}; a missing bucket does not limit. */
export interface RateLimiterConfig {
  /** Bytes. */
  readonly bandwidth?: TokenBucketConfig | undefined;
  /** Operations (requests, frames). */
  readonly ops?: TokenBucketConfig | undefined;
}

/** Time and timers for a {@link RateLimiter}; tests inject a manual clock. */
export interface RateLimiterClock {
  /** Monotonic milliseconds. */
  now(): number;
  /** Calls `cb` once after `ms` milliseconds; returns a handle for `clear`. */
  set(cb: () => void, ms: number): unknown;
  /** Cancels a timer from `set`. */
  clear(handle: unknown): void;
}

/** The default clock: `performance.now()` and Node timers. */
export const realClock: RateLimiterClock = {
  now: () => performance.now(),
  set: (cb, ms) => setTimeout(cb, ms),
  clear: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** One bucket's saved state. */
export interface TokenBucketState {
  /** Its settings, with the burst that is left. */
  readonly size: number;
  /** Refill time in ms. */
  readonly refillTimeMs: number;
  /** One-time burst left. */
  readonly oneTimeBurst: number;
  /** Tokens in the bucket (negative: a request larger than the bucket is being paid off). */
  readonly tokens: number;
}

/** A {@link RateLimiter}'s saved state (plain JSON). */
export interface RateLimiterState {
  /** The bandwidth bucket, or null. */
  readonly bandwidth: TokenBucketState | null;
  /** The operations bucket, or null. */
  readonly ops: TokenBucketState | null;
}

/** Longest single timer (setTimeout's limit); a longer wait re-arms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

class TokenBucket {
  size: number;
  refillTimeMs: number;
  burst: number;
  tokens: number;
  #last: number;

  constructor(c: TokenBucketConfig, now: number) {
    this.size = c.size;
    this.refillTimeMs = c.refillTimeMs;
    this.burst = c.oneTimeBurst ?? 0;
    this.tokens = c.size;
    this.#last = now;
  }

  refill(now: number): void {
    const dt = now - this.#last;
    this.#last = now;
    if (dt > 0 && this.tokens < this.size) this.tokens = Math.min(this.size, this.tokens + (dt * this.size) / this.refillTimeMs);
  }

  /** Whether `n` tokens can be taken now (refilled first). */
  can(n: number): boolean {
    // A request larger than the bucket passes when the bucket is full and leaves it in debt:
    // it is never starved, and the debt keeps the average rate.
    return n <= this.burst + this.tokens || (n > this.size && this.tokens >= this.size);
  }

  take(n: number): void {
    const fromBurst = Math.min(this.burst, n);
    this.burst -= fromBurst;
    this.tokens -= n - fromBurst;
  }

  /** Milliseconds until `can(n)` holds. */
  wait(n: number): number {
    const want = Math.min(n - this.burst, this.size);
    const missing = want - this.tokens;
    return missing <= 0 ? 0 : (missing * this.refillTimeMs) / this.size;
  }

  update(c: TokenBucketConfig): void {
    this.size = c.size;
    this.refillTimeMs = c.refillTimeMs;
    if (c.oneTimeBurst !== undefined) this.burst = c.oneTimeBurst;
    this.tokens = Math.min(this.tokens, c.size);
  }

  state(): TokenBucketState {
    return { size: this.size, refillTimeMs: this.refillTimeMs, oneTimeBurst: this.burst, tokens: this.tokens };
  }

  /** Takes saved tokens and burst (checked by the caller), capped by this bucket's settings; refill restarts from `now`. */
  load(tokens: number, burst: number, now: number): void {
    this.tokens = Math.min(this.size, Math.max(tokens, -(2 ** 32)));
    this.burst = Math.min(this.burst, burst);
    this.#last = now;
  }
}

function checkBucket(name: string, c: TokenBucketConfig | undefined): void {
  if (c === undefined) return;
  const int = (v: unknown, min: number): boolean => typeof v === "number" && Number.isSafeInteger(v) && v >= min;
  if (typeof c !== "object" || c === null || !int(c.size, 1) || !int(c.refillTimeMs, 1) || (c.oneTimeBurst !== undefined && !int(c.oneTimeBurst, 0))) {
    throw new VirtioDeviceError(
      "InvalidArgument",
      `rate limiter ${name}: size and refillTimeMs must be whole numbers ≥ 1 and oneTimeBurst a whole number ≥ 0, got ${JSON.stringify(c)}`,
    );
  }
}

/**
 * Checks a saved {@link RateLimiterState} before anything is loaded from it: each bucket
 * null, absent, or with finite tokens and a whole burst ≥ 0.
 * @returns the buckets present.
 * @throws {@link VirtioDeviceError} `"InvalidState"`.
 * @internal
 */
export function checkRateLimiterState(state: RateLimiterState): { bandwidth: TokenBucketState | undefined; ops: TokenBucketState | undefined } {
  if (typeof state !== "object" || state === null) throw new VirtioDeviceError("InvalidState", "rate limiter state is not an object");
  const check = (name: string, s: TokenBucketState | null | undefined): TokenBucketState | undefined => {
    if (s === null || s === undefined) return undefined;
    if (typeof s !== "object" || typeof s.tokens !== "number" || !Number.isFinite(s.tokens) || !Number.isSafeInteger(s.oneTimeBurst) || s.oneTimeBurst < 0) {
      throw new VirtioDeviceError("InvalidState", `rate limiter state: ${name} bucket is malformed`);
    }
    return s;
  };
  return { bandwidth: check("bandwidth", state.bandwidth), ops: check("ops", state.ops) };
}

/**
 * Two token buckets (bytes and operations) that a device asks before each
 * request. When either bucket is short, {@link RateLimiter.consume} takes
 * nothing, returns false and arms one timer for when both will have enough;
 * the device stops processing its queue (leaving the request in the ring,
 * see `Queue.undoPop`) and resumes from the limiter's `onReady` callback.
 * No polling: while blocked there is exactly one timer and no other work.
 *
 * Settings can change at any time with {@link RateLimiter.update}; a blocked
 * limiter then re-checks at once.
 */
export class RateLimiter {
  #bw: TokenBucket | undefined;
  #ops: TokenBucket | undefined;
  readonly #clock: RateLimiterClock;
  #timer: unknown;
  #armed = false;
  #onReady: () => void = () => {};
  /** Requests refused (each refusal is one wait). */
  throttled = 0;

  /**
   * @param config - the buckets (none: no limit).
   * @param clock - time and timers (default {@link realClock}).
   * @throws {@link VirtioDeviceError} `"InvalidArgument"` for a malformed bucket.
   */
  constructor(config: RateLimiterConfig = {}, clock: RateLimiterClock = realClock) {
    checkBucket("bandwidth", config.bandwidth);
    checkBucket("ops", config.ops);
    this.#clock = clock;
    const now = clock.now();
    this.#bw = config.bandwidth === undefined ? undefined : new TokenBucket(config.bandwidth, now);
    this.#ops = config.ops === undefined ? undefined : new TokenBucket(config.ops, now);
  }

  /** Sets the callback run (from a timer) when a refused request would now pass. The device sets it. */
  set onReady(cb: () => void) {
    this.#onReady = cb;
  }

  /** Whether a refused request is waiting for its timer. */
  get blocked(): boolean {
    return this.#armed;
  }

  /** Whether any bucket is configured. */
  get limits(): boolean {
    return this.#bw !== undefined || this.#ops !== undefined;
  }

  /**
   * Takes `bytes` from the bandwidth bucket and `ops` from the operations
   * bucket, both or neither. While blocked it refuses without looking.
   * @returns true if taken; false if the device must wait for `onReady`.
   */
  consume(bytes: number, ops = 1): boolean {
    if (this.#armed) return false;
    const bw = this.#bw;
    const op = this.#ops;
    if (bw === undefined && op === undefined) return true;
    const now = this.#clock.now();
    bw?.refill(now);
    op?.refill(now);
    if ((bw === undefined || bw.can(bytes)) && (op === undefined || op.can(ops))) {
      bw?.take(bytes);
      op?.take(ops);
      return true;
    }
    this.throttled++;
    this.#arm(Math.max(bw?.wait(bytes) ?? 0, op?.wait(ops) ?? 0));
    return false;
  }

  #arm(ms: number): void {
    this.#armed = true;
    // One ms more than needed: libuv times timers from the loop's cached time, which can be up
    // to a millisecond behind now(), so an exact timer may fire just before the tokens are there
    // (and cost a second wake-up).
    this.#timer = this.#clock.set(() => this.#fire(), Math.min(MAX_TIMER_MS, Math.ceil(ms) + 1));
  }

  #fire(): void {
    this.#armed = false;
    this.#timer = undefined;
    this.#onReady();
  }

  /**
   * Changes the buckets while running: a bucket given replaces the settings of
   * the current one (its tokens kept, capped at the new size; its burst set if
   * given) or starts full if there was none; `null` removes it; `undefined`
   * leaves it. A blocked limiter is re-checked at once (through `onReady`).
   * @throws {@link VirtioDeviceError} `"InvalidArgument"` for a malformed bucket (nothing changes).
   */
  update(config: { readonly bandwidth?: TokenBucketConfig | null; readonly ops?: TokenBucketConfig | null }): void {
    checkBucket("bandwidth", config.bandwidth ?? undefined);
    checkBucket("ops", config.ops ?? undefined);
    const now = this.#clock.now();
    const apply = (cur: TokenBucket | undefined, c: TokenBucketConfig | null | undefined): TokenBucket | undefined => {
      if (c === undefined) return cur;
      if (c === null) return undefined;
      if (cur === undefined) return new TokenBucket(c, now);
      cur.refill(now);
      cur.update(c);
      return cur;
    };
    this.#bw = apply(this.#bw, config.bandwidth);
    this.#ops = apply(this.#ops, config.ops);
    if (this.#armed) {
      this.#clock.clear(this.#timer);
      this.#armed = false;
      this.#timer = this.#clock.set(() => this.#fire(), 0);
      this.#armed = true;
    }
  }

  /** Cancels a pending timer (device reset or close); `onReady` is not called. */
  cancel(): void {
    if (this.#armed) this.#clock.clear(this.#timer);
    this.#armed = false;
    this.#timer = undefined;
  }

  /** The buckets as plain JSON. */
  state(): RateLimiterState {
    const now = this.#clock.now();
    this.#bw?.refill(now);
    this.#ops?.refill(now);
    return { bandwidth: this.#bw?.state() ?? null, ops: this.#ops?.state() ?? null };
  }

  /**
   * Loads the tokens and the burst left of a saved {@link RateLimiter.state} into this
   * limiter's buckets (a snapshot restore: the settings stay this limiter's, which a
   * restored VM builds from the saved configuration). Tokens are capped at the bucket's
   * size (debt kept, to one 2^32 request), the burst at this bucket's; refill restarts
   * from now (the time on disk refills nothing); a bucket on one side only is left alone.
   * @throws {@link VirtioDeviceError} `"InvalidState"` for a malformed state (nothing changes).
   */
  restoreState(state: RateLimiterState): void {
    const { bandwidth: bw, ops } = checkRateLimiterState(state);
    const now = this.#clock.now();
    if (bw !== undefined) this.#bw?.load(bw.tokens, bw.oneTimeBurst, now);
    if (ops !== undefined) this.#ops?.load(ops.tokens, ops.oneTimeBurst, now);
  }

  /**
   * Rebuilds a limiter from {@link RateLimiter.state} output (refill restarts from now).
   * @throws {@link VirtioDeviceError} `"InvalidState"` for a malformed state.
   */
  static fromState(state: RateLimiterState, clock: RateLimiterClock = realClock): RateLimiter {
    const bucket = (name: string, s: TokenBucketState | null | undefined): TokenBucketConfig | undefined => {
      if (s === null || s === undefined) return undefined;
      if (typeof s !== "object" || typeof s.tokens !== "number" || !Number.isFinite(s.tokens) || s.tokens > s.size) {
        throw new VirtioDeviceError("InvalidState", `rate limiter state: ${name} bucket is malformed`);
      }
      return { size: s.size, refillTimeMs: s.refillTimeMs, oneTimeBurst: s.oneTimeBurst };
    };
    if (typeof state !== "object" || state === null) throw new VirtioDeviceError("InvalidState", "rate limiter state is not an object");
    let r: RateLimiter;
    try {
      r = new RateLimiter({ bandwidth: bucket("bandwidth", state.bandwidth), ops: bucket("ops", state.ops) }, clock);
    } catch (e) {
      if (e instanceof VirtioDeviceError && e.code === "InvalidArgument") throw new VirtioDeviceError("InvalidState", e.message, { cause: e });
      throw e;
    }
    // Debt is bounded by one request, which is bounded by the device (no more than 2^32 bytes).
    if (r.#bw !== undefined && state.bandwidth) r.#bw.tokens = Math.max(state.bandwidth.tokens, -(2 ** 32));
    if (r.#ops !== undefined && state.ops) r.#ops.tokens = Math.max(state.ops.tokens, -(2 ** 32));
    return r;
  }
}
