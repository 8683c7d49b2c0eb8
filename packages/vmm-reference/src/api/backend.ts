// The seam between the API (routing, validation, the pre-boot configuration)
// and what runs the VM. vmm-backend.ts implements it for Vmm; the router's
// unit tests implement it with a fake.
import type { TokenBucketConfig } from "@ts-vmm/virtio-devices";
import type { VmConfig } from "../vmm.js";

/**
 * A refusal the API answers with `400` and `{"fault_message": message}` (or
 * another status). Backends throw it for a request the VM cannot honour.
 */
export class ApiFault extends Error {
  override readonly name = "ApiFault";
  /** The HTTP status (400 unless said otherwise). */
  readonly status: number;

  constructor(message: string, status = 400) {
    super(message);
    this.status = status;
  }
}

/** Firecracker's message for a pre-boot-only request after the start. */
export const POST_BOOT_MESSAGE = "The requested operation is not supported after starting the microVM.";
/** Firecracker's message for a runtime request before the start. */
export const PRE_BOOT_MESSAGE = "The requested operation is not supported before starting the microVM.";
/** The start of the message for something Firecracker defines and this VMM does not do. */
export const NOT_SUPPORTED_PREFIX = "The requested operation is not supported: ";

/** What InstanceStart hands the backend. */
export interface ApiStartOptions {
  /** The VM to build, from the pre-boot configuration. */
  readonly config: VmConfig;
  /** `machine-config.track_dirty_pages`. */
  readonly trackDirtyPages: boolean;
  /** `PUT /metrics`'s `metrics_path`, if one was given. */
  readonly metricsPath?: string | undefined;
}

/** What `PUT /snapshot/load` hands the backend. */
export interface ApiLoadOptions {
  readonly snapshotPath: string;
  readonly memFilePath: string;
  readonly enableDiffSnapshots: boolean;
  /** Resume the VM once loaded (else it stays Paused). */
  readonly resumeVm: boolean;
  /** `PUT /metrics`'s `metrics_path`, if one was given. */
  readonly metricsPath?: string | undefined;
}

/** What `PUT /snapshot/create` hands the backend. */
export interface ApiSnapshotOptions {
  readonly snapshotPath: string;
  readonly memFilePath: string;
  readonly type: "Full" | "Diff";
}

/** The balloon as `GET /balloon/statistics` reports it. */
export interface ApiBalloonStatus {
  readonly targetMib: number;
  readonly actualMib: number;
  /** The driver's latest statistics by Firecracker's names (`swap_in`, `free_memory`, …), if it sent any. */
  readonly stats?: Readonly<Record<string, number>> | undefined;
}

/** New buckets for a rate limiter: a bucket to set, `null` to remove it, absent to leave it. */
export interface ApiLimiterUpdate {
  readonly bandwidth?: TokenBucketConfig | null;
  readonly ops?: TokenBucketConfig | null;
}

/** A rate-limiter update of `PATCH /drives/{id}` or `PATCH /network-interfaces/{id}` (absent: leave it). */
export type ApiRateLimiterUpdate =
  | { readonly kind: "blk"; readonly rateLimiter: ApiLimiterUpdate }
  | { readonly kind: "net"; readonly rx?: ApiLimiterUpdate; readonly tx?: ApiLimiterUpdate };

/** The VM's state as the API reports it (`GET /`). */
export type ApiVmState = "NotStarted" | "Running" | "Paused" | "Stopped";

/**
 * What the API server calls once the VM exists (InstanceStart or
 * snapshot/load) and for everything after. Methods throw {@link ApiFault}
 * for a request the VM cannot honour (any other error is answered with 400
 * and its message).
 */
export interface ApiBackend {
  /** The VM's state (the router keeps its own until the first start or load). */
  readonly state: ApiVmState;
  /** Builds and starts the VM (InstanceStart). */
  start(opts: ApiStartOptions): Promise<void>;
  /** Loads a snapshot into a new VM (pre-boot only). */
  load(opts: ApiLoadOptions): Promise<void>;
  /** Parks every vCPU; resolves once they are parked. */
  pause(): Promise<void>;
  /** Continues every vCPU where it stopped. */
  resume(): Promise<void>;
  /** Writes a snapshot of the paused VM. */
  snapshot(opts: ApiSnapshotOptions): Promise<void>;
  /** Injects Ctrl-Alt-Del on the i8042. */
  sendCtrlAltDel(): void;
  /** Sets the balloon's target (MiB). */
  setBalloonTarget(amountMib: number): void;
  /** Sets the balloon statistics interval (seconds; the device must have been created with statistics). */
  setBalloonStatsInterval(seconds: number): void;
  /** The balloon's state, or undefined without one. */
  balloonStatus(): ApiBalloonStatus | undefined;
  /** Updates a device's rate limiters; `index` is the device's place in `VmConfig.virtio`. */
  updateRateLimiters(index: number, update: ApiRateLimiterUpdate): void;
  /** The VM's counters as plain JSON (`GET /metrics`). */
  metrics(): unknown;
  /** Writes the counters to the metrics file now (`FlushMetrics`). */
  flushMetrics(): void;
  /**
   * The CPU feature report (`GET /cpu-features`, as `ts-vmm cpu-features
   * --json`) for a VM with this template, switches and vCPU count.
   */
  cpuFeatures(opts: { readonly template?: string | undefined; readonly switches?: string | undefined; readonly vcpus: number }): unknown;
}
