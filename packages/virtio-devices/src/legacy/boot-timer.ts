import type { PioDevice } from "./pio-bus.js";
import { SharedLock } from "./shared-lock.js";

/**
 * The boot-timer port. Chosen clear of every port the reference machine
 * decodes or that Linux probes on a PC (PIC 0x20/0xa0, PIT 0x40-0x43, i8042
 * 0x60/0x64, RTC 0x70/0x71, POST/delay 0x80, debug-exit 0xf4-0xf7, ACPI PM
 * 0x3c0-0x3c2, COM1 0x3f8-0x3ff); see the package's [DESIGN.md](../../DESIGN.md).
 */
export const BOOT_TIMER_PORT = 0x440;
/** Ports the device occupies: a 32-bit write at {@link BOOT_TIMER_PORT} covers 0x440-0x443. */
export const BOOT_TIMER_PORTS = 4;
/** Milestones kept by default; later writes are counted in `dropped`. */
export const BOOT_TIMER_MAX_MILESTONES = 64;
/** The largest capacity {@link bootTimerState} accepts. */
export const BOOT_TIMER_CAPACITY_LIMIT = 4096;

/** One guest write to the boot-timer port. */
export interface BootMilestone {
  /** The little-endian value the guest wrote (zero-extended to 32 bits). */
  readonly value: number;
  /** Width of the write in bytes. */
  readonly width: 1 | 2 | 4;
  /** Host time of the write, in microseconds since the timer's origin (the VM's start). */
  readonly micros: number;
}

/** What a boot timer recorded. */
export interface BootTimerReport {
  /** The milestones in the order the guest wrote them, at most the state's capacity. */
  readonly milestones: readonly BootMilestone[];
  /** Writes that came after the list was full (not recorded). */
  readonly dropped: number;
  /** Writes that were not milestones: at offsets 1-3 of the port range, or of a width other than 1, 2 or 4. */
  readonly ignored: number;
}

/** Options of {@link bootTimerState}. */
export interface BootTimerStateOptions {
  /** Milestones to keep (1 to {@link BOOT_TIMER_CAPACITY_LIMIT}, default {@link BOOT_TIMER_MAX_MILESTONES}). */
  readonly capacity?: number;
  /** The origin in the clock's microseconds (default: {@link monotonicMicros} now). */
  readonly originMicros?: number;
}

/** Options of a {@link BootTimer} view. */
export interface BootTimerOptions {
  /** true in a worker (the lock may sleep), false on the main thread. Default true. */
  readonly canWait?: boolean;
  /**
   * The host clock in microseconds (default {@link monotonicMicros}). Every
   * view of one state must use the same clock as the state's origin.
   */
  readonly clock?: () => number;
}

/**
 * The host's monotonic clock (CLOCK_MONOTONIC through `process.hrtime`) in
 * whole microseconds. It is process-wide, so worker threads and the main
 * thread read the same clock.
 */
