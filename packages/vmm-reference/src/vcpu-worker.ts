// Entry point of a vCPU's worker thread: runs KVM_RUN in a loop and serves the
// exits that need user space. Port I/O devices live here (the serial port and
// the debug-exit port), so a PIO exit costs no thread hop; serial output is
// batched to the main thread.
import { parentPort, workerData } from "node:worker_threads";
import { VcpuFd, type VcpuExit, type VcpuTransferable } from "@ts-vmm/kvm-ioctls";
import { DEBUG_EXIT_PORT, DebugExit } from "./devices/debug-exit.js";
import { MmioMailboxClient } from "./devices/mmio-mailbox.js";
import { PioBus } from "./devices/pio-bus.js";
import { Serial8250 } from "./devices/serial.js";
import type { RunResult } from "./run-result.js";

/** What the main thread sends a vCPU worker at start. */
export interface VcpuWorkerData {
  readonly vcpu: VcpuTransferable;
  /** Int32 cell: non-zero asks the worker to stop at its next Intr exit. */
  readonly stop: SharedArrayBuffer;
  /** Int32 cell: serial bytes posted and not yet consumed by the main thread (it subtracts and notifies). */
  readonly serialPending: SharedArrayBuffer;
  /** Most serial bytes in flight before the worker waits for the main thread. */
  readonly serialBacklog: number;
  /** MMIO exits inside `mmioWindows` go to the main thread through this mailbox. */
  readonly mmioMailbox?: SharedArrayBuffer;
  /** `[start, end)` guest ranges served by the main thread (virtio-mmio windows). */
  readonly mmioWindows?: readonly (readonly [number, number])[];
}

/** Messages from a vCPU worker. */
export type VcpuWorkerMessage =
  | { readonly type: "serial"; readonly bytes: Uint8Array }
  | { readonly type: "stopped"; readonly result: RunResult };

const COM1 = 0x3f8;

function main(port: NonNullable<typeof parentPort>, data: VcpuWorkerData): void {
  const vcpu = VcpuFd.fromTransferable(data.vcpu);
  const stop = new Int32Array(data.stop);
  const exits: Record<string, number> = {};
  let out: number[] = [];
  const pending = new Int32Array(data.serialPending);
  const flush = (): void => {
    if (out.length === 0) return;
    // Flow control: wait while the main thread has a backlog, unless asked to stop
    // (then post anyway: the run ends at the next KVM_RUN).
    for (;;) {
      const p = Atomics.load(pending, 0);
      if (p + out.length <= data.serialBacklog || p === 0 || Atomics.load(stop, 0) !== 0) break;
      Atomics.wait(pending, 0, p, 50);
    }
    Atomics.add(pending, 0, out.length);
    port.postMessage({ type: "serial", bytes: Uint8Array.from(out) } satisfies VcpuWorkerMessage);
    out = [];
  };
  let debugValue: number | null = null;
  const windows = data.mmioWindows ?? [];
  const mailbox = data.mmioMailbox && windows.length > 0 ? new MmioMailboxClient(data.mmioMailbox, stop) : undefined;
  const forwarded = (addr: number): boolean => {
    for (const [s, e] of windows) if (addr >= s && addr < e) return true;
    return false;
  };
  const bus = new PioBus();
  bus.insert(COM1, 8, new Serial8250((b) => {
    out.push(b);
    if (b === 0x0a || out.length >= 1024) flush();
  }));
  bus.insert(DEBUG_EXIT_PORT, 4, new DebugExit((v) => { debugValue = v; }));

  const finish = (r: Omit<RunResult, "exits">): void => {
    flush();
    // Leaving KVM_RUN for good: closing the borrowed vCPU clears the kick target,
    // so no later kick() can signal this thread's id after the worker is gone.
    vcpu.close();
    port.postMessage({ type: "stopped", result: { ...r, exits } } satisfies VcpuWorkerMessage);
  };

  for (;;) {
    let exit: VcpuExit;
    try {
      exit = vcpu.run();
    } catch (e) {
      finish({ reason: "Error", guestExitValue: null, detail: `KVM_RUN failed: ${(e as Error).message}` });
      return;
    }
    exits[exit.kind] = (exits[exit.kind] ?? 0) + 1;
    switch (exit.kind) {
      case "IoOut":
      case "IoIn": {
        const { port: p, size, count, data: bytes } = exit;
        for (let i = 0; i < count; i++) {
          const chunk = bytes.subarray(i * size, (i + 1) * size);
          if (exit.kind === "IoOut") bus.write(p, chunk);
          else bus.read(p, chunk);
        }
        if (debugValue !== null) {
          finish({ reason: "DebugExit", guestExitValue: debugValue });
          return;
        }
        break;
      }
      case "MmioRead":
        if (mailbox && forwarded(exit.address)) mailbox.call(exit.address, false, exit.data.subarray(0, exit.len));
        else exit.data.fill(0xff); // nothing there: the bus floats high
        break;
      case "MmioWrite":
        if (mailbox && forwarded(exit.address)) mailbox.call(exit.address, true, exit.data.subarray(0, exit.len));
        break;
      case "Intr":
        if (Atomics.load(stop, 0) !== 0) {
          finish({ reason: "Stopped", guestExitValue: null });
          return;
        }
        break;
      case "Shutdown":
        finish({ reason: "Shutdown", guestExitValue: null, detail: "the guest shut down (triple fault or reset)" });
        return;
      case "SystemEvent":
        finish({ reason: "SystemEvent", guestExitValue: null, detail: `system event type ${exit.type}` });
        return;
      case "InternalError":
        finish({ reason: "Error", guestExitValue: null, detail: `KVM internal error, suberror ${exit.suberror}, data [${exit.data.map((d) => "0x" + d.toString(16)).join(", ")}]` });
        return;
      case "FailEntry":
        finish({ reason: "Error", guestExitValue: null, detail: `VM entry failed, hardware reason 0x${exit.hardwareEntryFailureReason.toString(16)}` });
        return;
      default:
        finish({ reason: "Error", guestExitValue: null, detail: `unhandled exit ${JSON.stringify(exit, (_k, v: unknown) => (typeof v === "bigint" ? `0x${v.toString(16)}` : v))}` });
        return;
    }
  }
}

if (parentPort) main(parentPort, workerData as VcpuWorkerData);
