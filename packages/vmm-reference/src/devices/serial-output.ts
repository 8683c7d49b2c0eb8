import { SharedLock } from "@ts-vmm/virtio-devices/legacy";

// Header cells (Int32) before the data bytes.
const H_LOCK = 0, H_HEAD = 1, H_TAIL = 2, H_WAKE = 3, H_DROPPED = 4;
const HEADER_BYTES = 32;

/** The largest power of two ≤ n (n ≥ 1). */
function floorPow2(n: number): number {
  let p = 1;
  while (p * 2 <= n) p *= 2;
  return p;
}

/**
 * The serial output path from the vCPU workers to the main thread: a
 * single-consumer ring in a SharedArrayBuffer. Workers append the bytes of
 * each exit (under the ring's lock, so bytes of different vCPUs do not mix
 * within a write) and post a wake-up message only when the main thread has
 * none pending; the main thread takes everything there is per wake-up. So a
 * guest printing one byte per exit costs one ring append per byte, and one
 * message per turn of the main thread's event loop instead of one per byte.
 *
 * Flow control: the ring holds at most `capacity` bytes (the largest power of
 * two ≤ the requested size); a worker that finds it full waits (its vCPU is
 * paused, as behind a UART with flow control) until the main thread has
 * drained it, unless the VM is stopping, when the bytes that do not fit are
 * dropped and counted.
 */
export class SerialOutputRing {
  readonly #h: Int32Array;
  readonly #data: Uint8Array;
  readonly #cap: number;
  readonly #lock: SharedLock;
  /** The ring's SharedArrayBuffer, to hand to workers. */
  readonly buffer: SharedArrayBuffer;

  /**
   * @param size the bytes requested (at least 1), or an existing ring's buffer.
   * @param canWait true in a worker (producers may sleep), false on the main thread.
   */
  constructor(size: number | SharedArrayBuffer, canWait = false) {
    if (typeof size === "number") {
      if (!Number.isInteger(size) || size < 1 || size > 2 ** 30) throw new RangeError(`ring size must be 1..2^30, got ${String(size)}`);
      this.buffer = new SharedArrayBuffer(HEADER_BYTES + floorPow2(size));
    } else this.buffer = size;
    this.#cap = this.buffer.byteLength - HEADER_BYTES;
    if (this.#cap < 1 || (this.#cap & (this.#cap - 1)) !== 0) throw new RangeError("not a serial output ring buffer");
    this.#h = new Int32Array(this.buffer, 0, HEADER_BYTES / 4);
    this.#data = new Uint8Array(this.buffer, HEADER_BYTES);
    this.#lock = new SharedLock(this.#h.subarray(H_LOCK, H_LOCK + 1), canWait);
  }

  /** Bytes the ring holds at most. */
  get capacity(): number {
    return this.#cap;
  }

  /** Bytes dropped because the ring was full while the VM was stopping. */
  get dropped(): number {
    return Atomics.load(this.#h, H_DROPPED);
  }

  /**
   * Producer side (a worker): appends `bytes[0, length)`, waiting while the ring
   * is full unless `stopping()` says the VM is ending; then calls `wake` if the
   * consumer has no wake-up pending.
   */
  write(bytes: Uint8Array, length: number, stopping: () => boolean, wake: () => void): void {
    if (length === 0) return;
    const h = this.#h;
    const mask = this.#cap - 1;
    this.#lock.with(() => {
      let i = 0;
      while (i < length) {
        const head = Atomics.load(h, H_HEAD);
        const tail = Atomics.load(h, H_TAIL);
        const free = this.#cap - ((head - tail) >>> 0);
        if (free === 0) {
          if (stopping()) {
            Atomics.add(h, H_DROPPED, length - i);
            return;
          }
          // Wake the consumer first: it may not know there is data.
          if (Atomics.compareExchange(h, H_WAKE, 0, 1) === 0) wake();
          Atomics.wait(h, H_TAIL, tail, 50);
          continue;
        }
        const at = head & mask;
        const k = Math.min(free, length - i, this.#cap - at);
        this.#data.set(bytes.subarray(i, i + k), at);
        Atomics.store(h, H_HEAD, (head + k) | 0);
        i += k;
      }
    });
    if (Atomics.compareExchange(h, H_WAKE, 0, 1) === 0) wake();
  }

  /** Consumer side (the main thread): takes every byte in the ring (a copy), or undefined if empty. */
  drain(): Uint8Array | undefined {
    const h = this.#h;
    // Clear the flag before reading head: a producer appending after this posts a new wake-up.
    Atomics.store(h, H_WAKE, 0);
    const head = Atomics.load(h, H_HEAD);
    const tail = Atomics.load(h, H_TAIL);
    const n = (head - tail) >>> 0;
    if (n === 0) return undefined;
    const at = tail & (this.#cap - 1);
    let out: Uint8Array;
    if (at + n <= this.#cap) out = this.#data.slice(at, at + n);
    else {
      out = new Uint8Array(n);
      out.set(this.#data.subarray(at), 0);
      out.set(this.#data.subarray(0, n - (this.#cap - at)), this.#cap - at);
    }
    Atomics.store(h, H_TAIL, head);
    Atomics.notify(h, H_TAIL);
    return out;
  }
}
