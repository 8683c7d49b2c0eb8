import type { RateLimiter } from "../rate-limiter.js";
import type { NetBackend } from "./backend.js";

/** What the event handler calls on the device. @internal */
export interface NetEventTarget {
  /** Frames may be waiting on the backend, or rx buffers were posted, or the rx limiter allows again. */
  processRx(): void;
  /** tx chains may be waiting, or the backend can take frames again, or the tx limiter allows again. */
  processTx(): void;
  /** A watch could not be set up. */
  watchFailed(reason: string): void;
}

/**
 * virtio-net's event routing: backend readiness, queue notifications and the
 * rate limiters' timers to the device's rx and tx processing. It holds the
 * backend watch and changes it only when the wanted events change (the
 * device says what it wants after each turn). No device logic here.
 * @internal
 */
export class NetEventHandler {
  readonly #backend: NetBackend;
  readonly #dev: NetEventTarget;
  #readable = false;
  #writable = false;

  constructor(backend: NetBackend, dev: NetEventTarget, rx: RateLimiter | undefined, tx: RateLimiter | undefined) {
    this.#backend = backend;
    this.#dev = dev;
    if (rx !== undefined) rx.onReady = () => dev.processRx();
    if (tx !== undefined) tx.onReady = () => dev.processTx();
  }

  /** A queue notification: 0 is rx (buffers posted), 1 is tx. */
  queueNotify(index: number): void {
    if (index === 0) this.#dev.processRx();
    else if (index === 1) this.#dev.processTx();
  }

  /** Watches the backend for what the device can use now (readable: it can take a frame; writable: a frame waits for room). */
  want(readable: boolean, writable: boolean): void {
    if (readable === this.#readable && writable === this.#writable) return;
    this.#readable = readable;
    this.#writable = writable;
    try {
      this.#backend.watch({ readable, writable }, (ev) => {
        if (ev.readable) this.#dev.processRx();
        if (ev.writable) this.#dev.processTx();
      });
    } catch (e) {
      this.#readable = false;
      this.#writable = false;
      this.#dev.watchFailed((e as Error).message);
    }
  }
}
