// Exit counters of one vCPU in a SharedArrayBuffer: the vCPU's worker adds
// with plain stores (it is the only writer), the main thread reads and sums
// them at any time. One Float64Array slot per counter (exact to 2^53).
//
// Layout: [reasons][port devices][MMIO windows, in VcpuWorkerData.mmioWindows order][mmio-unknown]
import type { VcpuExitKind } from "@ts-vmm/kvm-ioctls";
import {
  ACPI_PM_PORT,
  ACPI_PM_PORTS,
  BOOT_TIMER_PORT,
  BOOT_TIMER_PORTS,
  CMOS_INDEX_PORT,
  CMOS_PORTS,
  DEBUG_EXIT_PORT,
  I8042_COMMAND_PORT,
  I8042_DATA_PORT,
} from "@ts-vmm/virtio-devices/legacy";

const EXIT_KINDS: Record<VcpuExitKind, true> = {
  IoOut: true, IoIn: true, MmioRead: true, MmioWrite: true, Hlt: true, Shutdown: true,
  IrqWindowOpen: true, Intr: true, DirtyRingFull: true, FailEntry: true, Exception: true,
  InternalError: true, SystemEvent: true, IoapicEoi: true, Hypercall: true, X86Rdmsr: true,
  X86Wrmsr: true, Debug: true, MemoryFault: true, Unknown: true,
};

/**
 * What the exit counters count by reason: every {@link VcpuExitKind} (one per
 * KVM_RUN that returned), then three that are not exits of their own:
 * `Again` (KVM_RUN returned EAGAIN, an AP waiting for SIPI), `MmioInterruptRegister`
 * (MmioRead/MmioWrite exits the worker served on a virtio InterruptStatus/ACK
 * register itself; also counted under their kind; ConfigGeneration and ID register
 * reads, also served there, count only under their kind) and `MmioMailboxTimeouts`
 * (forwarded MMIO accesses that waited 50 ms for the main thread).
 */
export const EXIT_REASONS: readonly string[] = [...Object.keys(EXIT_KINDS), "Again", "MmioInterruptRegister", "MmioMailboxTimeouts"];
/** Reasons that are exits (summed into `total`); the rest are the extra counters above. */
export const EXIT_KIND_COUNT = Object.keys(EXIT_KINDS).length;

/** COM1's base port. */
const COM1 = 0x3f8;

/**
 * The port I/O devices exits are counted by, in slot order. After the devices
 * the VMM always has come the legacy PC ranges it may have no device for, named
 * so that a guest probing them shows in the metrics (with the split irqchip there
 * is no 8259 or PIT; there is no PCI): `pic` (0x20–0x21, 0xa0–0xa1),
 * `pit` (0x40–0x43), `port-b` (0x61), `cmos` (0x70–0x71: the CMOS RTC, or
 * floating ports with `cmos: false`), `port80` (0x80, the POST/delay port) and
 * `pci-config` (0xcf8–0xcff); `pio-unknown` is any other port.
 */
export const PIO_DEVICES = ["com1", "i8042", "acpi-pm", "debug-exit", "boot-timer", "pic", "pit", "port-b", "cmos", "port80", "pci-config", "pio-unknown"] as const;
/** A name of {@link PIO_DEVICES}. */
export type PioDeviceName = (typeof PIO_DEVICES)[number];

/** Which {@link PIO_DEVICES} slot each of the 65536 ports counts in. Built once per thread. */
const PORT_SLOT = ((): Uint8Array => {
  const t = new Uint8Array(0x10000).fill(PIO_DEVICES.indexOf("pio-unknown"));
  const set = (base: number, n: number, dev: PioDeviceName): void => {
    t.fill(PIO_DEVICES.indexOf(dev), base, base + n);
  };
  set(COM1, 8, "com1");
  set(I8042_DATA_PORT, 1, "i8042");
  set(I8042_COMMAND_PORT, 1, "i8042");
  set(ACPI_PM_PORT, ACPI_PM_PORTS, "acpi-pm");
  set(DEBUG_EXIT_PORT, 4, "debug-exit");
  set(BOOT_TIMER_PORT, BOOT_TIMER_PORTS, "boot-timer");
  set(0x20, 2, "pic");
  set(0xa0, 2, "pic");
  set(0x40, 4, "pit");
  set(0x61, 1, "port-b");
  set(CMOS_INDEX_PORT, CMOS_PORTS, "cmos");
  set(0x80, 1, "port80");
  set(0xcf8, 8, "pci-config");
  return t;
})();

const REASON_INDEX = new Map(EXIT_REASONS.map((r, i) => [r, i]));
/** Slot of each exit kind: a constant-shape object, so `exit(kind)` is one property load. */
const KIND_SLOT: Readonly<Record<VcpuExitKind, number>> = Object.freeze(
  Object.fromEntries(Object.keys(EXIT_KINDS).map((k, i) => [k, i])) as Record<VcpuExitKind, number>,
);
const IO_OUT = KIND_SLOT.IoOut;
const IO_IN = KIND_SLOT.IoIn;
const MMIO_READ = KIND_SLOT.MmioRead;
const MMIO_WRITE = KIND_SLOT.MmioWrite;
const UNKNOWN = KIND_SLOT.Unknown;
const AGAIN = REASON_INDEX.get("Again")!;
const INTERRUPT_REGISTER = REASON_INDEX.get("MmioInterruptRegister")!;
const MAILBOX_TIMEOUTS = REASON_INDEX.get("MmioMailboxTimeouts")!;
const PIO_BASE = EXIT_REASONS.length;
const MMIO_BASE = PIO_BASE + PIO_DEVICES.length;

