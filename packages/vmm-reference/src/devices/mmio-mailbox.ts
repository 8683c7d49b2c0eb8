// A one-slot mailbox over a SharedArrayBuffer that carries MMIO exits from a
// vCPU worker to the thread that owns the devices (the main thread), and the
// answer back. The vCPU spins briefly for the answer, then blocks in
// Atomics.wait (it is stopped in an exit anyway); the owner waits with
// Atomics.waitAsync, so its event loop never blocks.
//
// Layout (Int32 cells): 0 state, 1 kind (0 read, 1 write), 2 address low,
// 3 address high, 4 length, 5..6 data (8 bytes, little-endian).

import { availableParallelism } from "node:os";

/** Nobody is using the slot. */
const IDLE = 0;
/** The vCPU posted a request. */
const REQUEST = 1;
/** The owner answered. */
const DONE = 2;

/** Atomics.waitAsync (ES2024; in Node since 16) typed locally: the repo targets ES2023 libs. */
const waitAsync = (Atomics as unknown as {
  waitAsync(ta: Int32Array, index: number, value: number): { async: false; value: string } | { async: true; value: Promise<string> };
}).waitAsync;

/**
 * How long a vCPU spins on the slot for the owner's answer before it sleeps in
 * Atomics.wait, in ms, when the process may use more CPUs than the VM has vCPUs (0
 * otherwise: spinning vCPUs could keep the owner off the CPUs it needs to answer on).
 * The owner's answer comes
 * through its event loop, ~50 µs here; a futex sleep and wake-up of the vCPU on top
 * cost as much again on a nested host (bench:peer, 2026-12-07: a config-space read
 * 152 µs with no spin, 98–110 µs with 0.1–0.5 ms). `TS_VMM_MAILBOX_SPIN_MS` overrides it.
 */
export const MMIO_MAILBOX_SPIN_MS = 0.1;

/**
 * The spin for the clients of a VM with `vcpus` vCPUs: `TS_VMM_MAILBOX_SPIN_MS` when it is a
 * number from 0 to 10 (any other value is ignored), else {@link MMIO_MAILBOX_SPIN_MS} when
 * the process may use more CPUs than `vcpus` (os.availableParallelism()), else 0.
 */
export function defaultMailboxSpinMs(vcpus = 1, env: NodeJS.ProcessEnv = process.env, cpus: number = availableParallelism()): number {
  const v = env["TS_VMM_MAILBOX_SPIN_MS"];
  if (v !== undefined && v !== "") {
    const n = Number(v);
    if (Number.isFinite(n) && n >= 0 && n <= 10) return n;
  }
  return cpus > vcpus ? MMIO_MAILBOX_SPIN_MS : 0;
}

/** Bytes of the SharedArrayBuffer a mailbox needs. */
export const MMIO_MAILBOX_BYTES = 32;

/** An MMIO access as the owner sees it. */
export interface MmioRequest {
  /** Guest physical address. */
  readonly address: number;
  /** Whether the guest writes (else reads). */
  readonly write: boolean;
  /** The bytes written, or the buffer to fill for a read (1 to 8 bytes). */
  readonly data: Uint8Array;
}

/** vCPU-worker side. */
export class MmioMailboxClient {
  readonly #cells: Int32Array;
  readonly #bytes: Uint8Array;
  readonly #stop: Int32Array;
  readonly #spinMs: number;
  /** Waits of 50 ms that ended without an answer (each one re-notifies the owner). */
  timeouts = 0;

  /**
   * @param sab - the mailbox (MMIO_MAILBOX_BYTES).
   * @param stop - the VM's stop cell: a non-zero value ends a wait for the owner.
   * @param spinMs - how long to spin for the answer before sleeping (0 to 10 ms; default {@link defaultMailboxSpinMs} for one vCPU).
   */
  constructor(sab: SharedArrayBuffer, stop: Int32Array, spinMs: number = defaultMailboxSpinMs()) {
    if (!Number.isFinite(spinMs) || spinMs < 0 || spinMs > 10) throw new RangeError(`spinMs must be 0 to 10 ms, got ${spinMs}`);
    this.#cells = new Int32Array(sab, 0, 8);
    this.#bytes = new Uint8Array(sab, 20, 8);
    this.#stop = stop;
    this.#spinMs = spinMs;
  }

