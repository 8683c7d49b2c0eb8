import { GuestMemoryError, type DiscardableMemory } from "@ts-vmm/vm-memory";
import { VirtqueueError, type DescriptorChain, type Queue } from "@ts-vmm/virtio-queue";
import type { ActivateContext, DeviceState, VirtioDevice } from "../device.js";
import { VirtioDeviceError } from "../errors.js";
import {
  BALLOON_CONFIG_SIZE,
  BALLOON_MAX_STATS_BYTES,
  BALLOON_PAGE_SIZE,
  BALLOON_PFNS_PER_TURN,
  BALLOON_QUEUE_SIZE,
  BALLOON_REPORT_BYTES_PER_TURN,
  BALLOON_STATS_CHAINS_PER_TURN,
  VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
  VIRTIO_BALLOON_F_REPORTING,
  VIRTIO_BALLOON_F_STATS_VQ,
  VIRTIO_ID_BALLOON,
} from "./constants.js";
import { BalloonEventHandler, type BalloonQueueRole } from "./event-handler.js";
import { newBalloonMetrics, type BalloonMetrics } from "./metrics.js";
import { PfnQueue, ReportQueue, type PageSink } from "./pages.js";
import { balloonState, checkBalloonState, type VirtioBalloonState } from "./persist.js";
import { parseStats, type BalloonStats } from "./stats.js";

/** The longest statistics interval: what setInterval can hold (2^31 - 1 ms). */
export const BALLOON_MAX_STATS_INTERVAL_S = (2 ** 31 - 1) / 1000;

/** Options of {@link VirtioBalloon}. */
export interface VirtioBalloonOptions {
  /**
   * Where ballooned and reported pages go back to the host: the guest memory
   * (a `GuestMemoryMmap`). It must be able to discard single 4 KiB pages.
   */
  readonly memory: DiscardableMemory;
  /** Initial target (num_pages) in 4 KiB pages. Default 0: the balloon stays empty. */
  readonly targetPages?: number;
  /** Offer VIRTIO_BALLOON_F_DEFLATE_ON_OOM: the guest may take pages back when it runs out of memory. Default false. */
  readonly deflateOnOom?: boolean;
  /**
   * Offer the statistics queue (VIRTIO_BALLOON_F_STATS_VQ) and ask the driver
   * for statistics every this many seconds (fractions allowed). Default 0: no
   * statistics queue. {@link VirtioBalloon.setStatsInterval} changes it later
   * (only if it was enabled here).
   */
  readonly statsIntervalS?: number;
  /** Offer free page reporting (VIRTIO_BALLOON_F_REPORTING): reported free pages are given back. Default false. */
  readonly freePageReporting?: boolean;
  /** Called with a reason when the device skips guest input or the host refuses a discard (for logs). */
  readonly onViolation?: (reason: string) => void;
}

interface Active {
  readonly ctx: ActivateContext;
  readonly inflate: PfnQueue | undefined;
  readonly deflate: PfnQueue | undefined;
  readonly stats: Queue | undefined;
  readonly reporting: ReportQueue | undefined;
  readonly queues: ReadonlyMap<BalloonQueueRole, Queue>;
  broken: boolean;
}

/**
 * virtio-balloon (§5.5), the traditional memory balloon: the host sets a
 * target (num_pages), the driver inflates by giving 4 KiB pages (PFN arrays on
 * the inflate queue) and deflates by taking them back. Inflated pages and
 * pages the driver reports free (VIRTIO_BALLOON_F_REPORTING) are discarded
 * through the guest memory (`discardRange`), so the host's RSS really drops.
 * The optional statistics queue keeps the driver's latest memory statistics
 * for the VMM ({@link VirtioBalloon.latestStats}).
 *
 * Guest input is hostile: every PFN is checked against guest memory (one
 * outside is skipped and counted), reported ranges too (only whole pages
 * inside a range are discarded), statistics are read once into a bounded
 * copy, and each turn of the event loop handles at most
 * {@link BALLOON_PFNS_PER_TURN} PFNs and 256 MiB of reports before yielding.
 * A broken ring, or a PFN array outside guest memory, sets DEVICE_NEEDS_RESET.
 */
