import { monotonicMicros } from "./boot-timer.js";
import type { PioDevice } from "./pio-bus.js";
import { SharedLock } from "./shared-lock.js";

/** The CMOS index port (bit 7 of a write is the NMI-disable bit; bits 0-6 select the register). */
export const CMOS_INDEX_PORT = 0x70;
/** The CMOS data port: reads and writes the register the index port selected. */
export const CMOS_DATA_PORT = 0x71;
/** Ports the device occupies (0x70-0x71). */
export const CMOS_PORTS = 2;
/** Bytes of CMOS: the 14 clock registers, then RAM from 0x0E to 0x7F. */
export const CMOS_BYTES = 128;
/** The register that holds the century (QEMU's and the PC's convention; the FADT's CENTURY field names it). */
export const CMOS_CENTURY = 0x32;
/** How long before each once-a-second update register A's UIP bit reads as set, in milliseconds (244 µs, the MC146818's figure). */
export const CMOS_UIP_MS = 0.244;
/** The largest offset, in milliseconds, between the guest's clock and the host's that a saved state may carry (about 3 170 years). */
export const CMOS_OFFSET_LIMIT_MS = 1e14;

// Register numbers.
const R_SEC = 0x00, R_MIN = 0x02, R_HOUR = 0x04, R_DOW = 0x06, R_DAY = 0x07, R_MON = 0x08, R_YEAR = 0x09;
const R_A = 0x0a, R_B = 0x0b, R_C = 0x0c, R_D = 0x0d;
const TIME_REGS = new Set([R_SEC, R_MIN, R_HOUR, R_DOW, R_DAY, R_MON, R_YEAR, CMOS_CENTURY]);
// Register A: UIP, the divider (bits 4-6, 010 = 32.768 kHz time base, the only one that keeps time), the rate.
const A_UIP = 0x80, A_DIV_MASK = 0x70, A_DIV_NORMAL = 0x20;
// Register B.
const B_SET = 0x80, B_UIE = 0x10, B_DM_BINARY = 0x04, B_24H = 0x02;
const D_VRT = 0x80;

// Shared layout: Int32 cells, then Float64 clock cells, then the 128 CMOS bytes.
const S_LOCK = 0, S_INDEX = 1, S_NMI = 2;
const F_HOST_DELTA = 2, F_OFFSET = 3; // byte 16, 24
const BYTES_AT = 32;
const STATE_BYTES = BYTES_AT + CMOS_BYTES;

/** Saved state of a {@link CmosRtc} (plain JSON). */
export interface CmosState {
  /** The register the index port selects, 0 to 0x7F. */
  readonly index: number;
  /** The NMI-disable bit last written to the index port (kept, has no effect). */
  readonly nmiDisabled: boolean;
  /**
   * The 128 CMOS bytes. The time registers hold what the guest wrote while
   * the clock was stopped (SET, or a divider other than 010); while it runs,
   * they are computed from the clock and these bytes are not used.
   */
  readonly bytes: readonly number[];
  /** The guest's clock minus the host's UTC clock, in milliseconds (0 until the guest sets the time). */
  readonly offsetMs: number;
}

/** Options of {@link cmosState}. */
export interface CmosStateOptions {
  /**
   * Bytes 0x0E-0x7F of CMOS RAM at power-on (at most 114 bytes, placed from
   * 0x0E; default all zero). Byte 0x32 is the century register and is not
   * taken from here.
   */
  readonly ram?: Uint8Array;
}

/** Options of a {@link CmosRtc} view. */
export interface CmosRtcOptions {
  /** true in a worker (the lock may sleep), false on the main thread. Default true. */
  readonly canWait?: boolean;
  /**
   * The host's UTC clock in milliseconds since the epoch, fractional (default:
   * the wall clock at {@link cmosState} time advanced by {@link monotonicMicros},
   * the same in every thread). For tests.
   */
  readonly clock?: () => number;
}

