// A vCPU's exit loop and its port I/O devices, shared by the thread that runs the vCPU:
// its worker (vcpu-worker.ts) for the whole run, and the main thread for vCPU 0's early
// window (vmm.ts, DESIGN.md "Start-up"), before its worker is ready. The devices are
// views over shared state (the 16550A's and i8042's registers, the boot timer's list, the
// CMOS), so a view on either thread is the same device; what differs between the threads
// is bound through a VcpuLoopHost: where serial output goes, how a forwarded MMIO access
// is served, and what an Intr exit means.
import { writeSync } from "node:fs";
import type { VcpuExit, VcpuFd, VcpuTransferable } from "@ts-vmm/kvm-ioctls";
import {
  ACPI_PM_PORT,
  ACPI_PM_PORTS,
  AcpiPm,
  type AcpiPmEvent,
  BOOT_TIMER_PORT,
  BOOT_TIMER_PORTS,
  BootTimer,
  CMOS_INDEX_PORT,
  CMOS_PORTS,
  CmosRtc,
  DEBUG_EXIT_PORT,
  DebugExit,
  I8042,
  I8042_COMMAND_PORT,
  I8042_DATA_PORT,
  PioBus,
  Serial16550,
} from "@ts-vmm/virtio-devices/legacy";
import { MMIO, serveInterruptRegister } from "@ts-vmm/virtio-devices";
import { ExitCounterWriter, exitCountersBytes } from "./metrics/exit-counters.js";
import { terminalExit } from "./machine/exit-reason.js";
import type { RunResult, VcpuEndState } from "./run-result.js";

/** What the main thread sends a vCPU worker at start (and what the early window runs vCPU 0 with). */
export interface VcpuWorkerData {
  readonly vcpu: VcpuTransferable;
  /** Int32 cell: non-zero asks the worker to stop at its next Intr exit. */
  readonly stop: SharedArrayBuffer;
  /**
   * Pause control, two Int32 cells: [0] 1 asks the worker to park at its next
   * Intr exit (Atomics.wait on this cell until it is 0 again or the VM stops),
   * [1] the pause epoch, bumped by every resume.
   */
  readonly control: SharedArrayBuffer;
  /** The serial output ring's buffer (SerialOutputRing). */
  readonly serialOut: SharedArrayBuffer;
  /** The 16550A's shared registers (serialState()). */
  readonly serial: SharedArrayBuffer;
  /** The i8042's shared registers (i8042State()). */
  readonly i8042: SharedArrayBuffer;
  /** The boot timer's shared milestone list (bootTimerState()). */
  readonly bootTimer: SharedArrayBuffer;
  /** The CMOS RTC's shared state (cmosState()); absent when the VM has none. */
  readonly cmos?: SharedArrayBuffer;
  /** irqfd (an eventfd number) of IRQ 4, COM1. */
  readonly serialIrqFd: number;
  /** irqfd of IRQ 1, the keyboard. */
  readonly kbdIrqFd: number;
  /** MMIO exits inside `mmioWindows` go to the main thread through this mailbox (one per vCPU). */
  readonly mmioMailbox?: SharedArrayBuffer;
  /** How long the mailbox's client spins for an answer before it sleeps (ms; defaultMailboxSpinMs for the VM's vCPUs). */
  readonly mailboxSpinMs?: number;
  /**
   * virtio-mmio windows whose InterruptStatus reads and InterruptAck writes,
   * ConfigGeneration reads and ID register reads this worker serves itself on
   * the transport's cells (serveInterruptRegister): a Linux driver does the first
   * two on every interrupt and reads the generation around every multi-word config
   * read, and each would otherwise cost a round trip to the main thread.
   */
  readonly interruptCells?: readonly { readonly base: number; readonly cell: SharedArrayBuffer }[];
  /** `[start, end)` guest ranges served by the main thread (virtio-mmio windows, the split irqchip's I/O APIC). */
  readonly mmioWindows?: readonly (readonly [number, number])[];
  /**
   * This vCPU's exit counters (src/metrics/exit-counters.ts, sized for `mmioWindows`): the
   * worker adds to them on every exit, the main thread reads them while the VM runs.
   */
  readonly exitCounters?: SharedArrayBuffer;
  /**
   * vCPU 0's early window (one Int32 cell holding an {@link EarlyHandover} state): the main
   * thread runs the vCPU until this worker says it is ready, then hands it over.
   */
  readonly handover?: SharedArrayBuffer;
}

