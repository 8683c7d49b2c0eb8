/** How a VM run ended. */
export type StopReason =
  /** The guest wrote the debug-exit port; `guestExitValue` holds the value. */
  | "DebugExit"
  /** The guest powered off: ACPI S5 (SLP_EN with SLP_TYP 5), or a KVM system event of type shutdown. */
  | "PowerOff"
  /** The guest asked for a reset (ACPI reset register, i8042 0xFE, a KVM reset event). The VMM does not reboot. */
  | "Reset"
  /** The guest triple-faulted (KVM_EXIT_SHUTDOWN); `detail` has the vCPU and RIP. */
  | "Shutdown"
  /** Another KVM system event (crash, …); see `detail`. */
  | "SystemEvent"
  /** KVM could not run the guest (FailEntry, InternalError, an unexpected exit or ioctl error); see `detail`. */
  | "Error"
  /** The VMM stopped the VM (stop() or a timeout). */
  | "Stopped";

/** The outcome of {@link Vmm.run}. */
export interface RunResult {
  readonly reason: StopReason;
  /** The value written to the debug-exit port, or null. */
  readonly guestExitValue: number | null;
  /** Human-readable detail for Shutdown, SystemEvent, Reset and Error (which vCPU, what happened, at which RIP). */
  readonly detail?: string;
  /** Exits handled in user space, by kind, summed over all vCPUs. */
  readonly exits: Readonly<Record<string, number>>;
  /**
   * Where each vCPU was when it left KVM_RUN for good, by vCPU id (what a
   * stopped or hung guest was doing). Absent for a vCPU whose worker failed.
   */
  readonly vcpus?: readonly VcpuEndState[];
}

/** A vCPU's state when its run loop ended. */
export interface VcpuEndState {
  /** The vCPU id (= APIC id). */
  readonly id: number;
  /** RIP, RFLAGS and CR0 as hex strings, or "unknown" if KVM could not read them. */
  readonly rip: string;
  readonly rflags: string;
  readonly cr0: string;
  /** KVM_GET_MP_STATE (0 runnable, 1 uninitialized, 2 init received, 3 halted, 4 SIPI received), or null. */
  readonly mpState: number | null;
  /** Exits handled in user space by this vCPU, by kind. */
  readonly exits: Readonly<Record<string, number>>;
}
