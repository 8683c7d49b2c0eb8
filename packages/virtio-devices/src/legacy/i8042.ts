import type { PioDevice } from "./pio-bus.js";
import { SharedLock } from "./shared-lock.js";

/** The i8042's data port. */
export const I8042_DATA_PORT = 0x60;
/** The i8042's status (read) and command (write) port. */
export const I8042_COMMAND_PORT = 0x64;

// Status register bits.
const ST_OBF = 0x01, ST_SYS = 0x04, ST_CMD = 0x08, ST_UNLOCKED = 0x10;
// Command byte (CTR) bits.
const CTR_KBDINT = 0x01, CTR_SYS = 0x04, CTR_KBDDIS = 0x10, CTR_AUXDIS = 0x20, CTR_XLATE = 0x40;
/** Output queue length: a few bytes per command, or one whole injected key sequence (11 bytes in set 2). */
const QUEUE = 16;

/** Ctrl, Alt, Del pressed and released in scan code set 1 (what the guest reads with translation on). */
const CTRL_ALT_DEL_SET1 = [0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d];
/** The same keys in scan code set 2 (translation off). */
const CTRL_ALT_DEL_SET2 = [0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14];

// Shared state cells.
const S_LOCK = 0, S_CTR = 1, S_STATUS = 2, S_PENDING = 3, S_Q_HEAD = 4, S_Q_COUNT = 5, S_OUTPORT = 6;
const S_Q = 8; // pairs: value, fromKeyboard
const CELLS = S_Q + QUEUE * 2;

/** The shared state of one i8042: pass it to every thread that has an {@link I8042} view of it. */
export function i8042State(): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(CELLS * 4);
  const s = new Int32Array(sab);
  s[S_CTR] = CTR_KBDINT | CTR_SYS | CTR_XLATE | CTR_AUXDIS;
  s[S_STATUS] = ST_SYS | ST_UNLOCKED;
  s[S_OUTPORT] = 0x03;
  return sab;
}

/** Saved state of an {@link I8042} (plain JSON). */
export interface I8042State {
  /** The command byte. */
  readonly ctr: number;
  /** The status register. */
  readonly status: number;
  /** A controller command waiting for its data byte (0x60, 0xD1–0xD4), or 0. */
  readonly pending: number;
  /** The output port. */
  readonly outport: number;
  /** The output queue, oldest first: each byte and whether it is keyboard data. */
  readonly queue: readonly { readonly value: number; readonly keyboard: boolean }[];
}

const PENDING_COMMANDS = new Set([0, 0x60, 0xd1, 0xd2, 0xd3, 0xd4]);

/** What an {@link I8042} view calls out to. */
export interface I8042Hooks {
  /** The guest asked for a CPU reset (command 0xFE, or pulsing the reset line through the output port). */
  reset(): void;
  /** Pulse IRQ 1: keyboard data is ready and the command byte enables its interrupt. */
  kbdIrq(): void;
}

/**
 * An i8042 keyboard controller with a keyboard that answers but types only
 * what the VMM injects ({@link I8042.ctrlAltDel}): enough for Linux's i8042
 * and atkbd drivers to probe it without timeouts, for the classic reboot path
 * (command 0xFE on port 0x64), and for asking the guest to reboot itself the
 * way a user at the console would (Ctrl-Alt-Del). There is no AUX
 * (mouse) port: the DSDT announces only PNP0303. State lives in a
 * SharedArrayBuffer so that any vCPU may access it.
 *
 * Controller commands: 0x20 read / 0x60 write the command byte, 0xAA self
 * test (0x55), 0xAB keyboard interface test (0x00), 0xAD/0xAE disable/enable
 * the keyboard, 0xA7/0xA8 (no AUX port: the AUX-disable bit stays set),
 * 0xA9 AUX test (0xFF: no port), 0xD0/0xD1 read/write the output port (a write
 * with bit 0 clear resets the CPU), 0xFE (and 0xF0-0xFD with bit 0 clear)
 * pulse reset. Keyboard commands written to port 0x60 get 0xFA (ACK); 0xFF
 * (reset) also 0xAA, 0xF2 (identify) also 0xAB 0x83 (an MF2 keyboard). Unknown
 * commands are ignored.
 */
export class I8042 implements PioDevice {
  readonly #s: Int32Array;
  readonly #lock: SharedLock;
  readonly #hooks: I8042Hooks;

