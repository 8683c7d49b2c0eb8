import type { VcpuExit } from "@ts-vmm/kvm-ioctls";
import type { RunResult } from "../run-result.js";

/** KVM_INTERNAL_ERROR_* suberrors (include/uapi/linux/kvm.h). */
const INTERNAL_ERRORS: Readonly<Record<number, string>> = {
  1: "emulation failure",
  2: "simultaneous exceptions",
  3: "event delivery failed",
  4: "unexpected exit reason",
};
/** KVM_SYSTEM_EVENT_* types. */
const SYSTEM_EVENT_SHUTDOWN = 1, SYSTEM_EVENT_RESET = 2, SYSTEM_EVENT_CRASH = 3;

const hex = (v: number | bigint): string => `0x${v.toString(16)}`;

/**
 * The end of a run for an exit that ends it (triple fault, system event,
 * internal error, failed entry, anything unexpected), with a one-line reason
 * that names the vCPU and, where it helps, the guest RIP: "vCPU 0: KVM
 * emulation failure at RIP 0xffffffff81000000 (suberror 1, …)". Returns
 * undefined for exits the vCPU loop handles and continues after (I/O, MMIO,
 * Intr). A pure function: `rip` is asked for only when the text needs it.
 */
export function terminalExit(vcpuId: number, exit: VcpuExit, rip: () => string): Omit<RunResult, "exits"> | undefined {
  const at = `vCPU ${vcpuId}:`;
  switch (exit.kind) {
    case "IoOut":
    case "IoIn":
    case "MmioRead":
    case "MmioWrite":
    case "Intr":
      return undefined;
    case "Shutdown": {
      // On AMD, KVM resets the vCPU before it reports the shutdown, so RIP reads as the
      // reset vector: say so rather than name it as where the fault happened.
      const r = rip();
      const where = r === "0xfff0" ? `(RIP reads ${r}: KVM reset the vCPU before reporting it, as it does on AMD)` : `at RIP ${r}`;
      return { reason: "Shutdown", guestExitValue: null, detail: `${at} triple fault (KVM_EXIT_SHUTDOWN) ${where}` };
    }
    case "SystemEvent":
      if (exit.type === SYSTEM_EVENT_SHUTDOWN) return { reason: "PowerOff", guestExitValue: null, detail: `${at} KVM system event shutdown` };
      if (exit.type === SYSTEM_EVENT_RESET) return { reason: "Reset", guestExitValue: null, detail: `${at} KVM system event reset` };
      return { reason: "SystemEvent", guestExitValue: null, detail: `${at} KVM system event ${exit.type === SYSTEM_EVENT_CRASH ? "crash" : `type ${exit.type}`}` };
    case "InternalError": {
      const what = INTERNAL_ERRORS[exit.suberror] ?? `internal error suberror ${exit.suberror}`;
      return { reason: "Error", guestExitValue: null, detail: `${at} KVM ${what} at RIP ${rip()} (suberror ${exit.suberror}, data [${exit.data.map(hex).join(", ")}])` };
    }
    case "FailEntry":
      return { reason: "Error", guestExitValue: null, detail: `${at} VM entry failed at RIP ${rip()}, hardware reason ${hex(exit.hardwareEntryFailureReason)}` };
    default:
      return { reason: "Error", guestExitValue: null, detail: `${at} unhandled exit ${JSON.stringify(exit, (_k, v: unknown) => (typeof v === "bigint" ? hex(v) : v))} at RIP ${rip()}` };
  }
}
