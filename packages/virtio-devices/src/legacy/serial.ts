import type { PioDevice } from "./pio-bus.js";
import { SharedLock } from "./shared-lock.js";

// Register offsets and bits of the 16550A UART (National Semiconductor PC16550D data sheet).
const RBR_THR = 0, IER = 1, IIR_FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7;
const IER_RDI = 0x01, IER_THRI = 0x02, IER_RLSI = 0x04;
const IIR_NONE = 0x01, IIR_THRI = 0x02, IIR_RDI = 0x04, IIR_RLSI = 0x06, IIR_FIFO = 0xc0;
const FCR_ENABLE = 0x01, FCR_CLEAR_RX = 0x02;
const LCR_DLAB = 0x80;
const MCR_LOOP = 0x10;
const LSR_DR = 0x01, LSR_OE = 0x02, LSR_THRE = 0x20, LSR_TEMT = 0x40;
const MSR_CTS = 0x10, MSR_DSR = 0x20, MSR_DCD = 0x80;

/** Bytes the receive FIFO holds (the 16550A's 16). Input beyond it waits in the VMM. */
export const SERIAL_RX_FIFO = 16;

// Layout of the shared state (Int32 cells).
const S_LOCK = 0, S_IER = 1, S_LCR = 2, S_MCR = 3, S_SCR = 4, S_DLL = 5, S_DLM = 6, S_FCR = 7;
const S_THRE_PENDING = 8, S_OVERRUN = 9, S_RX_HEAD = 10, S_RX_COUNT = 11, S_IRQ = 12, S_HOST_WAITING = 13;
const S_RX = 16;
const CELLS = S_RX + SERIAL_RX_FIFO;

/** The shared state of one 16550A: pass it to every thread that has a {@link Serial16550} view of the same UART. */
export function serialState(): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(CELLS * 4);
  const s = new Int32Array(sab);
  s[S_LCR] = 0x03;
  s[S_MCR] = 0x08;
  s[S_DLL] = 0x0c;
  return sab;
}

/** Saved state of a {@link Serial16550} (plain JSON): the registers and the receive FIFO, oldest byte first. */
export interface SerialState {
  readonly ier: number;
  readonly lcr: number;
  readonly mcr: number;
  readonly scr: number;
  readonly dll: number;
  readonly dlm: number;
  readonly fcr: number;
  /** A THR-empty interrupt is pending (not yet acknowledged). */
  readonly threPending: boolean;
  /** LSR.OE is set (loopback overflow). */
  readonly overrun: boolean;
  /** The receive FIFO, at most {@link SERIAL_RX_FIFO} bytes. */
  readonly rx: readonly number[];
}

const byteField = (s: Record<string, unknown>, k: string, max = 0xff): number => {
  const v = s[k];
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`serial state: ${k} must be a whole number 0..${max}, got ${JSON.stringify(v)}`);
  return v;
};

/** What a {@link Serial16550} view calls out to. */
export interface SerialHooks {
  /** Receives every byte the guest transmits (not in loopback). */
  out(byte: number): void;
  /** The interrupt output went from low to high (`true`) or high to low: drive the IRQ line (edge-triggered ISA IRQ 4). */
  irq(level: boolean): void;
  /** The guest read a byte while the host side had said it holds more input ({@link Serial16550.enqueue} returned short). */
  rxSpace?(): void;
}

/**
 * A 16550A UART whose registers live in a SharedArrayBuffer, so every vCPU
 * worker (port I/O exits) and the main thread (input from stdin) operate on
 * the same device; each access takes the device lock.
 *
 * Registers: RBR/THR, IER, IIR/FCR, LCR, MCR, LSR, MSR, SCR, DLL/DLM (DLAB).
 * The transmitter is infinitely fast: a THR write goes to `out` at once and the
 * THR is empty again, which (with IER.THRI) raises the THR-empty interrupt;
 * reading IIR while it reports THRE, or writing THR, acknowledges it, as on
 * the chip. Enabling IER.THRI while the THR is empty raises it too (Linux's
 * 8250 driver relies on this to start transmitting). Received bytes sit in a
 * 16-byte FIFO; a byte arriving at a full FIFO is refused by {@link enqueue}
 * (the host keeps it) — bytes are never dropped except in loopback, where an
 * overflow sets LSR.OE as on the chip. Interrupt priority: line status (overrun),
 * received data, THR empty, modem status (never set: the modem lines are
 * constant). The IRQ output is reported on changes only, so the caller can
 * pulse an edge-triggered line.
 */