export function monotonicMicros(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

// Layout: Int32 cells, then a Float64 origin, then the entries.
const S_LOCK = 0, S_COUNT = 1, S_DROPPED = 2, S_IGNORED = 3, S_CAPACITY = 4;
const F_ORIGIN = 3; // byte 24
const HEADER_BYTES = 32;
const ENTRY_BYTES = 16; // Float64 micros, Uint32 value, Uint32 width

/**
 * The shared state of one boot timer: pass it to every thread that has a
 * {@link BootTimer} view (vCPU workers record, the main thread reads).
 * @throws RangeError when `capacity` is not a whole number from 1 to {@link BOOT_TIMER_CAPACITY_LIMIT}, or `originMicros` is not finite.
 */
export function bootTimerState(options: BootTimerStateOptions = {}): SharedArrayBuffer {
  const capacity = options.capacity ?? BOOT_TIMER_MAX_MILESTONES;
  if (!Number.isInteger(capacity) || capacity < 1 || capacity > BOOT_TIMER_CAPACITY_LIMIT) {
    throw new RangeError(`boot timer capacity must be a whole number from 1 to ${BOOT_TIMER_CAPACITY_LIMIT}, got ${String(capacity)}`);
  }
  const origin = options.originMicros ?? monotonicMicros();
  if (!Number.isFinite(origin)) throw new RangeError(`boot timer origin must be a finite number, got ${String(origin)}`);
  const sab = new SharedArrayBuffer(HEADER_BYTES + capacity * ENTRY_BYTES);
  new Int32Array(sab)[S_CAPACITY] = capacity;
  new Float64Array(sab)[F_ORIGIN] = origin;
  return sab;
}

/**
 * A boot timer on a port: each guest write of 1, 2 or 4 bytes at offset 0
 * records `{ value, width, micros }`, `micros` being the host time since the
 * origin, so a guest (or its kernel, or its init) can mark boot milestones
 * and the VMM reads when it reached them. Firecracker's boot timer is an MMIO
 * write of 123 to a magic address; this one is a port, and keeps every value.
 *
 * The list is bounded by the state's capacity: a write to a full list is
 * counted in `dropped` and otherwise ignored, so a guest writing in a loop
 * costs a counter, never memory. Writes at offsets 1-3 or of another width
 * are counted in `ignored`. Reads return all ones (nothing to read). Guest
 * accesses never throw. State lives in a SharedArrayBuffer so that any vCPU
 * records into the same list.
 */
export class BootTimer implements PioDevice {
  readonly #s: Int32Array;
  readonly #u: Uint32Array;
  readonly #f: Float64Array;
  readonly #lock: SharedLock;
  readonly #clock: () => number;
  readonly #capacity: number;

  /**
   * @param state from {@link bootTimerState}.
   * @param options lock mode and clock of this thread.
   * @throws RangeError when `state` was not made by {@link bootTimerState}.
   */
  constructor(state: SharedArrayBuffer, options: BootTimerOptions = {}) {
    const bad = (): RangeError => new RangeError("boot timer state is malformed: make it with bootTimerState()");
    if (state.byteLength < HEADER_BYTES || state.byteLength % 8 !== 0) throw bad();
    this.#s = new Int32Array(state);
    this.#u = new Uint32Array(state);
    this.#f = new Float64Array(state);
    const capacity = Atomics.load(this.#s, S_CAPACITY);
    if (capacity < 1 || capacity > BOOT_TIMER_CAPACITY_LIMIT || state.byteLength < HEADER_BYTES + capacity * ENTRY_BYTES) throw bad();
    this.#capacity = capacity;
    this.#lock = new SharedLock(this.#s.subarray(S_LOCK, S_LOCK + 1), options.canWait ?? true);
    this.#clock = options.clock ?? monotonicMicros;
  }

  /** Milestones the state holds at most. */
  get capacity(): number {
    return this.#capacity;
  }

  /** Fills `data` with ones: the port has nothing to read. */
  read(_offset: number, data: Uint8Array): void {
    data.fill(0xff);
  }

  /** Records a milestone for a 1-, 2- or 4-byte write at offset 0; counts anything else. */
  write(offset: number, data: Uint8Array): void {
    const width = data.length;
    if (offset !== 0 || (width !== 1 && width !== 2 && width !== 4)) {
      Atomics.add(this.#s, S_IGNORED, 1);
      return;
    }
    let value = 0;
    for (let i = width - 1; i >= 0; i--) value = value * 256 + (data[i] ?? 0);
    this.#lock.with(() => {
      const s = this.#s;
      const n = s[S_COUNT]!;
      if (n >= this.#capacity) {
        s[S_DROPPED] = (s[S_DROPPED]! + 1) | 0;
        return;
      }
      // Read under the lock, so that the list's order is the order of the times (vCPUs race here).
      const micros = this.#clock() - this.#f[F_ORIGIN]!;
      const e = (HEADER_BYTES + n * ENTRY_BYTES) / 4;
      this.#f[e / 2] = Number.isFinite(micros) && micros > 0 ? micros : 0;
      this.#u[e + 2] = value;
      this.#u[e + 3] = width;
      s[S_COUNT] = n + 1;
    });
  }

  /** A copy of what was recorded so far. */
  report(): BootTimerReport {
    return this.#lock.with(() => {
      const milestones: BootMilestone[] = [];
      const n = Math.min(this.#s[S_COUNT]!, this.#capacity);
      for (let i = 0; i < n; i++) {
        const e = (HEADER_BYTES + i * ENTRY_BYTES) / 4;
        milestones.push({ value: this.#u[e + 2]!, width: this.#u[e + 3]! as 1 | 2 | 4, micros: this.#f[e / 2]! });
      }
      return { milestones, dropped: this.#s[S_DROPPED]! >>> 0, ignored: Atomics.load(this.#s, S_IGNORED) >>> 0 };
    });
  }

  /** Clears the list and the counters and sets the origin to `originMicros` (default: the clock now), e.g. when the VM starts. */
  restart(originMicros: number = this.#clock()): void {
    this.#lock.with(() => {
      this.#s[S_COUNT] = 0;
      this.#s[S_DROPPED] = 0;
      Atomics.store(this.#s, S_IGNORED, 0);
      this.#f[F_ORIGIN] = Number.isFinite(originMicros) ? originMicros : this.#clock();
    });
  }
}
