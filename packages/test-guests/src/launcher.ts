/**
 * The seam between the harness and a VMM. QEMU implements it in qemu.ts; the
 * ts-vmm reference VMM implements it when it can boot a PVH ELF. The harness
 * owns everything around the launch: building the guest, backing files, the
 * console echo socket, serial capture, timeouts, killing and clean-up.
 */

/** Kinds of virtio-mmio devices the micro-guest drives. */import type { SnapshotLauncher } from "./nested-snapshot.js";

export type DeviceKind = "blk" | "net" | "console" | "rng" | "vsock" | "balloon" | "rtc";

/** Every device kind, in the order the selftest visits them. */
export const DEVICE_KINDS: readonly DeviceKind[] = ["blk", "rng", "console", "net", "vsock", "balloon", "rtc"];

/** A device requested by a test. */
export type DeviceSpec =
  /** virtio-blk backed by a raw file (read-write unless readOnly). */
  | { readonly kind: "blk"; readonly path: string; readonly readOnly?: boolean }
  /** virtio-net: user-mode networking (answers ARP for 10.0.2.2) unless a tap is named. */
  | { readonly kind: "net"; readonly tap?: string }
  /** virtio-console port 0; the harness echoes back what the guest writes. */
  | { readonly kind: "console" }
  | { readonly kind: "rng" }
  /**
   * virtio-vsock with this guest CID (>= 3). `udsPath`: the Unix socket of
   * the Firecracker convention (host connects there; guest connections to
   * port P go to `<udsPath>_P`) for VMMs that use it; the harness picks a
   * temporary one when it is not given. QEMU's vhost-vsock ignores it.
   */
  | { readonly kind: "vsock"; readonly cid: number; readonly udsPath?: string }
  /**
   * virtio-balloon. `amountMiB`: the balloon's size (what the guest gives
   * back) for a VMM that takes it at start (ts-vmm's `--balloon amount_mib=`);
   * QEMU has no start-time target, and the nested tier sets it through QMP
   * (see `NestedPeers.balloon`).
   */
  | { readonly kind: "balloon"; readonly amountMiB?: number }
  | { readonly kind: "rtc" };

/** A device after the harness prepared its host side. */
export type ResolvedDevice =
  | Exclude<DeviceSpec, { kind: "console" } | { kind: "vsock" }>
  /** The VMM connects to this Unix socket as a client; the harness echoes every byte. */
  | { readonly kind: "console"; readonly socketPath: string }
  /** vsock with its Unix socket path always set (absolute). */
  | { readonly kind: "vsock"; readonly cid: number; readonly udsPath: string };

/** Everything a VMM needs to start the guest. All paths are absolute. */
export interface LaunchSpec {
  /** PVH ELF (the micro-guest, vmlinux) or bzImage. */
  readonly kernel: string;
  /** Initial ramdisk, for Linux guests. */
  readonly initrd?: string;
  /** Guest command line, without `virtio_mmio.device=` entries: the VMM appends those. */
  readonly cmdline: string;
  /** Guest RAM in MiB (validated: 2..65536). */
  readonly memMiB: number;
  /** Number of vCPUs (validated: 1..64). */
  readonly vcpus: number;
  /** Devices in the order the caller listed them, host sides prepared. */
  readonly devices: readonly ResolvedDevice[];
  /** Extra VMM-specific arguments from the caller, appended last. */
  readonly extraArgs: readonly string[];
}

/**
 * How to start a VMM as a child process. The guest's 8250 serial output
 * (port 0x3f8) must appear raw on the process's stdout; diagnostics go to
 * stderr. The VMM must serve the debug-exit port 0xf4 (32-bit writes) by
 * ending the run with that value as the guest's exit value.
 */
export interface ProcessPlan {
  readonly kind: "process";
  /** Program to run (looked up on PATH). */
  readonly file: string;
  readonly args: readonly string[];
  /** Variables added to the harness's environment. */
  readonly env?: Readonly<Record<string, string>>;
  /**
   * Maps the process's exit to the value the guest wrote to port 0xf4, or
   * null if the status cannot be one (crash, timeout, power-off). This is
   * the VMM's side only: the harness counts a guest exit only when the
   * guest's own `RESULT exit=<v>` line agrees (see `GuestRun.guestExit`),
   * because a VMM that fails on its own may exit with a status that decodes
   * as a guest value (exit status 1 as "the guest wrote 0").
   */
  guestExitValue(code: number | null, signal: NodeJS.Signals | null): number | null;
  /**
   * How many low bits of the guest's value survive in the exit status
   * (7 for `(value << 1) | 1` in an 8-bit status). Default 32.
   */
  readonly exitValueBits?: number;
}

/** Receives guest output from an in-process VMM. */
export interface GuestIo {
  /** Bytes the guest wrote to the serial port. */
  serial(bytes: Uint8Array): void;
}

/** A VM started in-process. */
export interface RunningVm {
  /**
   * Settles when the VM stops: the debug-exit value, or null (and why). As
   * for a process, the harness counts it only when the guest's own
   * `RESULT exit=<v>` line agrees.
   */
  readonly exited: Promise<{ readonly guestExitValue: number | null; readonly detail?: string }>;
  /**
   * Stops the VM (timeout or early stop); must be safe to call more than once.
   * The harness waits for it (and then for `exited`) at most
   * `RunGuestOptions.stopTimeoutMs` and reports one that does not settle.
   */
  stop(): Promise<void>;
}

/** How to start a VMM inside the test process (for example a ts-vmm Vmm object). */
export interface InProcessPlan {
  readonly kind: "in-process";
  /** Creates and starts the VM; guest serial output goes to `io`. */
  start(io: GuestIo): RunningVm | Promise<RunningVm>;
}

/** The launch plan a {@link VmmLauncher} returns. */
export type LaunchPlan = ProcessPlan | InProcessPlan;

/**
 * The interface a VMM implements to run under the harness. QEMU's
 * implementation is {@link qemuLauncher}; ts-vmm's reference VMM provides its
 * own (`vmm-reference` exports one once it can boot a PVH ELF).
 */
export interface VmmLauncher {
  /** Short name used in reports and benchmark keys ("qemu", "ours"). */
  readonly name: string;
  /**
   * Device kinds this VMM can attach; the selftest expects SKIP for the rest,
   * and benchmarks report the figures of the rest as "not provided" (an
   * explicit null with that reason), never as a measurement.
   */
  readonly provides: readonly DeviceKind[];
  /**
   * Builds the launch for one run. Called after the harness resolved the
   * devices; must not start anything that outlives the returned plan.
   */
  plan(spec: LaunchSpec): LaunchPlan | Promise<LaunchPlan>;
  /** For a VMM that can snapshot a running guest and continue it in a new process (the nested harness's `NestedGuest.snapshot`). */
  readonly snapshot?: SnapshotLauncher;
}