export class VirtioBalloon implements VirtioDevice {
  /** {@inheritDoc VirtioDevice.deviceType} */
  readonly deviceType = VIRTIO_ID_BALLOON;
  /** {@inheritDoc VirtioDevice.queueMaxSizes} */
  readonly queueMaxSizes: readonly number[];
  /** {@inheritDoc VirtioDevice.deviceFeatures} */
  readonly deviceFeatures: bigint;
  /** {@inheritDoc VirtioDevice.configSize} */
  readonly configSize = BALLOON_CONFIG_SIZE;
  /** The device's counters. */
  readonly metrics: BalloonMetrics = newBalloonMetrics();
  readonly #sink: PageSink;
  readonly #onViolation: ((reason: string) => void) | undefined;
  readonly #config: VirtioBalloonState["config"];
  readonly #events: BalloonEventHandler;
  #target: number;
  #actual = 0;
  #statsIntervalS: number;
  #statsHead: number | undefined;
  #stats: BalloonStats | undefined;
  #active: Active | undefined;
  #paused = false;

  /**
   * @param opts - the guest memory to discard through, the target and the features to offer.
   * @throws {@link VirtioDeviceError} `"InvalidArgument"` for a bad option, or
   *   (one sentence) when the memory cannot give back single 4 KiB pages, e.g.
   *   guest memory on 2 MiB huge pages.
   */
  constructor(opts: VirtioBalloonOptions) {
    if (typeof opts !== "object" || opts === null || typeof opts.memory?.discardRange !== "function") {
      throw new VirtioDeviceError("InvalidArgument", "virtio-balloon needs { memory }: guest memory that can discard pages (GuestMemoryMmap)");
    }
    let granularity: number;
    try {
      granularity = opts.memory.discardGranularity();
    } catch (e) {
      throw new VirtioDeviceError("InvalidArgument", `virtio-balloon cannot give guest memory back to the host: ${(e as Error).message}`, { cause: e });
    }
    if (granularity !== BALLOON_PAGE_SIZE) {
      throw new VirtioDeviceError(
        "InvalidArgument",
        `virtio-balloon gives memory back in 4 KiB pages, but this guest memory can only be discarded in ${granularity / 1024} KiB huge pages: back guest memory with 4 KiB pages to use a balloon`,
      );
    }
    const bool = (name: string, v: unknown): boolean => {
      if (v !== undefined && typeof v !== "boolean") throw new VirtioDeviceError("InvalidArgument", `${name} must be a boolean`);
      return v === true;
    };
    this.#target = checkPages(opts.targetPages ?? 0);
    this.#statsIntervalS = checkInterval(opts.statsIntervalS ?? 0);
    this.#config = {
      statsQueue: this.#statsIntervalS > 0,
      deflateOnOom: bool("deflateOnOom", opts.deflateOnOom),
      freePageReporting: bool("freePageReporting", opts.freePageReporting),
    };
    this.deviceFeatures =
      (this.#config.statsQueue ? VIRTIO_BALLOON_F_STATS_VQ : 0n) |
      (this.#config.deflateOnOom ? VIRTIO_BALLOON_F_DEFLATE_ON_OOM : 0n) |
      (this.#config.freePageReporting ? VIRTIO_BALLOON_F_REPORTING : 0n);
    const queues = 2 + (this.#config.statsQueue ? 1 : 0) + (this.#config.freePageReporting ? 1 : 0);
    this.queueMaxSizes = Array.from({ length: queues }, () => BALLOON_QUEUE_SIZE);
    this.#onViolation = opts.onViolation;
    this.#sink = { discard: opts.memory, metrics: this.metrics, violation: (r) => this.#onViolation?.(r) };
    this.#events = new BalloonEventHandler({ queue: (role) => this.#turn(role), statsTick: () => void this.requestStats() });
  }

  /** The target (num_pages) in 4 KiB pages. */
  get targetPages(): number {
    return this.#target;
  }

  /** What the driver says the balloon holds (actual), in 4 KiB pages. */
  get actualPages(): number {
    return this.#actual;
  }

  /**
   * Sets the target (num_pages) in 4 KiB pages. While the driver is running
   * it gets a configuration-change interrupt and inflates or deflates toward
   * it. The VMM checks the target against the guest's memory.
   * @throws {@link VirtioDeviceError} `"InvalidArgument"` unless a whole number in [0, 2^32).
   */
  setTarget(pages: number): void {
    const p = checkPages(pages);
    if (p === this.#target) return;
    this.#target = p;
    const a = this.#active;
    if (a !== undefined) {
      this.metrics.targetChanges++;
      a.ctx.interrupt.signalConfigChange();
    }
  }

  /** The statistics polling interval in seconds (0: statistics are not polled). */
  get statsIntervalS(): number {
    return this.#statsIntervalS;
  }

  /**
   * Changes the statistics polling interval; 0 stops polling.
   * @throws {@link VirtioDeviceError} `"InvalidArgument"` for a bad value, or if
   *   the device was built without statistics (the queue is offered only at creation).
   */
  setStatsInterval(seconds: number): void {
    const s = checkInterval(seconds);
    if (!this.#config.statsQueue) {
      throw new VirtioDeviceError("InvalidArgument", "virtio-balloon was created without statistics (statsIntervalS 0): the statistics queue cannot be added while running");
    }
    this.#statsIntervalS = s;
    if (this.#active?.stats !== undefined) this.#events.setStatsInterval(s);
  }

  /** The driver's latest statistics, or undefined if it sent none yet. */
  latestStats(): BalloonStats | undefined {
    return this.#stats;
  }

  /**
   * Asks the driver for fresh statistics now: returns the statistics buffer
   * the device holds, and the driver answers with a new one.
   * @returns false if there is no buffer to return (no statistics queue, not running or paused, or the driver has not answered the last request).
   */
  requestStats(): boolean {
    const a = this.#active;
    const head = this.#statsHead;
    if (a === undefined || a.broken || this.#paused || a.stats === undefined || head === undefined) return false;
    this.#statsHead = undefined;
    return this.#guard(a, () => {
      a.stats!.addUsed(a.ctx.mem, head, 0);
      if (a.stats!.needsNotification(a.ctx.mem)) a.ctx.interrupt.signalUsedQueue(this.#events.indexOf("stats"));
      return true;
    }, false);
  }

  /** {@inheritDoc VirtioDevice.readConfig} */
  readConfig(offset: number, data: Uint8Array): void {
    data.fill(0);
    if (!Number.isInteger(offset) || offset < 0 || offset >= BALLOON_CONFIG_SIZE) return;
    const cfg = new Uint8Array(BALLOON_CONFIG_SIZE);
    const dv = new DataView(cfg.buffer);
    dv.setUint32(0, this.#target, true);
    dv.setUint32(4, this.#actual, true);
    data.set(cfg.subarray(offset, Math.min(BALLOON_CONFIG_SIZE, offset + data.length)));
  }

  /** Writes `actual` (bytes 4-7, any width); num_pages is the host's and writes to it are ignored. */
  writeConfig(offset: number, data: Uint8Array): void {
    if (!Number.isInteger(offset) || offset < 0) return;
    const cfg = new Uint8Array(4);
    new DataView(cfg.buffer).setUint32(0, this.#actual, true);
    let changed = false;
    for (let i = 0; i < data.length; i++) {
      const at = offset + i - 4;
      if (at >= 0 && at < 4) {
        cfg[at] = data[i]!;
        changed = true;
      }
    }
    if (changed) this.#actual = new DataView(cfg.buffer).getUint32(0, true);
  }

  /** {@inheritDoc VirtioDevice.activate} */
  activate(ctx: ActivateContext): void {
    this.#events.activate(ctx.features, 0);
    const q = new Map<BalloonQueueRole, Queue>();
    ctx.queues.forEach((queue, i) => {
      const role = this.#events.roleOf(i);
      if (role !== undefined && queue.ready) q.set(role, queue);
    });
    const inflate = q.get("inflate");
    const deflate = q.get("deflate");
    const reporting = q.get("reporting");
    this.#active = {
      ctx,
      inflate: inflate && new PfnQueue(inflate, true, this.#sink, BALLOON_PFNS_PER_TURN),
      deflate: deflate && new PfnQueue(deflate, false, this.#sink, BALLOON_PFNS_PER_TURN),
      stats: q.get("stats"),
      reporting: reporting && new ReportQueue(reporting, this.#sink),
      queues: q,
      broken: false,
    };
    const stats = this.#active.stats;
    // A restored buffer head must name a descriptor of this queue; otherwise it is forgotten.
    if (stats === undefined || (this.#statsHead !== undefined && this.#statsHead >= stats.size)) this.#statsHead = undefined;
    if (stats !== undefined) this.#events.setStatsInterval(this.#statsIntervalS);
  }

  /** {@inheritDoc VirtioDevice.queueNotify} */
  queueNotify(index: number): void {
    if (this.#active !== undefined && !this.#active.broken) this.#events.notify(index);
  }

  /** Stops the data path and the statistics timer; `actual` goes back to 0, the target stays. */
  reset(): void {
    this.#events.reset();
    this.#active = undefined;
    this.#statsHead = undefined;
    this.#actual = 0;
  }

  /**
   * Stops the statistics timer and every queue turn (work a turn left for
   * later stays in its ring); {@link VirtioBalloon.setTarget} while paused
   * changes config space and its interrupt waits in the paused transport.
   */
  pause(): void {
    this.#paused = true;
    this.#events.pause();
  }

  /** Restarts the statistics timer (a whole interval from now) and gives every queue a turn. */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#events.resume();
  }

  /** Whether the device is paused. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Whether work that ran out of its turn's budget is still scheduled (save state after it drained). */
  busy(): boolean {
    return this.#events.pending;
  }

  /** {@inheritDoc VirtioDevice.state} */
  state(): VirtioBalloonState {
    return balloonState(
      { targetPages: this.#target, actualPages: this.#actual, statsIntervalS: this.#statsIntervalS, statsHead: this.#statsHead, stats: this.#stats, metrics: this.metrics },
      this.#config,
    );
  }

  /** {@inheritDoc VirtioDevice.restoreState} */
  restoreState(state: DeviceState): void {
    const r = checkBalloonState(state, this.#config, BALLOON_MAX_STATS_INTERVAL_S);
    this.#target = r.targetPages;
    this.#actual = r.actualPages;
    this.#statsIntervalS = r.statsIntervalS;
    this.#statsHead = r.statsHead;
    this.#stats = r.stats;
    Object.assign(this.metrics, r.metrics);
  }

  /** One turn on a queue; true if its budget ran out with work left. */
  #turn(role: BalloonQueueRole): boolean {
    const a = this.#active;
    if (a === undefined || a.broken || this.#paused) return false;
    return this.#guard(a, () => {
      const mem = a.ctx.mem;
      let t: { used: boolean; more: boolean } | undefined;
      if (role === "inflate") t = a.inflate?.drain(mem, BALLOON_PFNS_PER_TURN);
      else if (role === "deflate") t = a.deflate?.drain(mem, BALLOON_PFNS_PER_TURN);
      else if (role === "reporting") t = a.reporting?.drain(mem, BALLOON_REPORT_BYTES_PER_TURN, BALLOON_QUEUE_SIZE);
      else t = this.#statsTurn(a);
      if (t === undefined || this.#active !== a) return false;
      const q = a.queues.get(role)!;
      if (t.used && q.needsNotification(mem)) a.ctx.interrupt.signalUsedQueue(this.#events.indexOf(role));
      return t.more;
    }, false);
  }

  /** Takes the driver's statistics buffer: reads it once into a bounded copy and keeps the chain until the next request. */
  #statsTurn(a: Active): { used: boolean; more: boolean } | undefined {
    const q = a.stats;
    if (q === undefined) return undefined;
    const mem = a.ctx.mem;
    let used = false;
    for (let n = 0; n < BALLOON_STATS_CHAINS_PER_TURN; n++) {
      let chain: DescriptorChain | undefined = q.popDescriptorChain(mem);
      if (chain === undefined && q.eventIdx && q.enableNotification(mem)) chain = q.popDescriptorChain(mem);
      if (chain === undefined) return { used, more: false };
      const len = Math.min(chain.readableLength, BALLOON_MAX_STATS_BYTES);
      const bytes = new Uint8Array(len);
      chain.readInto(mem, bytes);
      const p = parseStats(bytes);
      this.#stats = { updatedAt: Date.now(), values: p.values };
      this.metrics.statsUpdates++;
      this.metrics.statsIgnored += p.unknownTags + (p.trailingBytes > 0 ? 1 : 0) + (chain.readableLength > len ? 1 : 0);
      if (this.#statsHead !== undefined) {
        // The driver may keep only one buffer here (§5.5.6.3): give the older one back.
        this.metrics.statsIgnored++;
        q.addUsed(mem, this.#statsHead, 0);
        used = true;
      }
      this.#statsHead = chain.head;
    }
    return { used, more: true };
  }

  /** Runs `fn`; a broken ring or a buffer outside guest memory sets DEVICE_NEEDS_RESET. */
  #guard<T>(a: Active, fn: () => T, onError: T): T {
    try {
      return fn();
    } catch (e) {
      if (!(e instanceof VirtqueueError) && !(e instanceof GuestMemoryError)) throw e;
      a.broken = true;
      this.metrics.needsReset++;
      this.#events.reset();
      a.ctx.interrupt.needsReset(`virtio-balloon: ${e.message}`);
      return onError;
    }
  }
}

function checkPages(v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffff_ffff) {
    throw new VirtioDeviceError("InvalidArgument", `the balloon target must be a whole number of 4 KiB pages in [0, 2^32), got ${String(v)}`);
  }
  return v;
}

function checkInterval(v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || v > BALLOON_MAX_STATS_INTERVAL_S || (v > 0 && v < 0.001)) {
    throw new VirtioDeviceError("InvalidArgument", `the statistics interval must be 0 (off) or 0.001 to ${BALLOON_MAX_STATS_INTERVAL_S} seconds, got ${String(v)}`);
  }
  return v;
}