/**
 * The shared state of one CMOS RTC: pass it to every thread that has a
 * {@link CmosRtc} view. The clock starts at the host's UTC time, in BCD and
 * 24-hour mode (register B 0x02), register A 0x26 (32.768 kHz time base,
 * 1024 Hz rate), register D 0x80 (valid RAM and time).
 * @throws RangeError when `ram` is longer than 114 bytes.
 */
export function cmosState(options: CmosStateOptions = {}): SharedArrayBuffer {
  const ram = options.ram ?? new Uint8Array(0);
  if (ram.byteLength > CMOS_BYTES - 0x0e) throw new RangeError(`CMOS RAM is ${CMOS_BYTES - 0x0e} bytes (0x0e-0x7f), got ${ram.byteLength}`);
  const sab = new SharedArrayBuffer(STATE_BYTES);
  const bytes = new Uint8Array(sab, BYTES_AT, CMOS_BYTES);
  bytes.set(ram, 0x0e);
  bytes[R_A] = A_DIV_NORMAL | 0x06;
  bytes[R_B] = B_24H;
  bytes[R_D] = D_VRT;
  // Host UTC = monotonic + delta: one process-wide clock, so every vCPU's view agrees and time never goes back.
  new Float64Array(sab)[F_HOST_DELTA] = Date.now() - monotonicMicros() / 1000;
  return sab;
}

const bcd = (v: number): number => ((Math.trunc(v / 10) % 10) << 4) | (v % 10);
const unbcd = (v: number): number => (v >> 4) * 10 + (v & 0x0f);

/**
 * An MC146818-compatible CMOS real-time clock and its RAM on ports 0x70
 * (index) and 0x71 (data), as on a PC: seconds 0x00, minutes 0x02, hours
 * 0x04, day of week 0x06 (1 = Sunday), day of month 0x07, month 0x08, year
 * 0x09, century {@link CMOS_CENTURY}; alarm registers 0x01, 0x03, 0x05
 * (stored); registers A-D; RAM 0x0E-0x7F.
 *
 * Time is the host's UTC clock plus an offset: the guest changes it by
 * writing the time registers (normally with register B's SET bit, which
 * stops the clock until it is cleared; the registers are then read back as
 * the new time). The clock runs only while SET is clear and register A's
 * divider is 010. Register B's DM (binary vs BCD) and 24/12-hour bits select
 * the format of every read; the day of week always follows the date.
 * Register A's UIP bit reads as set only in the {@link CMOS_UIP_MS} before
 * each second's update, so a reader that waits for it to clear waits at most
 * that long, and a reader that saw it clear has that long to read the time.
 * There is no interrupt: register C reads 0 and the interrupt enables in B
 * are stored only. Guest accesses never throw; any value the guest writes is
 * taken (a nonsense date is normalised, or ignored if it is out of range).
 * State lives in a SharedArrayBuffer so that any vCPU may access it.
 */
export class CmosRtc implements PioDevice {
  readonly #s: Int32Array;
  readonly #f: Float64Array;
  readonly #b: Uint8Array;
  readonly #lock: SharedLock;
  readonly #clock: () => number;

  /**
   * @param state from {@link cmosState}.
   * @param options lock mode and clock of this thread.
   * @throws RangeError when `state` was not made by {@link cmosState}.
   */
  constructor(state: SharedArrayBuffer, options: CmosRtcOptions = {}) {
    if (state.byteLength !== STATE_BYTES) throw new RangeError("CMOS state is malformed: make it with cmosState()");
    this.#s = new Int32Array(state, 0, BYTES_AT / 4);
    this.#f = new Float64Array(state, 0, BYTES_AT / 8);
    this.#b = new Uint8Array(state, BYTES_AT, CMOS_BYTES);
    this.#lock = new SharedLock(this.#s.subarray(S_LOCK, S_LOCK + 1), options.canWait ?? true);
    const delta = this.#f[F_HOST_DELTA]!;
    this.#clock = options.clock ?? ((): number => monotonicMicros() / 1000 + delta);
  }

  /** The clock runs: SET clear and the normal divider. */
  #running(): boolean {
    return (this.#b[R_B]! & B_SET) === 0 && (this.#b[R_A]! & A_DIV_MASK) === A_DIV_NORMAL;
  }

