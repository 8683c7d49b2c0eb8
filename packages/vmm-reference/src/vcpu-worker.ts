// Entry point of a vCPU's worker thread: runs KVM_RUN in a loop and serves the
// exits that need user space. Port I/O devices (from @ts-vmm/virtio-devices/legacy)
// live here (the 16550A, the i8042, the ACPI sleep/reset registers, the CMOS
// RTC, the debug-exit port and the boot timer) so a PIO exit costs no thread hop; the
// UART's and i8042's registers and the boot timer's list are in shared memory,
// the same device for every vCPU. Serial output goes to the main thread after
// each exit that produced some.
import { writeSync } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import { hostCpuid, VcpuFd, type VcpuExit, type VcpuTransferable } from "@ts-vmm/kvm-ioctls";
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
import { serveInterruptRegister } from "@ts-vmm/virtio-devices";
import { MmioMailboxClient } from "./devices/mmio-mailbox.js";
import { ExitCounterWriter, exitCountersBytes } from "./metrics/exit-counters.js";
import { SerialOutputRing } from "./devices/serial-output.js";
import { terminalExit } from "./machine/exit-reason.js";
import type { RunResult, VcpuEndState } from "./run-result.js";
import { TRACE_STARTUP, absoluteNow, mark, startupMarks, type StartupMark } from "./startup-trace.js";
import type { VcpuWorkerPrestart, VcpuWorkerStart } from "./worker-pool.js";

/** When this worker's modules were loaded (its body starts). */
const modulesLoadedAt = absoluteNow();

/** What the main thread sends a vCPU worker at start. */
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
  /**
   * virtio-mmio windows whose InterruptStatus reads and InterruptAck writes this
   * worker serves itself on the transport's cell (serveInterruptRegister): a
   * Linux driver does both on every interrupt, and each would otherwise cost a
   * round trip to the main thread.
   */
  readonly interruptCells?: readonly { readonly base: number; readonly cell: SharedArrayBuffer }[];
  /** `[start, end)` guest ranges served by the main thread (virtio-mmio windows, the split irqchip's I/O APIC). */
  readonly mmioWindows?: readonly (readonly [number, number])[];
  /**
   * This vCPU's exit counters (src/metrics/exit-counters.ts, sized for `mmioWindows`): the
   * worker adds to them on every exit, the main thread reads them while the VM runs.
   */
  readonly exitCounters?: SharedArrayBuffer;
}

/** Messages from a vCPU worker. */
export type VcpuWorkerMessage =
  /** There are bytes in the serial output ring (posted only when no wake-up is pending). */
  | { readonly type: "serialWake" }
  /** The guest took a byte from the receive FIFO after the host had more input than room. */
  | { readonly type: "rxSpace" }
  /** Start-up phases of this worker (only with TS_VMM_TRACE_STARTUP=1). */
  | { readonly type: "trace"; readonly marks: readonly StartupMark[] }
  /**
   * Posted once, just before the first KVM_RUN: `at` is that moment in ms since
   * the epoch on the shared clock (startup-trace.ts's absoluteNow).
   */
  | { readonly type: "running"; readonly at: number }
  /** The vCPU is out of KVM_RUN and parked for pause `epoch` (its state can be read now). */
  | { readonly type: "parked"; readonly epoch: number }
  | { readonly type: "stopped"; readonly result: RunResult };

const COM1 = 0x3f8;
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

const hex = (v: number | bigint): string => `0x${v.toString(16)}`;

