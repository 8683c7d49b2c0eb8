// Entry point of a vCPU's worker thread: runs KVM_RUN in a loop and serves the
// exits that need user space (the loop and its port I/O devices are vcpu-loop.ts's,
// shared with the main thread's early window for vCPU 0). Port I/O devices (from
// @ts-vmm/virtio-devices/legacy) live here (the 16550A, the i8042, the ACPI sleep/reset
// registers, the CMOS RTC, the debug-exit port and the boot timer) so a PIO exit costs no
// thread hop; the UART's and i8042's registers and the boot timer's list are in shared
// memory, the same device for every vCPU. Serial output goes to the main thread after
// each exit that produced some.
import { parentPort, workerData } from "node:worker_threads";
import { hostCpuid, VcpuFd, VcpuKicker } from "@ts-vmm/kvm-ioctls";
import { MmioMailboxClient } from "./devices/mmio-mailbox.js";
import { SerialOutputRing } from "./devices/serial-output.js";
import { EarlyHandover, IntrAction, VcpuLoop, type VcpuWorkerData } from "./vcpu-loop.js";
import type { RunResult } from "./run-result.js";
import { TRACE_STARTUP, absoluteNow, mark, startupMarks, type StartupMark } from "./startup-trace.js";
import type { VcpuWorkerPrestart, VcpuWorkerStart } from "./worker-pool.js";

export type { VcpuWorkerData } from "./vcpu-loop.js";

/** When this worker's modules were loaded (its body starts). */
const modulesLoadedAt = absoluteNow();

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

/**
 * Waits for the vCPU while the main thread runs it in the early window (vmm.ts): says it is
 * ready and kicks the vCPU out of the main thread's KVM_RUN, then waits until the main
 * thread has handed it over. False if the run ended in the window (do not run it).
 */
function takeOver(data: VcpuWorkerData): boolean {
  if (data.handover === undefined) return true;
  const cell = new Int32Array(data.handover);
  if (Atomics.compareExchange(cell, 0, EarlyHandover.Window, EarlyHandover.Ready) === EarlyHandover.Window) {
    // immediate_exit + the kick signal to the thread in the tid cell (the main thread's, or
    // none yet: then its first KVM_RUN returns at once).
    new VcpuKicker(data.vcpu).kick();
    while (Atomics.load(cell, 0) === EarlyHandover.Ready) Atomics.wait(cell, 0, EarlyHandover.Ready);
  }
  return Atomics.load(cell, 0) !== EarlyHandover.Ended;
}

/** Tells a main thread that waits for this worker in the early window that it never will be ready. */
function giveUpWindow(data: VcpuWorkerData): void {
  if (data.handover === undefined) return;
  if (Atomics.compareExchange(new Int32Array(data.handover), 0, EarlyHandover.Window, EarlyHandover.Failed) === EarlyHandover.Window) {
    try {
      new VcpuKicker(data.vcpu).kick();
    } catch {
      // nothing more to do: the main thread leaves at the window's bound (its own timer)
    }
  }
}

function main(port: NonNullable<typeof parentPort>, data: VcpuWorkerData): void {
  let vcpu: VcpuFd;
  let loop: VcpuLoop;
  const stop = new Int32Array(data.stop);
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
  try {
    vcpu = VcpuFd.fromTransferable(data.vcpu);
    const ring = new SerialOutputRing(data.serialOut, true);
    const wake = (): void => port.postMessage({ type: "serialWake" } satisfies VcpuWorkerMessage);
    const windows = data.mmioWindows ?? [];
    const mb = data.mmioMailbox && windows.length > 0 ? new MmioMailboxClient(data.mmioMailbox, stop, data.mailboxSpinMs) : undefined;
    loop = new VcpuLoop(vcpu, data, {
      // Flow control: waits while the ring is full (the vCPU pauses), unless the VM is stopping.
      output: (out, length) => ring.write(out, length, stopping, wake),
      rxSpace: () => port.postMessage({ type: "rxSpace" } satisfies VcpuWorkerMessage),
      mmio: mb ? (address, write, bytes) => void mb.call(address, write, bytes) : (_a, write, bytes) => { if (!write) bytes.fill(0xff); },
      ...(mb ? { mailboxTimeouts: () => mb.timeouts } : {}),
      interrupted: () => (stopping() || (Atomics.load(control, 0) === 1 && !park()) ? IntrAction.Stop : IntrAction.Run),
    }, true);
  } catch (e) {
    giveUpWindow(data);
    throw e;
  }

  if (TRACE_STARTUP) {
    mark("worker modules loaded", modulesLoadedAt);
    if (data.handover !== undefined) mark("ready, kicking the main thread's early window");
  }
  const take = takeOver(data);
  if (TRACE_STARTUP) {
    mark(take ? "first KVM_RUN" : "the run ended in the early window");
    port.postMessage({ type: "trace", marks: startupMarks() } satisfies VcpuWorkerMessage);
  }
  if (!take) {
    vcpu.close();
    return;
  }
  port.postMessage({ type: "running", at: absoluteNow() } satisfies VcpuWorkerMessage);
  const end = loop.run() ?? { reason: "Error" as const, guestExitValue: null, detail: `vCPU ${data.vcpu.id}: the loop left without an end` };
  const state = loop.endState();
  // Leaving KVM_RUN for good: closing the borrowed vCPU clears the kick target,
  // so no later kick() can signal this thread's id after the worker is gone.
  vcpu.close();
  port.postMessage({ type: "stopped", result: { ...end, exits: state.exits, vcpus: [state] } satisfies RunResult } satisfies VcpuWorkerMessage);
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