  /** The guest's time now, in ms since the epoch. */
  #guestNow(): number {
    return this.#clock() + this.#f[F_OFFSET]!;
  }

  /** The time register `reg` of the instant `ms`, in the format register B selects. */
  #encode(reg: number, ms: number): number {
    const d = new Date(ms);
    const binary = (this.#b[R_B]! & B_DM_BINARY) !== 0;
    const fmt = (v: number): number => (binary ? v : bcd(v)) & 0xff;
    const year = d.getUTCFullYear();
    switch (reg) {
      case R_SEC: return fmt(d.getUTCSeconds());
      case R_MIN: return fmt(d.getUTCMinutes());
      case R_HOUR: {
        const h = d.getUTCHours();
        if (this.#b[R_B]! & B_24H) return fmt(h);
        return fmt(h % 12 === 0 ? 12 : h % 12) | (h >= 12 ? 0x80 : 0);
      }
      case R_DOW: return fmt(d.getUTCDay() + 1);
      case R_DAY: return fmt(d.getUTCDate());
      case R_MON: return fmt(d.getUTCMonth() + 1);
      case R_YEAR: return fmt(((year % 100) + 100) % 100);
      default: return fmt(Math.min(99, Math.max(0, Math.floor(year / 100)))); // century
    }
  }

  /** Copies the running time into the time registers (the clock is about to stop, or one field is written). */
  #freeze(ms: number): void {
    for (const r of TIME_REGS) this.#b[r] = this.#encode(r, ms);
  }

  /** The time the registers hold, in ms since the epoch, or NaN if they name no representable instant. */
  #decode(): number {
    const b = this.#b;
    const binary = (b[R_B]! & B_DM_BINARY) !== 0;
    const dec = (v: number): number => (binary ? v : unbcd(v));
    const hv = b[R_HOUR]!;
    const hour = b[R_B]! & B_24H ? dec(hv) : (dec(hv & 0x7f) % 12) + (hv & 0x80 ? 12 : 0);
    const d = new Date(0);
    // setUTCFullYear, not Date.UTC: the latter reads years 0-99 as 1900-1999.
    d.setUTCFullYear(dec(b[CMOS_CENTURY]!) * 100 + dec(b[R_YEAR]!), dec(b[R_MON]!) - 1, dec(b[R_DAY]!));
    d.setUTCHours(hour, dec(b[R_MIN]!), dec(b[R_SEC]!), 0);
    return d.getTime();
  }

  /** The clock starts again from what the registers hold, `fraction` ms into that second. */
  #resume(fraction: number): void {
    const t = this.#decode() + fraction;
    const offset = t - this.#clock();
    if (Number.isFinite(offset) && Math.abs(offset) <= CMOS_OFFSET_LIMIT_MS) this.#f[F_OFFSET] = offset;
  }

  #readByte(): number {
    const b = this.#b;
    const i = this.#s[S_INDEX]!;
    if (i === R_A) {
      if (!this.#running()) return b[R_A]! & ~A_UIP;
      const ms = this.#guestNow();
      const toUpdate = 1000 - (((ms % 1000) + 1000) % 1000);
      return (b[R_A]! & ~A_UIP) | (toUpdate <= CMOS_UIP_MS ? A_UIP : 0);
    }
    if (i === R_C) {
      const v = b[R_C]!;
      b[R_C] = 0; // read to clear
      return v;
    }
    if (i === R_D) return D_VRT;
    if (TIME_REGS.has(i) && this.#running()) return this.#encode(i, this.#guestNow());
    return b[i]!;
  }

  #writeByte(v: number): void {
    const b = this.#b;
    const i = this.#s[S_INDEX]!;
    const was = this.#running();
    // Where the running clock is within its second, so that a change of mode or of one field keeps the phase.
    const now = this.#guestNow();
    const fraction = ((now % 1000) + 1000) % 1000;
    if (i === R_A) {
      if (was) this.#freeze(now);
      b[R_A] = v & ~A_UIP;
      if (this.#running()) this.#resume(was ? fraction : 0);
    } else if (i === R_B) {
      if (was) this.#freeze(now);
      // Setting SET clears UIE (MC146818): no update-ended interrupt while the time is being set.
      b[R_B] = v & B_SET ? v & ~B_UIE : v;
      if (this.#running()) {
        // Still running (a mode change): nothing to take from the registers. Started again: they are the time.
        if (!was) this.#resume(0);
      }
    } else if (i === R_C || i === R_D) {
      // read-only
    } else if (TIME_REGS.has(i)) {
      if (was) {
        // A write while the clock runs sets that field and keeps the rest and the phase.
        this.#freeze(now);
        b[i] = v;
        this.#resume(fraction);
      } else b[i] = v;
    } else b[i] = v;
  }

  /** Reads port 0x70 (all ones: the index is write-only) or 0x71; a wider access reads 0x71 after 0x70, ones beyond. */
  read(offset: number, data: Uint8Array): void {
    this.#lock.with(() => {
      for (let k = 0; k < data.length; k++) data[k] = offset + k === 1 ? this.#readByte() : 0xff;
    });
  }

  /** Writes the index (0x70) or the selected register (0x71); a wider access writes 0x71 after 0x70. */
  write(offset: number, data: Uint8Array): void {
    this.#lock.with(() => {
      for (let k = 0; k < data.length; k++) {
        const v = data[k]!;
        if (offset + k === 0) {
          this.#s[S_INDEX] = v & 0x7f;
          this.#s[S_NMI] = v & 0x80 ? 1 : 0;
        } else if (offset + k === 1) this.#writeByte(v);
      }
    });
  }

  /** The guest's time now (ms since the epoch): the running clock, or what the registers hold while it is stopped (NaN if nonsense). */
  guestTime(): number {
    return this.#lock.with(() => (this.#running() ? this.#guestNow() : this.#decode()));
  }

  /** The device's state (under its lock), for snapshots. */
  state(): CmosState {
    return this.#lock.with(() => ({
      index: this.#s[S_INDEX]!,
      nmiDisabled: this.#s[S_NMI] === 1,
      bytes: Array.from(this.#b),
      offsetMs: this.#f[F_OFFSET]!,
    }));
  }

  /**
   * Loads {@link CmosRtc.state} output into the shared state. The clock goes
   * on from the host's time now plus the saved offset: time passes while a
   * snapshot is on disk, as it does for a PC switched off.
   * @throws RangeError for a field out of range (nothing is changed then).
   */
  restoreState(state: CmosState): void {
    const r = state as unknown as Record<string, unknown>;
    if (typeof r !== "object" || r === null) throw new RangeError("CMOS state must be an object");
    const index = r["index"];
    if (typeof index !== "number" || !Number.isInteger(index) || index < 0 || index > 0x7f) throw new RangeError(`CMOS state: index must be 0..0x7f, got ${JSON.stringify(index)}`);
    if (typeof r["nmiDisabled"] !== "boolean") throw new RangeError("CMOS state: nmiDisabled must be a boolean");
    const bytes = r["bytes"];
    if (!Array.isArray(bytes) || bytes.length !== CMOS_BYTES || !bytes.every((v) => typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0xff)) {
      throw new RangeError(`CMOS state: bytes must be ${CMOS_BYTES} bytes`);
    }
    const offset = r["offsetMs"];
    if (typeof offset !== "number" || !Number.isFinite(offset) || Math.abs(offset) > CMOS_OFFSET_LIMIT_MS) {
      throw new RangeError(`CMOS state: offsetMs must be a finite number of at most ${CMOS_OFFSET_LIMIT_MS} in magnitude, got ${JSON.stringify(offset)}`);
    }
    this.#lock.with(() => {
      this.#s[S_INDEX] = index;
      this.#s[S_NMI] = r["nmiDisabled"] ? 1 : 0;
      this.#b.set(bytes as number[]);
      this.#b[R_A] = this.#b[R_A]! & ~A_UIP;
      this.#b[R_D] = D_VRT;
      this.#f[F_OFFSET] = offset;
    });
  }
}