/** Bytes of the counter buffer of a vCPU whose worker forwards `windows` MMIO windows. */
export function exitCountersBytes(windows: number): number {
  return (MMIO_BASE + windows + 1) * 8;
}

/**
 * The vCPU worker's side: one add per exit, no allocation, no string-keyed
 * lookup on the hot path ({@link ExitCounterWriter.io} and
 * {@link ExitCounterWriter.mmioExit} count the exit and its device in one
 * call). Only the worker that owns the buffer may write it.
 */
export class ExitCounterWriter {
  readonly #c: Float64Array;
  readonly #starts: Float64Array;
  readonly #ends: Float64Array;
  readonly #unknownMmio: number;

  /**
   * @param buffer from {@link exitCountersBytes} for `windows.length` windows.
   * @param windows `[start, end)` of each MMIO window, in the order the main thread names them.
   */
  constructor(buffer: SharedArrayBuffer, windows: readonly (readonly [number, number])[]) {
    if (buffer.byteLength < exitCountersBytes(windows.length)) throw new RangeError("exit counter buffer too small for its windows");
    this.#c = new Float64Array(buffer, 0, exitCountersBytes(windows.length) / 8);
    this.#starts = Float64Array.from(windows, (w) => w[0]);
    this.#ends = Float64Array.from(windows, (w) => w[1]);
    this.#unknownMmio = MMIO_BASE + windows.length;
  }

  /** One exit of `kind` (the exits other than port I/O and MMIO). */
  exit(kind: VcpuExitKind): void {
    this.#c[KIND_SLOT[kind] ?? UNKNOWN]!++;
  }

  /** One IoOut (`out`) or IoIn exit on `port`: the reason and the port's device. */
  io(out: boolean, port: number): void {
    const c = this.#c;
    c[out ? IO_OUT : IO_IN]!++;
    c[PIO_BASE + PORT_SLOT[port & 0xffff]!]!++;
  }

  /**
   * One MmioWrite (`write`) or MmioRead exit at `address`: the reason and the
   * window that holds it (or `mmio-unknown`).
   * @returns the window's index in the constructor's `windows`, or -1
   */
  mmioExit(write: boolean, address: number): number {
    this.#c[write ? MMIO_WRITE : MMIO_READ]!++;
    return this.mmio(address);
  }

  /** KVM_RUN returned EAGAIN. */
  again(): void {
    this.#c[AGAIN]!++;
  }

  /** An MMIO exit served on a virtio interrupt register in the worker. */
  interruptRegister(): void {
    this.#c[INTERRUPT_REGISTER]!++;
  }

  /** The forwarding mailbox's timeout count so far (copied, not added). */
  mailboxTimeouts(n: number): void {
    this.#c[MAILBOX_TIMEOUTS] = n;
  }

  /** A port I/O exit on `port` (one per exit, however many repetitions it carries). */
  port(port: number): void {
    this.#c[PIO_BASE + PORT_SLOT[port & 0xffff]!]!++;
  }

  /**
   * An MMIO exit at `address`: counted in the window that holds it, or as `mmio-unknown`.
   * @returns the window's index, or -1 (the worker dispatches on it: one window lookup per exit)
   */
  mmio(address: number): number {
    const s = this.#starts, e = this.#ends;
    for (let i = 0; i < s.length; i++) {
      if (address >= s[i]! && address < e[i]!) {
        this.#c[MMIO_BASE + i]!++;
        return i;
      }
    }
    this.#c[this.#unknownMmio]!++;
    return -1;
  }

  /** Non-zero reason counters as a record (the worker's `RunResult.exits`). */
  reasons(): Record<string, number> {
    return readReasons(this.#c);
  }
}

function readReasons(c: Float64Array): Record<string, number> {
  const out: Record<string, number> = {};
  EXIT_REASONS.forEach((r, i) => {
    const n = c[i]!;
    if (n > 0) out[r] = n;
  });
  return out;
}

/** One vCPU's counters as the main thread reads them. */
export interface VcpuExitCounts {
  /** Exits (every {@link VcpuExitKind}) in all. */
  readonly total: number;
  /** Non-zero counters by {@link EXIT_REASONS} name. */
  readonly byReason: Record<string, number>;
  /** By device, each of {@link PIO_DEVICES}, then each window name, then `mmio-unknown` (zeros included). */
  readonly byDevice: Record<string, number>;
}

/**
 * Reads a vCPU's counter buffer (the main thread; the worker may be adding at
 * the same time: each value is one it had, the set is not one instant).
 * @param windowNames a name per MMIO window, in the worker's window order.
 */
export function readExitCounters(buffer: SharedArrayBuffer, windowNames: readonly string[]): VcpuExitCounts {
  const c = new Float64Array(buffer, 0, exitCountersBytes(windowNames.length) / 8);
  let total = 0;
  for (let i = 0; i < EXIT_KIND_COUNT; i++) total += c[i]!;
  const byDevice: Record<string, number> = {};
  PIO_DEVICES.forEach((d, i) => { byDevice[d] = c[PIO_BASE + i]!; });
  windowNames.forEach((w, i) => { byDevice[w] = (byDevice[w] ?? 0) + c[MMIO_BASE + i]!; });
  byDevice["mmio-unknown"] = c[MMIO_BASE + windowNames.length]!;
  return { total, byReason: readReasons(c), byDevice };
}