/**
 * States of the early window's handover cell (VcpuWorkerData.handover): `Window` while the
 * main thread runs the vCPU; the worker, once ready, sets `Ready` and kicks the vCPU; the
 * main thread, out of KVM_RUN with every exit completed, sets `Handed` (also when it gives
 * the window up on its own: the worker then starts as soon as it is ready) or `Ended` (the
 * run ended in the window: the worker does not run the vCPU). A worker whose setup threw
 * sets `Failed` (and kicks): the main thread leaves and reports the window `given-up`.
 */
export const EarlyHandover = { Window: 0, Ready: 1, Handed: 2, Ended: 3, Failed: 4 } as const;

/** What the loop does after an Intr exit (or EAGAIN): run again, end the run `Stopped`, or return without ending (the early window's handover). */
export const IntrAction = { Run: 0, Stop: 1, Leave: 2 } as const;
/** One of {@link IntrAction}'s values. */
export type IntrAction = (typeof IntrAction)[keyof typeof IntrAction];

/** How a vCPU loop is bound to the thread that runs it. */
export interface VcpuLoopHost {
  /** COM1 bytes of one exit (`out[0, length)`; `out` is reused once this returns). */
  output(out: Uint8Array, length: number): void;
  /** The guest took a byte from the receive FIFO after the host had more input than room. */
  rxSpace(): void;
  /** An MMIO access inside one of the windows, not a virtio interrupt register: fills `data` for a read. */
  mmio(address: number, write: boolean, data: Uint8Array): void;
  /** Mailbox waits that timed out so far (the worker's forwarding), for the counters. */
  mailboxTimeouts?(): number;
  /** After an Intr exit or EAGAIN: what the loop does next (see {@link IntrAction}). */
  interrupted(): IntrAction;
}

/** How a run of the loop ended: the vCPU's end (without the counters), or null when it left (the early window's handover). */
export type VcpuLoopEnd = Omit<RunResult, "exits"> | null;

const COM1 = 0x3f8;
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

const hex = (v: number | bigint): string => `0x${v.toString(16)}`;

/** InterruptStatus and InterruptAck: 1; the other registers serveInterruptRegister answers: 2. */
const servedKind = (offset: number): 1 | 2 => (offset === MMIO.InterruptStatus || offset === MMIO.InterruptAck ? 1 : 2);

/**
 * One vCPU's exit loop over its port I/O devices (built once per thread from `data`).
 * `canWait`: whether the device views may sleep on a contended lock (a worker) or only
 * spin (the main thread).
 */
export class VcpuLoop {
  readonly #vcpu: VcpuFd;
  readonly #id: number;
  readonly #host: VcpuLoopHost;
  readonly #counters: ExitCounterWriter;
  readonly #bus = new PioBus();
  readonly #out = new Uint8Array(1024);
  #outLen = 0;
  #pendingFlush = false;
  #debugValue: number | null = null;
  #pmEvent: AcpiPmEvent | null = null;
  #pmSource = "";
  readonly #mmioServed: boolean;
  /** The register cells inside each window (by the index counters.mmioExit() returns), if any. */
  readonly #windowCell: ({ base: number; cell: Int32Array } | undefined)[];
  /** Cells outside every window (none in this VMM), looked at only for addresses outside all windows. */
  readonly #strayCells: { base: number; cell: Int32Array }[] = [];