function main(port: NonNullable<typeof parentPort>, data: VcpuWorkerData): void {
  const vcpu = VcpuFd.fromTransferable(data.vcpu);
  const id = data.vcpu.id;
  const stop = new Int32Array(data.stop);
  // Bytes the guest transmitted during the current exit; they go to the ring after it.
  const out = new Uint8Array(1024);
  let outLen = 0;
  const ring = new SerialOutputRing(data.serialOut, true);
  const stopping = (): boolean => Atomics.load(stop, 0) !== 0;
  const control = new Int32Array(data.control);
  // Parks while a pause is asked for: returns false if the VM is stopping instead.
  // Only called after an Intr exit, so no exit is half-handled: KVM completed any
  // pending I/O or MMIO emulation in the KVM_RUN that returned Intr.
  const park = (): boolean => {
    while (Atomics.load(control, 0) === 1 && !stopping()) {
      const epoch = Atomics.load(control, 1);
      port.postMessage({ type: "parked", epoch } satisfies VcpuWorkerMessage);
      while (Atomics.load(control, 0) === 1 && Atomics.load(control, 1) === epoch && !stopping()) Atomics.wait(control, 0, 1);
    }
    return !stopping();
  };
  const wake = (): void => port.postMessage({ type: "serialWake" } satisfies VcpuWorkerMessage);
  const flush = (): void => {
    if (outLen === 0) return;
    // Flow control: waits while the ring is full (the vCPU pauses), unless the VM is stopping.
    ring.write(out, outLen, stopping, wake);
    outLen = 0;
  };
  const pulse = (fd: number): void => {
    try {
      writeSync(fd, ONE);
    } catch {
      // EAGAIN: the counter is about to overflow, so an interrupt is pending anyway.
    }
  };
  let pendingFlush = false;
  let debugValue: number | null = null;
  let pmEvent: AcpiPmEvent | null = null;
  let pmSource = "";
  const windows = data.mmioWindows ?? [];
  const counters = new ExitCounterWriter(data.exitCounters ?? new SharedArrayBuffer(exitCountersBytes(windows.length)), windows);
  const mailbox = data.mmioMailbox && windows.length > 0 ? new MmioMailboxClient(data.mmioMailbox, stop) : undefined;
  const cells = (data.interruptCells ?? []).map((c) => ({ base: c.base, cell: new Int32Array(c.cell) }));
  // MMIO dispatch table, by the window index counters.mmioExit() returns (one window lookup
  // per exit, shared with the counting): the interrupt cell inside each window, if any.
  // Cells outside every window (none in this VMM) stay in `strayCells`, looked at only for
  // addresses outside all windows.
  type Cell = (typeof cells)[number];
  const windowCell: (Cell | undefined)[] = windows.map(() => undefined);
  const strayCells: Cell[] = [];
  for (const c of cells) {
    const w = windows.findIndex(([s, e]) => c.base >= s && c.base + 0x100 <= e);
    if (w >= 0 && windowCell[w] === undefined) windowCell[w] = c;
    else strayCells.push(c);
  }
  // InterruptStatus / InterruptAck of a virtio window, served here; false for anything else.
  const interruptRegister = (win: number, addr: number, write: boolean, bytes: Uint8Array): boolean => {
    const c = win >= 0 ? windowCell[win] : undefined;
    if (c !== undefined) {
      const o = addr - c.base;
      if (o >= 0 && o < 0x100) return serveInterruptRegister(c.cell, o, write, bytes);
    }
    for (const s of strayCells) if (addr >= s.base && addr < s.base + 0x100) return serveInterruptRegister(s.cell, addr - s.base, write, bytes);
    return false;
  };
  const bus = new PioBus();
  bus.insert(COM1, 8, new Serial16550(data.serial, {
    out: (b) => {
      // Called under the UART's lock: only buffer here, the ring write (which may wait) comes after.
      out[outLen++] = b;
      if (outLen === out.byteLength) pendingFlush = true;
    },
    irq: (level) => { if (level) pulse(data.serialIrqFd); },
    rxSpace: () => port.postMessage({ type: "rxSpace" } satisfies VcpuWorkerMessage),
  }));
  const kbc = new I8042(data.i8042, {
    reset: () => { pmEvent = "Reset"; pmSource = "the i8042 reset line (command 0xFE or output port)"; },
    kbdIrq: () => pulse(data.kbdIrqFd),
  });
  // Ports 0x60 and 0x64 only: 0x61 (port B, the PIT speaker gate) is KVM's, with the PIT's speaker dummy.
  bus.insert(I8042_DATA_PORT, 1, kbc);
  bus.insert(I8042_COMMAND_PORT, 1, { read: (_o, d) => kbc.read(4, d), write: (_o, d) => kbc.write(4, d) });
  bus.insert(ACPI_PM_PORT, ACPI_PM_PORTS, new AcpiPm((e) => {
    pmEvent = e;
    pmSource = e === "PowerOff" ? "ACPI S5 (SLP_EN, SLP_TYP 5)" : "the ACPI reset register";
  }));
  bus.insert(DEBUG_EXIT_PORT, 4, new DebugExit((v) => { debugValue = v; }));
  bus.insert(BOOT_TIMER_PORT, BOOT_TIMER_PORTS, new BootTimer(data.bootTimer));
  if (data.cmos) bus.insert(CMOS_INDEX_PORT, CMOS_PORTS, new CmosRtc(data.cmos));

  const endState = (): VcpuEndState => {
    let rip = "unknown", rflags = "unknown", cr0 = "unknown", mpState: number | null = null;
    try {
      const regs = vcpu.getRegs();
      rip = hex(regs.rip);
      rflags = hex(regs.rflags);
      cr0 = hex(vcpu.getSregs().cr0);
      mpState = vcpu.getMpState();
    } catch {
      // the vCPU fd is unusable: report what was read
    }
    // How often a forwarded MMIO access waited 50 ms for the main thread (0 normally).
    if (mailbox) counters.mailboxTimeouts(mailbox.timeouts);
    return { id, rip, rflags, cr0, mpState, exits: counters.reasons() };
  };
  const finish = (r: Omit<RunResult, "exits">): void => {
    flush();
    const state = endState();
    // Leaving KVM_RUN for good: closing the borrowed vCPU clears the kick target,
    // so no later kick() can signal this thread's id after the worker is gone.
    vcpu.close();
    port.postMessage({ type: "stopped", result: { ...r, exits: state.exits, vcpus: [state] } } satisfies VcpuWorkerMessage);
  };
  const rip = (): string => {
    try {
      return hex(vcpu.getRegs().rip);
    } catch {
      return "unknown";
    }
  };

  if (TRACE_STARTUP) {
    mark("worker modules loaded", modulesLoadedAt);
    mark("first KVM_RUN");
    port.postMessage({ type: "trace", marks: startupMarks() } satisfies VcpuWorkerMessage);
  }
  port.postMessage({ type: "running", at: absoluteNow() } satisfies VcpuWorkerMessage);
  for (;;) {
    let exit: VcpuExit;
    try {
      exit = vcpu.run();
    } catch (e) {
      // An AP that was waiting for INIT/SIPI (KVM_MP_STATE_UNINITIALIZED) comes back with
      // EAGAIN once its state changed: run it again, as QEMU does.
      if ((e as { code?: unknown }).code === "EAGAIN") {
        counters.again();
        if (Atomics.load(stop, 0) !== 0 || (Atomics.load(control, 0) === 1 && !park())) {
          finish({ reason: "Stopped", guestExitValue: null });
          return;
        }
        continue;
      }
      finish({ reason: "Error", guestExitValue: null, detail: `vCPU ${id}: ${(e as Error).message}` });
      return;
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
            if (pendingFlush) {
              pendingFlush = false;
              flush();
            }
          }
        }
        flush();
        if (debugValue !== null) {
          finish({ reason: "DebugExit", guestExitValue: debugValue });
          return;
        }
        if (pmEvent !== null) {
          finish({ reason: pmEvent, guestExitValue: null, detail: `vCPU ${id}: ${pmEvent === "PowerOff" ? "the guest powered off" : "the guest asked for a reset"} through ${pmSource}` });
          return;
        }
        break;
      }
      case "MmioRead":
      case "MmioWrite": {
        // exit.data is exactly exit.len bytes (kvm-ioctls keeps one view per length).
        const write = exit.kind === "MmioWrite";
        const addr = exit.address;
        const win = counters.mmioExit(write, addr);
        if (interruptRegister(win, addr, write, exit.data)) counters.interruptRegister();
        else if (mailbox && win >= 0) {
          mailbox.call(addr, write, exit.data);
          counters.mailboxTimeouts(mailbox.timeouts);
        } else if (!write) exit.data.fill(0xff); // nothing there: the bus floats high
        break;
      }
      case "IoapicEoi":
        counters.exit(exit.kind);
        // Split irqchip: the guest ended a level-triggered interrupt of an I/O APIC route. The
        // user-space I/O APIC keeps no remote IRR (each raise is one MSI), so there is nothing to clear.
        break;
      case "Intr":
        counters.exit(exit.kind);
        if (Atomics.load(stop, 0) !== 0 || (Atomics.load(control, 0) === 1 && !park())) {
          finish({ reason: "Stopped", guestExitValue: null });
          return;
        }
        break;
      default: {
        counters.exit(exit.kind);
        const end = terminalExit(id, exit, rip);
        if (end) {
          finish(end);
          return;
        }
      }
    }
  }
}

if (parentPort) {
  const port = parentPort;
  const wd = workerData as VcpuWorkerData | VcpuWorkerPrestart;
  // Started ahead of need (worker-pool.ts): the vCPU comes in the first message.
  if ("prestart" in wd) {
    port.once("message", (m: VcpuWorkerStart<VcpuWorkerData>) => {
      mark("start message received");
      main(port, m.data);
    });
    // Load kvm-ioctls' addon now (it loads on first use: ~5 ms of dlopen and init that
    // would otherwise fall between run() and the first KVM_RUN). A failure shows again,
    // with its message, where the vCPU is used.
    try {
      hostCpuid(0, 0);
    } catch {
      // reported by main()
    }
    mark("addon loaded, waiting for the vCPU");
  }
  else main(port, wd);
}