  /** How long {@link call} spins for the answer before it sleeps, in ms. */
  get spinMs(): number {
    return this.#spinMs;
  }

  /**
   * Forwards one access and waits for the answer (a read fills `data`).
   * @returns false if the VM is stopping and the owner did not answer (a read then gets 0xff bytes).
   */
  call(address: number, write: boolean, data: Uint8Array): boolean {
    const c = this.#cells;
    c[1] = write ? 1 : 0;
    c[2] = address % 2 ** 32 | 0;
    c[3] = Math.floor(address / 2 ** 32) | 0;
    c[4] = data.length;
    if (write) this.#bytes.set(data);
    Atomics.store(c, 0, REQUEST);
    Atomics.notify(c, 0);
    if (this.#spinMs > 0) {
      // Bounded: the clock is read every 32 loads; the stop cell is looked at after it.
      const until = performance.now() + this.#spinMs;
      let n = 0;
      while (Atomics.load(c, 0) === REQUEST && ((++n & 31) !== 0 || performance.now() < until));
    }
    while (Atomics.load(c, 0) === REQUEST) {
      if (Atomics.wait(c, 0, REQUEST, 50) === "timed-out" && Atomics.load(c, 0) === REQUEST) {
        // 50 ms without an answer: count it (the vCPU's end state shows it) and notify the
        // owner again, so a wake-up it missed costs 50 ms, not the run.
        this.timeouts++;
        Atomics.notify(c, 0);
      }
      if (Atomics.load(c, 0) === REQUEST && Atomics.load(this.#stop, 0) !== 0) {
        // The owner may be gone: take the request back (if it is not answering right now).
        if (Atomics.compareExchange(c, 0, REQUEST, IDLE) === REQUEST) {
          if (!write) data.fill(0xff);
          return false;
        }
      }
    }
    if (!write) data.set(this.#bytes.subarray(0, data.length));
    Atomics.store(c, 0, IDLE);
    return true;
  }
}

/** Device-owner side: serves requests with `handler` until closed. */
export class MmioMailboxServer {
  readonly #cells: Int32Array;
  readonly #bytes: Uint8Array;
  readonly #handler: (req: MmioRequest) => void;
  #closed = false;
  /** Requests served. */
  served = 0;

  /**
   * Starts serving on the event loop (Atomics.waitAsync).
   * @param sab - the mailbox shared with the vCPU worker.
   * @param handler - performs the access (fills `data` for a read); must not throw.
   */
  constructor(sab: SharedArrayBuffer, handler: (req: MmioRequest) => void) {
    this.#cells = new Int32Array(sab, 0, 8);
    this.#bytes = new Uint8Array(sab, 20, 8);
    this.#handler = handler;
    this.#loop();
  }

  #serve(): void {
    const c = this.#cells;
    const len = c[4]! >>> 0;
    const write = c[1] === 1;
    const address = (c[2]! >>> 0) + (c[3]! >>> 0) * 2 ** 32;
    const data = new Uint8Array(Math.min(8, len));
    if (write) data.set(this.#bytes.subarray(0, data.length));
    try {
      this.#handler({ address, write, data });
    } catch {
      if (!write) data.fill(0xff);
    }
    if (!write) this.#bytes.set(data);
    this.served++;
    // Only answer a request that is still posted (the vCPU may have withdrawn it while stopping).
    if (Atomics.compareExchange(c, 0, REQUEST, DONE) === REQUEST) Atomics.notify(c, 0);
  }

  #loop(): void {
    const c = this.#cells;
    for (;;) {
      if (this.#closed) return;
      if (Atomics.load(c, 0) === REQUEST) {
        this.#serve();
        continue;
      }
      const r = waitAsync(c, 0, Atomics.load(c, 0));
      if (!r.async) continue; // the value changed meanwhile: look again
      void r.value.then(() => this.#loop());
      return;
    }
  }

  /** Stops serving (a pending wait resolves at the next state change and does nothing). */
  close(): void {
    this.#closed = true;
    // Wake the pending waitAsync so it does not keep the event loop alive.
    Atomics.notify(this.#cells, 0);
  }
}
