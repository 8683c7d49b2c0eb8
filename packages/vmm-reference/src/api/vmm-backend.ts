// ApiBackend for the reference Vmm: create/restore, run, pause/resume,
// snapshots, Ctrl-Alt-Del, the balloon, the devices' rate limiters, metrics
// and the CPU feature report, each a call on Vmm.
import { RateLimiter, VirtioBlock, VirtioNet } from "@ts-vmm/virtio-devices";
import { liveCpuFeatureReport } from "../cpu/command.js";
import { Vmm } from "../vmm.js";
import {
  ApiFault,
  NOT_SUPPORTED_PREFIX,
  type ApiBackend,
  type ApiBalloonStatus,
  type ApiLimiterUpdate,
  type ApiLoadOptions,
  type ApiRateLimiterUpdate,
  type ApiSnapshotOptions,
  type ApiStartOptions,
  type ApiVmState,
} from "./backend.js";

/** Writes the VM's counters to `PUT /metrics`'s file (the metrics work's MetricsWriter). */
export interface ApiMetricsSink {
  /** Appends one JSON line now. */
  flush(): void;
  /** Stops the periodic flush and closes the file. */
  close(): void;
}

/** Options of {@link VmmBackend}. */
export interface VmmBackendOptions {
  /**
   * Runs a VM the backend created (InstanceStart) or restored: the CLI
   * passes its run loop (serial output, stdin, signals, exit status). The
   * promise settles when the guest or the VMM ends the run.
   */
  readonly run: (vmm: Vmm) => Promise<unknown>;
  /**
   * Makes the writer of `PUT /metrics` (the CLI passes a MetricsWriter from
   * src/metrics/writer.ts); without it a metrics path is refused at
   * InstanceStart.
   */
  readonly metricsSink?: (path: string, vmm: Vmm) => ApiMetricsSink;
}

const unsupported = (what: string): ApiFault => new ApiFault(`${NOT_SUPPORTED_PREFIX}${what} is not supported by this build.`);

/** {@link ApiBackend} on the reference {@link Vmm}. */
export class VmmBackend implements ApiBackend {
  readonly #opts: VmmBackendOptions;
  #vmm: Vmm | undefined;
  /** Loaded from a snapshot and not resumed yet: run() not called. */
  #loadedPaused = false;
  #ended = false;
  #sink: ApiMetricsSink | undefined;

  constructor(opts: VmmBackendOptions) {
    this.#opts = opts;
  }