  /**
   * @param state from {@link i8042State}.
   * @param hooks reset and interrupt callbacks of this thread.
   * @param canWait true in a worker (the lock may sleep).
   */
  constructor(state: SharedArrayBuffer, hooks: I8042Hooks, canWait = true) {
    if (state.byteLength < CELLS * 4) throw new RangeError("i8042 state is too small: make it with i8042State()");
    this.#s = new Int32Array(state);
    this.#lock = new SharedLock(this.#s.subarray(S_LOCK, S_LOCK + 1), canWait);
    this.#hooks = hooks;
  }

  /** Queues a byte for the data port (dropped if the queue is full); `kbd` marks keyboard data, which may interrupt. */
  #queue(v: number, kbd: boolean): void {
    const s = this.#s;
    const n = s[S_Q_COUNT]!;
    if (n >= QUEUE) return;
    const i = (s[S_Q_HEAD]! + n) % QUEUE;
    s[S_Q + i * 2] = v & 0xff;
    s[S_Q + i * 2 + 1] = kbd ? 1 : 0;
    s[S_Q_COUNT] = n + 1;
  }

  /** After a change: set OBF if a byte waits, and say whether to interrupt. */
  #refill(): boolean {
    const s = this.#s;
    if (s[S_Q_COUNT]! === 0) {
      s[S_STATUS] = s[S_STATUS]! & ~ST_OBF;
      return false;
    }
    const wasFull = (s[S_STATUS]! & ST_OBF) !== 0;
    s[S_STATUS] = s[S_STATUS]! | ST_OBF;
    const kbd = s[S_Q + s[S_Q_HEAD]! * 2 + 1] === 1;
    return !wasFull && kbd && (s[S_CTR]! & CTR_KBDINT) !== 0;
  }

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    let irq = false;
    data[0] = this.#lock.with(() => {
      const s = this.#s;
      if (offset === I8042_COMMAND_PORT - I8042_DATA_PORT) return s[S_STATUS]!;
      if (offset !== 0) return 0xff;
      if (s[S_Q_COUNT]! === 0) return 0;
      const h = s[S_Q_HEAD]!;
      const v = s[S_Q + h * 2]!;
      s[S_Q_HEAD] = (h + 1) % QUEUE;
      s[S_Q_COUNT] = s[S_Q_COUNT]! - 1;
      s[S_STATUS] = s[S_STATUS]! & ~ST_OBF;
      irq = this.#refill();
      return v;
    });
    if (irq) this.#hooks.kbdIrq();
  }

  /**
   * Injects Ctrl-Alt-Del: queues the make and break codes of Ctrl, Alt and
   * Del for the data port (scan code set 1 while the command byte's
   * translation bit is set, as Linux leaves it; set 2 otherwise) and raises
   * the keyboard interrupt if it is enabled. Linux's keyboard driver answers
   * with `ctrl_alt_del()` (a reboot, or a signal to init). Does nothing and
   * returns false while the keyboard is disabled (command 0xAD) or the output
   * queue has no room for the whole sequence; a guest's command answers are
   * never split by it.
   */
  ctrlAltDel(): boolean {
    let irq = false;
    const queued = this.#lock.with(() => {
      const s = this.#s;
      if (s[S_CTR]! & CTR_KBDDIS) return false;
      const codes = s[S_CTR]! & CTR_XLATE ? CTRL_ALT_DEL_SET1 : CTRL_ALT_DEL_SET2;
      if (s[S_Q_COUNT]! + codes.length > QUEUE) return false;
      for (const c of codes) this.#queue(c, true);
      irq = this.#refill();
      return true;
    });
    if (irq) this.#hooks.kbdIrq();
    return queued;
  }

  write(offset: number, data: Uint8Array): void {
    const v = data[0] ?? 0;
    let reset = false;
    let irq = false;
    this.#lock.with(() => {
      const s = this.#s;
      if (offset === I8042_COMMAND_PORT - I8042_DATA_PORT) {
        s[S_STATUS] = s[S_STATUS]! | ST_CMD;
        s[S_PENDING] = 0;
        switch (v) {
          case 0x20: this.#queue(s[S_CTR]!, false); break;
          case 0x60: case 0xd1: case 0xd2: case 0xd3: case 0xd4: s[S_PENDING] = v; break;
          case 0xa7: s[S_CTR] = s[S_CTR]! | CTR_AUXDIS; break;
          case 0xa8: break; // no AUX port: stays disabled
          case 0xa9: this.#queue(0xff, false); break;
          case 0xaa: this.#queue(0x55, false); break;
          case 0xab: this.#queue(0x00, false); break;
          case 0xad: s[S_CTR] = s[S_CTR]! | CTR_KBDDIS; break;
          case 0xae: s[S_CTR] = s[S_CTR]! & ~CTR_KBDDIS; break;
          case 0xd0: this.#queue(s[S_OUTPORT]!, false); break;
          default:
            if (v >= 0xf0 && (v & 1) === 0) reset = true; // pulse output port bit 0 (the CPU reset line)
            break;
        }
      } else if (offset === 0) {
        s[S_STATUS] = s[S_STATUS]! & ~ST_CMD;
        const pending = s[S_PENDING]!;
        s[S_PENDING] = 0;
        switch (pending) {
          case 0x60:
            s[S_CTR] = (v | CTR_AUXDIS) & 0xff;
            s[S_STATUS] = (s[S_STATUS]! & ~ST_SYS) | (v & CTR_SYS);
            break;
          case 0xd1:
            s[S_OUTPORT] = v;
            if ((v & 1) === 0) reset = true;
            break;
          case 0xd2: this.#queue(v, true); break; // write keyboard output buffer
          case 0xd3: case 0xd4: break; // no AUX port: dropped
          default:
            // A command for the keyboard.
            this.#queue(0xfa, true);
            if (v === 0xff) this.#queue(0xaa, true);
            else if (v === 0xf2) { this.#queue(0xab, true); this.#queue(0x83, true); }
            break;
        }
      }
      irq = this.#refill();
    });
    if (irq) this.#hooks.kbdIrq();
    if (reset) this.#hooks.reset();
  }

  /** The controller's state (under its lock), for snapshots. */
  state(): I8042State {
    return this.#lock.with(() => {
      const s = this.#s;
      const queue: { value: number; keyboard: boolean }[] = [];
      for (let i = 0; i < s[S_Q_COUNT]!; i++) {
        const at = (s[S_Q_HEAD]! + i) % QUEUE;
        queue.push({ value: s[S_Q + at * 2]! & 0xff, keyboard: s[S_Q + at * 2 + 1] === 1 });
      }
      return { ctr: s[S_CTR]!, status: s[S_STATUS]!, pending: s[S_PENDING]!, outport: s[S_OUTPORT]!, queue };
    });
  }

  /**
   * Loads {@link I8042.state} output into the shared state. No interrupt is
   * raised: a byte already waiting had raised its interrupt before the save.
   * @throws RangeError for a field out of range (nothing is changed then).
   */
  restoreState(state: I8042State): void {
    const r = state as unknown as Record<string, unknown>;
    if (typeof r !== "object" || r === null) throw new RangeError("i8042 state must be an object");
    for (const k of ["ctr", "status", "outport"]) {
      const v = r[k];
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`i8042 state: ${k} must be a byte, got ${JSON.stringify(v)}`);
    }
    if (!PENDING_COMMANDS.has(r["pending"] as number)) throw new RangeError(`i8042 state: pending must be 0 or a command that takes data, got ${JSON.stringify(r["pending"])}`);
    const q = r["queue"];
    if (!Array.isArray(q) || q.length > QUEUE || !q.every((e) => typeof e === "object" && e !== null && Number.isInteger(e.value) && e.value >= 0 && e.value <= 0xff && typeof e.keyboard === "boolean")) {
      throw new RangeError(`i8042 state: queue must hold at most ${QUEUE} {value, keyboard} entries`);
    }
    this.#lock.with(() => {
      const s = this.#s;
      s[S_CTR] = r["ctr"] as number;
      s[S_STATUS] = r["status"] as number;
      s[S_PENDING] = r["pending"] as number;
      s[S_OUTPORT] = r["outport"] as number;
      s[S_Q_HEAD] = 0;
      s[S_Q_COUNT] = q.length;
      (q as { value: number; keyboard: boolean }[]).forEach((e, i) => {
        s[S_Q + i * 2] = e.value;
        s[S_Q + i * 2 + 1] = e.keyboard ? 1 : 0;
      });
      // OBF follows the queue.
      s[S_STATUS] = q.length > 0 ? s[S_STATUS]! | ST_OBF : s[S_STATUS]! & ~ST_OBF;
    });
  }
}