export class Serial16550 implements PioDevice {
  readonly #s: Int32Array;
  readonly #lock: SharedLock;
  readonly #hooks: SerialHooks;

  /**
   * @param state from {@link serialState}, shared by all views of this UART.
   * @param hooks output, interrupt and flow-control callbacks of this thread.
   * @param canWait true in a worker (the lock may sleep), false on the main thread.
   */
  constructor(state: SharedArrayBuffer, hooks: SerialHooks, canWait = true) {
    if (state.byteLength < CELLS * 4) throw new RangeError("serial state is too small: make it with serialState()");
    this.#s = new Int32Array(state);
    this.#lock = new SharedLock(this.#s.subarray(S_LOCK, S_LOCK + 1), canWait);
    this.#hooks = hooks;
  }

  /** The IIR value without side effects. */
  #iir(): number {
    const s = this.#s;
    const ier = s[S_IER]!;
    const fifo = s[S_FCR]! & FCR_ENABLE ? IIR_FIFO : 0;
    if (ier & IER_RLSI && s[S_OVERRUN]) return IIR_RLSI | fifo;
    if (ier & IER_RDI && s[S_RX_COUNT]! > 0) return IIR_RDI | fifo;
    if (ier & IER_THRI && s[S_THRE_PENDING]) return IIR_THRI | fifo;
    // No modem-status source (IER bit 3): the modem lines never change.
    return IIR_NONE | fifo;
  }

  #updateIrq(): void {
    const level = (this.#iir() & IIR_NONE) === 0 ? 1 : 0;
    if (this.#s[S_IRQ] === level) return;
    this.#s[S_IRQ] = level;
    this.#hooks.irq(level === 1);
  }

  #push(byte: number): boolean {
    const s = this.#s;
    const n = s[S_RX_COUNT]!;
    if (n >= SERIAL_RX_FIFO) return false;
    s[S_RX + ((s[S_RX_HEAD]! + n) % SERIAL_RX_FIFO)] = byte & 0xff;
    s[S_RX_COUNT] = n + 1;
    return true;
  }

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    let space = false;
    const v = this.#lock.with(() => {
      const s = this.#s;
      const dlab = (s[S_LCR]! & LCR_DLAB) !== 0;
      let r = 0;
      switch (offset) {
        case RBR_THR:
          if (dlab) r = s[S_DLL]!;
          else if (s[S_RX_COUNT]! > 0) {
            const h = s[S_RX_HEAD]!;
            r = s[S_RX + h]!;
            s[S_RX_HEAD] = (h + 1) % SERIAL_RX_FIFO;
            s[S_RX_COUNT] = s[S_RX_COUNT]! - 1;
            if (s[S_HOST_WAITING]) {
              s[S_HOST_WAITING] = 0;
              space = true;
            }
          }
          break;
        case IER: r = dlab ? s[S_DLM]! : s[S_IER]!; break;
        case IIR_FCR:
          r = this.#iir();
          if ((r & 0x0f) === IIR_THRI) s[S_THRE_PENDING] = 0; // reading IIR acknowledges THRE
          break;
        case LCR: r = s[S_LCR]!; break;
        case MCR: r = s[S_MCR]!; break;
        case LSR:
          r = LSR_THRE | LSR_TEMT | (s[S_RX_COUNT]! > 0 ? LSR_DR : 0) | (s[S_OVERRUN] ? LSR_OE : 0);
          s[S_OVERRUN] = 0;
          break;
        case MSR: {
          const m = s[S_MCR]!;
          // Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD; otherwise a cable with CTS, DSR and DCD up.
          r = m & MCR_LOOP ? ((m & 1) << 5) | ((m & 2) << 3) | ((m & 4) << 4) | ((m & 8) << 4) : MSR_DCD | MSR_DSR | MSR_CTS;
          break;
        }
        case SCR: r = s[S_SCR]!; break;
      }
      this.#updateIrq();
      return r;
    });
    data[0] = v;
    if (space) this.#hooks.rxSpace?.();
  }

  write(offset: number, data: Uint8Array): void {
    const v = data[0] ?? 0;
    let outByte = -1;
    let space = false;
    this.#lock.with(() => {
      const s = this.#s;
      const dlab = (s[S_LCR]! & LCR_DLAB) !== 0;
      switch (offset) {
        case RBR_THR:
          if (dlab) s[S_DLL] = v;
          else {
            if (s[S_MCR]! & MCR_LOOP) {
              if (!this.#push(v)) s[S_OVERRUN] = 1;
            } else outByte = v;
            s[S_THRE_PENDING] = 1; // written and (instantly) sent: the THR is empty again
          }
          break;
        case IER:
          if (dlab) s[S_DLM] = v;
          else {
            const old = s[S_IER]!;
            s[S_IER] = v & 0x0f;
            if (v & IER_THRI && !(old & IER_THRI)) s[S_THRE_PENDING] = 1;
          }
          break;
        case IIR_FCR:
          s[S_FCR] = v & 0xc9;
          if (v & FCR_CLEAR_RX || !(v & FCR_ENABLE)) {
            s[S_RX_HEAD] = 0;
            s[S_RX_COUNT] = 0;
            // The FIFO has room again: input the host holds back must not wait for a read that never comes.
            if (s[S_HOST_WAITING]) {
              s[S_HOST_WAITING] = 0;
              space = true;
            }
          }
          break;
        case LCR: s[S_LCR] = v; break;
        case MCR: s[S_MCR] = v & 0x1f; break;
        case SCR: s[S_SCR] = v; break;
        default: break; // LSR and MSR are read-only here
      }
      if (outByte >= 0) this.#hooks.out(outByte);
      this.#updateIrq();
    });
    if (space) this.#hooks.rxSpace?.();
  }

  /** The UART's state (under its lock), for snapshots. Host flow control (an `rxSpace` owed) is not part of it. */
  state(): SerialState {
    return this.#lock.with(() => {
      const s = this.#s;
      const rx: number[] = [];
      for (let i = 0; i < s[S_RX_COUNT]!; i++) rx.push(s[S_RX + ((s[S_RX_HEAD]! + i) % SERIAL_RX_FIFO)]! & 0xff);
      return {
        ier: s[S_IER]!, lcr: s[S_LCR]!, mcr: s[S_MCR]!, scr: s[S_SCR]!, dll: s[S_DLL]!, dlm: s[S_DLM]!, fcr: s[S_FCR]!,
        threPending: s[S_THRE_PENDING] === 1, overrun: s[S_OVERRUN] === 1, rx,
      };
    });
  }

  /**
   * Loads {@link Serial16550.state} output into the shared state (every view
   * sees it) and drives the IRQ output to match it.
   * @throws RangeError for a field out of range (nothing is changed then).
   */
  restoreState(state: SerialState): void {
    const r = state as unknown as Record<string, unknown>;
    if (typeof r !== "object" || r === null) throw new RangeError("serial state must be an object");
    const v = {
      ier: byteField(r, "ier", 0x0f), lcr: byteField(r, "lcr"), mcr: byteField(r, "mcr", 0x1f), scr: byteField(r, "scr"),
      dll: byteField(r, "dll"), dlm: byteField(r, "dlm"), fcr: byteField(r, "fcr"),
    };
    if (typeof r["threPending"] !== "boolean" || typeof r["overrun"] !== "boolean") throw new RangeError("serial state: threPending and overrun must be booleans");
    const rx = r["rx"];
    if (!Array.isArray(rx) || rx.length > SERIAL_RX_FIFO || !rx.every((b) => Number.isInteger(b) && b >= 0 && b <= 0xff)) {
      throw new RangeError(`serial state: rx must hold at most ${SERIAL_RX_FIFO} bytes`);
    }
    this.#lock.with(() => {
      const s = this.#s;
      s[S_IER] = v.ier; s[S_LCR] = v.lcr; s[S_MCR] = v.mcr; s[S_SCR] = v.scr; s[S_DLL] = v.dll; s[S_DLM] = v.dlm; s[S_FCR] = v.fcr;
      s[S_THRE_PENDING] = r["threPending"] ? 1 : 0;
      s[S_OVERRUN] = r["overrun"] ? 1 : 0;
      s[S_RX_HEAD] = 0;
      s[S_RX_COUNT] = rx.length;
      (rx as number[]).forEach((b, i) => (s[S_RX + i] = b));
      s[S_HOST_WAITING] = 0;
      this.#updateIrq();
    });
  }

  /**
   * Host input: moves bytes from `bytes` into the receive FIFO while it has
   * room and raises the received-data interrupt. Returns how many bytes were
   * taken; if fewer than offered, `hooks.rxSpace` is called (in the thread of
   * the vCPU that made room) once the guest has taken a byte or cleared the FIFO.
   */
  enqueue(bytes: Uint8Array): number {
    return this.#lock.with(() => {
      let n = 0;
      while (n < bytes.byteLength && this.#push(bytes[n]!)) n++;
      if (n < bytes.byteLength) this.#s[S_HOST_WAITING] = 1;
      this.#updateIrq();
      return n;
    });
  }
}