  /**
   * Takes a VM started without the API (`ts-vmm run --api-sock`): `done`
   * settles when its run ends.
   * @throws {@link ApiFault} if the backend already has a VM.
   */
  adopt(vmm: Vmm, done: Promise<unknown>): void {
    if (this.#vmm !== undefined) throw new ApiFault("The microVM is already running.");
    this.#track(vmm, done);
  }

  /** The Vmm, once started or loaded. */
  get vmm(): Vmm | undefined {
    return this.#vmm;
  }

  get state(): ApiVmState {
    if (this.#vmm === undefined) return "NotStarted";
    if (this.#ended) return "Stopped";
    if (this.#loadedPaused) return "Paused";
    const s = this.#vmm.state;
    return s === "NotStarted" ? "Running" : s;
  }

  #track(vmm: Vmm, done: Promise<unknown>): void {
    this.#vmm = vmm;
    const end = (): void => {
      this.#ended = true;
      this.#sink?.close();
    };
    done.then(end, end);
  }

  #running(): Vmm {
    const v = this.#vmm;
    if (v === undefined || this.#ended) throw new ApiFault("The microVM is not running.");
    return v;
  }

  #openSink(path: string | undefined, vmm: Vmm): void {
    if (path === undefined) return;
    const make = this.#opts.metricsSink;
    if (make === undefined) throw unsupported("PUT /metrics (a metrics file)");
    this.#sink = make(path, vmm);
  }

  start(opts: ApiStartOptions): Promise<void> {
    if (opts.metricsPath !== undefined && this.#opts.metricsSink === undefined) return Promise.reject(unsupported("PUT /metrics (a metrics file)"));
    // track_dirty_pages: dirty logging from the start, so that Diff snapshots can be taken.
    const vmm = Vmm.create(opts.trackDirtyPages ? { ...opts.config, enableDiffSnapshots: true } : opts.config);
    try {
      this.#openSink(opts.metricsPath, vmm);
    } catch (e) {
      vmm.close();
      throw e;
    }
    this.#track(vmm, this.#opts.run(vmm));
    return Promise.resolve();
  }

  load(opts: ApiLoadOptions): Promise<void> {
    if (opts.metricsPath !== undefined && this.#opts.metricsSink === undefined) return Promise.reject(unsupported("PUT /metrics (a metrics file)"));
    const vmm = Vmm.restore({ snapshotPath: opts.snapshotPath, memFilePath: opts.memFilePath, enableDiffSnapshots: opts.enableDiffSnapshots });
    try {
      this.#openSink(opts.metricsPath, vmm);
    } catch (e) {
      vmm.close();
      throw e;
    }
    if (opts.resumeVm) this.#track(vmm, this.#opts.run(vmm));
    else {
      this.#vmm = vmm;
      this.#loadedPaused = true;
    }
    return Promise.resolve();
  }

  async pause(): Promise<void> {
    const v = this.#running();
    if (this.#loadedPaused) return;
    await v.pause();
  }

  resume(): Promise<void> {
    const v = this.#running();
    if (this.#loadedPaused) {
      // A snapshot loaded without resume_vm: its run starts now.
      this.#loadedPaused = false;
      this.#track(v, this.#opts.run(v));
      return Promise.resolve();
    }
    v.resume();
    return Promise.resolve();
  }

  async snapshot(opts: ApiSnapshotOptions): Promise<void> {
    const v = this.#running();
    await v.snapshot({ snapshotPath: opts.snapshotPath, memFilePath: opts.memFilePath, type: opts.type });
  }

  sendCtrlAltDel(): void {
    if (!this.#running().sendCtrlAltDel()) {
      throw new ApiFault("Internal Vmm error: the guest's i8042 did not take Ctrl-Alt-Del (its keyboard is disabled or its output queue is full).");
    }
  }

  setBalloonTarget(amountMib: number): void {
    this.#running().setBalloonTarget(amountMib);
  }

  setBalloonStatsInterval(seconds: number): void {
    const b = this.#running().virtio.balloon;
    if (b === undefined) throw new ApiFault("No balloon device found.");
    b.setStatsInterval(seconds);
  }

  balloonStatus(): ApiBalloonStatus | undefined {
    const s = this.#vmm?.balloonStatus();
    if (s === undefined) return undefined;
    // u64 values as JSON numbers (exact up to 2^53; a guest reporting more is rounded).
    const stats = s.stats === undefined ? undefined : Object.fromEntries(Object.entries(s.stats.values).map(([k, v]) => [k, Number(v)]));
    return { targetMib: s.targetMib, actualMib: s.actualMib, ...(stats ? { stats } : {}) };
  }

  updateRateLimiters(index: number, update: ApiRateLimiterUpdate): void {
    const device = this.#running().virtio.transports[index]?.device;
    const apply = (what: string, limiter: RateLimiter | undefined, u: ApiLimiterUpdate | undefined): void => {
      if (u === undefined || (u.bandwidth === undefined && u.ops === undefined)) return;
      if (limiter === undefined) throw new ApiFault(`${what} was created without a rate limiter; give one before the start to change it later.`);
      limiter.update(u);
    };
    if (update.kind === "blk") {
      if (!(device instanceof VirtioBlock)) throw new ApiFault("Invalid block device ID.");
      apply("The drive", device.rateLimiter, update.rateLimiter);
    } else {
      if (!(device instanceof VirtioNet)) throw new ApiFault("Invalid network interface ID.");
      apply("The interface's receive side", device.rxRateLimiter, update.rx);
      apply("The interface's transmit side", device.txRateLimiter, update.tx);
    }
  }

  metrics(): unknown {
    const v = this.#running();
    return v.metrics();
  }

  flushMetrics(): void {
    this.#running();
    // Firecracker answers 204 when no metrics file was configured: nothing to write.
    this.#sink?.flush();
  }

  cpuFeatures(opts: { readonly template?: string | undefined; readonly switches?: string | undefined; readonly vcpus: number }): unknown {
    return liveCpuFeatureReport({ template: opts.template, switches: opts.switches, vcpus: opts.vcpus });
  }
}
