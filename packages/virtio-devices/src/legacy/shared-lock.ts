/**
 * A mutex in one Int32 cell of a SharedArrayBuffer, for device state that
 * every vCPU worker and the main thread touch (the 16550A, the i8042). Held
 * only for one register access: a holder never waits for anything else while
 * it holds the lock, so contention is a short spin; after a few hundred spins
 * a worker sleeps with Atomics.wait (1 ms slices), the main thread keeps
 * spinning (it may not block for long, and never has to here).
 */
export class SharedLock {
  readonly #cell: Int32Array;
  readonly #canWait: boolean;

  /**
   * @param cell an Int32Array whose element 0 is the lock word (0 free, 1 held).
   * @param canWait true in worker threads: Atomics.wait may be used after spinning.
   */
  constructor(cell: Int32Array, canWait: boolean) {
    this.#cell = cell;
    this.#canWait = canWait;
  }

  /** Runs `f` with the lock held and returns its result. */
  with<T>(f: () => T): T {
    let spins = 0;
    while (Atomics.compareExchange(this.#cell, 0, 0, 1) !== 0) {
      if (++spins > 200 && this.#canWait) Atomics.wait(this.#cell, 0, 1, 1);
    }
    try {
      return f();
    } finally {
      Atomics.store(this.#cell, 0, 0);
      Atomics.notify(this.#cell, 0, 1);
    }
  }
}
