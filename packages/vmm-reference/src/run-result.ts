/** How a VM run ended. */
export type StopReason =
  /** The guest wrote the debug-exit port; `guestExitValue` holds the value. */
  | "DebugExit"
  /** The guest triple-faulted or asked for a reset. */
  | "Shutdown"
  /** A SystemEvent exit: the guest powered off or reset through firmware interfaces. */
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
  /** Human-readable detail for Shutdown, SystemEvent and Error. */
  readonly detail?: string;
  /** Exits handled in user space, by kind. */
  readonly exits: Readonly<Record<string, number>>;
}