  constructor(vcpu: VcpuFd, data: VcpuWorkerData, host: VcpuLoopHost, canWait: boolean) {
    this.#vcpu = vcpu;
    this.#id = data.vcpu.id;
    this.#host = host;
    const windows = data.mmioWindows ?? [];
    this.#counters = new ExitCounterWriter(data.exitCounters ?? new SharedArrayBuffer(exitCountersBytes(windows.length)), windows);
    this.#mmioServed = windows.length > 0;
    const cells = (data.interruptCells ?? []).map((c) => ({ base: c.base, cell: new Int32Array(c.cell) }));
    this.#windowCell = windows.map(() => undefined);
    for (const c of cells) {
      const w = windows.findIndex(([s, e]) => c.base >= s && c.base + 0x100 <= e);
      if (w >= 0 && this.#windowCell[w] === undefined) this.#windowCell[w] = c;
      else this.#strayCells.push(c);
    }
    const pulse = (fd: number): void => {
      try {
        writeSync(fd, ONE);
      } catch {
        // EAGAIN: the counter is about to overflow, so an interrupt is pending anyway.
      }
    };
    const bus = this.#bus;
    bus.insert(COM1, 8, new Serial16550(data.serial, {
      out: (b) => {
        // Called under the UART's lock: only buffer here, the output (which may wait) comes after.
        this.#out[this.#outLen++] = b;
        if (this.#outLen === this.#out.byteLength) this.#pendingFlush = true;
      },
      irq: (level) => { if (level) pulse(data.serialIrqFd); },
      rxSpace: () => host.rxSpace(),
    }, canWait));
    const kbc = new I8042(data.i8042, {
      reset: () => { this.#pmEvent = "Reset"; this.#pmSource = "the i8042 reset line (command 0xFE or output port)"; },
      kbdIrq: () => pulse(data.kbdIrqFd),
    }, canWait);
    // Ports 0x60 and 0x64 only: 0x61 (port B, the PIT speaker gate) is KVM's, with the PIT's speaker dummy.
    bus.insert(I8042_DATA_PORT, 1, kbc);
    bus.insert(I8042_COMMAND_PORT, 1, { read: (_o, d) => kbc.read(4, d), write: (_o, d) => kbc.write(4, d) });
    bus.insert(ACPI_PM_PORT, ACPI_PM_PORTS, new AcpiPm((e) => {
      this.#pmEvent = e;
      this.#pmSource = e === "PowerOff" ? "ACPI S5 (SLP_EN, SLP_TYP 5)" : "the ACPI reset register";
    }));
    bus.insert(DEBUG_EXIT_PORT, 4, new DebugExit((v) => { this.#debugValue = v; }));
    bus.insert(BOOT_TIMER_PORT, BOOT_TIMER_PORTS, new BootTimer(data.bootTimer, { canWait }));
    if (data.cmos) bus.insert(CMOS_INDEX_PORT, CMOS_PORTS, new CmosRtc(data.cmos, { canWait }));
  }

  /** Hands the bytes of the current exit to the host. */
  flush(): void {
    if (this.#outLen === 0) return;
    this.#host.output(this.#out, this.#outLen);
    this.#outLen = 0;
  }

  // InterruptStatus / InterruptAck, ConfigGeneration and the ID registers of a virtio window,
  // served here: 1 for the two interrupt registers, 2 for the others; 0 for anything else.
  #servedRegister(win: number, addr: number, write: boolean, bytes: Uint8Array): 0 | 1 | 2 {
    const c = win >= 0 ? this.#windowCell[win] : undefined;
    if (c !== undefined) {
      const o = addr - c.base;
      if (o >= 0 && o < 0x100) return serveInterruptRegister(c.cell, o, write, bytes) ? servedKind(o) : 0;
    }
    for (const s of this.#strayCells) {
      if (addr >= s.base && addr < s.base + 0x100) return serveInterruptRegister(s.cell, addr - s.base, write, bytes) ? servedKind(addr - s.base) : 0;
    }
    return 0;
  }

  /** The vCPU's registers and counters as it ends (what can be read). */
  endState(): VcpuEndState {
    let rip = "unknown", rflags = "unknown", cr0 = "unknown", mpState: number | null = null;
    try {
      const regs = this.#vcpu.getRegs();
      rip = hex(regs.rip);
      rflags = hex(regs.rflags);
      cr0 = hex(this.#vcpu.getSregs().cr0);
      mpState = this.#vcpu.getMpState();
    } catch {
      // the vCPU fd is unusable: report what was read
    }
    // How often a forwarded MMIO access waited 50 ms for the main thread (0 normally).
    if (this.#host.mailboxTimeouts) this.#counters.mailboxTimeouts(this.#host.mailboxTimeouts());
    return { id: this.#id, rip, rflags, cr0, mpState, exits: this.#counters.reasons() };
  }

  #rip(): string {
    try {
      return hex(this.#vcpu.getRegs().rip);
    } catch {
      return "unknown";
    }
  }

  /**
   * KVM_RUN and the exits until the vCPU ends (its end, the pending output flushed) or
   * the host's `interrupted()` says to leave, or an exit completes at or after `deadline`
   * (performance.now(); only the early window has one): then null, with every exit
   * completed as far as user space goes (KVM finishes a pending I/O or MMIO read on the
   * next KVM_RUN, from whichever thread).
   */
  run(deadline = Infinity): VcpuLoopEnd {
    const vcpu = this.#vcpu;
    const id = this.#id;
    const counters = this.#counters;
    const bus = this.#bus;
    const host = this.#host;
    const limited = deadline !== Infinity;
    for (;;) {
      let exit: VcpuExit;
      try {
        exit = vcpu.run();
      } catch (e) {
        // An AP that was waiting for INIT/SIPI (KVM_MP_STATE_UNINITIALIZED) comes back with
        // EAGAIN once its state changed: run it again, as QEMU does.
        if ((e as { code?: unknown }).code === "EAGAIN") {
          counters.again();
          const a = host.interrupted();
          if (a === IntrAction.Stop) return this.#end({ reason: "Stopped", guestExitValue: null });
          if (a === IntrAction.Leave) return null;
          continue;
        }
        return this.#end({ reason: "Error", guestExitValue: null, detail: `vCPU ${id}: ${(e as Error).message}` });
      }
      // The hot path: no allocation, no string-keyed lookup (counters by slot, devices by table).
      switch (exit.kind) {
        case "IoOut":
        case "IoIn": {
          const { port: p, size, count, data: bytes } = exit;
          const out = exit.kind === "IoOut";
          counters.io(out, p);
          if (count === 1) {
            // bytes is exactly one access (size bytes): no subarray.
            if (out) bus.write(p, bytes);
            else bus.read(p, bytes);
          } else {
            for (let i = 0; i < count; i++) {
              const chunk = bytes.subarray(i * size, (i + 1) * size);
              if (out) bus.write(p, chunk);
              else bus.read(p, chunk);
              if (this.#pendingFlush) {
                this.#pendingFlush = false;
                this.flush();
              }
            }
          }
          this.flush();
          if (this.#debugValue !== null) return this.#end({ reason: "DebugExit", guestExitValue: this.#debugValue });
          if (this.#pmEvent !== null) {
            const e = this.#pmEvent;
            return this.#end({ reason: e, guestExitValue: null, detail: `vCPU ${id}: ${e === "PowerOff" ? "the guest powered off" : "the guest asked for a reset"} through ${this.#pmSource}` });
          }
          break;
        }
        case "MmioRead":
        case "MmioWrite": {
          // exit.data is exactly exit.len bytes (kvm-ioctls keeps one view per length).
          const write = exit.kind === "MmioWrite";
          const addr = exit.address;
          const win = counters.mmioExit(write, addr);
          const served = this.#servedRegister(win, addr, write, exit.data);
          // MmioInterruptRegister counts InterruptStatus/ACK only; the ID and generation reads served
          // here are counted under their kind (MmioRead) alone.
          if (served !== 0) {
            if (served === 1) counters.interruptRegister();
          } else if (this.#mmioServed && win >= 0) {
            host.mmio(addr, write, exit.data);
            if (host.mailboxTimeouts) counters.mailboxTimeouts(host.mailboxTimeouts());
          }
          else if (!write) exit.data.fill(0xff); // nothing there: the bus floats high
          break;
        }
        case "IoapicEoi":
          counters.exit(exit.kind);
          // Split irqchip: the guest ended a level-triggered interrupt of an I/O APIC route. The
          // user-space I/O APIC keeps no remote IRR (each raise is one MSI), so there is nothing to clear.
          break;
        case "Intr": {
          counters.exit(exit.kind);
          const a = host.interrupted();
          if (a === IntrAction.Stop) return this.#end({ reason: "Stopped", guestExitValue: null });
          if (a === IntrAction.Leave) return null;
          break;
        }
        default: {
          counters.exit(exit.kind);
          const end = terminalExit(id, exit, () => this.#rip());
          if (end) return this.#end(end);
        }
      }
      if (limited && performance.now() >= deadline) return null;
    }
  }

  #end(r: Omit<RunResult, "exits">): Omit<RunResult, "exits"> {
    this.flush();
    return r;
  }
}
