import type { SnapshotPool } from "./pool/snapshot-pool.js";

/** Why a {@link VmmError} was thrown. */
export type VmmErrorCode =
  /** A configuration value is missing, of the wrong type or out of range. */
  | "InvalidConfig"
  /** A file named in the configuration could not be read. */
  | "FileNotReadable"
  /** A file the VMM writes (the metrics file) could not be opened or written. */
  | "FileNotWritable"
  /** Building the VM failed in a lower layer (KVM, guest memory, the loader); see `cause`. */
  | "SetupFailed"
  /** The CPU template or a `+feature` switch asks for something this host's KVM cannot provide. */
  | "CpuFeatureRefused"
  /** The guest memory backend asked for needs what this host lacks (a KVM capability, free huge pages, a THP mode); the message names it. */
  | "MemoryBackendRefused"
  /** /dev/kvm cannot be opened by this user (EACCES/EPERM). */
  | "KvmPermissionDenied"
  /** The VM was used after close(), or started twice; or a call that needs another run state (pause while not running, snapshot while not paused). */
  | "InvalidState"
  /** A snapshot file (or its memory file) is corrupted, truncated, of another format version, or for a CPU this host's KVM cannot give; nothing was run. */
  | "SnapshotInvalid"
  /** Reserved for VM state a snapshot cannot save; nothing raises it today (every device kind of the reference VMM can be paused, saved and restored). */
  | "SnapshotUnsupported"
  /** Taking a snapshot failed in KVM or on the file system; see `cause`. */
  | "SnapshotFailed"
  /** A {@link SnapshotPool} already has its limit of VMs handed out and running. */
  | "PoolFull"
  /** No VM of a {@link SnapshotPool} has that id (never had, or it ended). */
  | "UnknownVm";

/** The reference VMM's error. Errors of the lower packages are wrapped as `cause`. */
export class VmmError extends Error {
  override readonly name = "VmmError";
  readonly code: VmmErrorCode;

  constructor(code: VmmErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
