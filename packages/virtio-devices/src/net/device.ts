import { constants } from "node:os";
import { GuestMemoryError, type GuestMemory, type GuestMemoryRegion } from "@ts-vmm/vm-memory";
import { ReusableChain, VirtqueueError, type Queue } from "@ts-vmm/virtio-queue";
import { IovTable, TUN_F, VmmSysError } from "@ts-vmm/vmm-sys-util";
import { VIRTIO_ID_NET } from "../constants.js";
import type { ActivateContext, DeviceState, VirtioDevice } from "../device.js";
import { VirtioDeviceError } from "../errors.js";
import { RateLimiter, checkRateLimiterState, type RateLimiterConfig } from "../rate-limiter.js";
import { TapBackend, type NetBackend } from "./backend.js";
import {
  NET_CONFIG_SIZE,
  NET_HDR_SIZE,
  NET_MAX_BUFFER,
  NET_QUEUE_SIZE,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_S_LINK_UP,
} from "./constants.js";
import { NetEventHandler } from "./event-handler.js";
import { IOV_MAX, RX_NOT_ONE_REGION, RX_TOO_MANY_PIECES, TX_NOT_ONE_REGION, rxChainProblem, rxChainSpans, rxChainViews, tunOffloadFlags, txFrameSpans, txFrameViews, txHeaderProblem, txOffloadMask } from "./frame.js";
import { formatMac, parseMac, randomMac } from "./mac.js";
import { NetMetrics } from "./metrics.js";
import { checkNetState, type VirtioNetState } from "./persist.js";

/** Frames (each direction) handled in one turn of the event loop before yielding. */
export const NET_BATCH_FRAMES = 64;
/** Bytes (each direction) handled in one turn of the event loop before yielding. */
export const NET_BATCH_BYTES = 1024 * 1024;

/** Options of {@link VirtioNet}. */
export interface VirtioNetOptions {
  /** The host side: a {@link TapBackend}, or any {@link NetBackend}. The device owns it (closes it). */
  readonly backend: NetBackend;
  /** MAC address in config space, `aa:bb:cc:dd:ee:ff` or 6 bytes. Default: random, locally administered. */
  readonly mac?: string | Uint8Array;
  /**
   * Limits frames delivered to the guest (ops: frames; bandwidth: bytes, header included).
   * A config makes a limiter; an instance (to `update` later) belongs to this device's
   * receive queue alone (the device sets its `onReady`).
   */
  readonly rxRateLimiter?: RateLimiter | RateLimiterConfig;
  /** Limits frames the guest sends (as `rxRateLimiter`; not the same instance). */
  readonly txRateLimiter?: RateLimiter | RateLimiterConfig;
  /** Called with a reason for each dropped frame, malformed chain or backend error (for logs; keep it cheap). */
  readonly onViolation?: (reason: string) => void;
}

/** Options of {@link VirtioNet.openTap}. */
export interface VirtioNetTapOptions extends Omit<VirtioNetOptions, "backend"> {
  /** Tap interface name (attached to if it exists, created otherwise). */
  readonly tap: string;
}

interface Active {
  readonly ctx: ActivateContext;
  readonly rx: Queue;
  readonly tx: Queue;
  readonly mrg: boolean;
  broken: boolean;
  /** Whether the receive queue asks the driver for notifications (set when the ring ran dry). */
  rxNotify: boolean;
  /** The negotiated transmit offloads as {@link txOffloadMask} bits. */
  readonly txOffloads: number;
  /** Guest memory's regions, in the order of `txTable`'s views after the header. */
  readonly regions: readonly GuestMemoryRegion[];
  /** The header copy and every region as one IovTable, when the backend has writeTable and memory is shared. */
  readonly txTable: IovTable | undefined;
  /** The receive spare and every region as one IovTable, when the backend has readTable and memory is shared. */
  readonly rxTable: IovTable | undefined;
}

/** Most regions a transmit or receive table covers (an IovTable takes eight views; the header copy or the spare is one). */
const TABLE_REGIONS = 7;

const { EAGAIN, ECANCELED, EIO } = constants.errno;

type Delivery = "done" | "wait" | "broken";

const limiterOf = (l: RateLimiter | RateLimiterConfig | undefined): RateLimiter | undefined =>
  l === undefined || l instanceof RateLimiter ? l : new RateLimiter(l);

/**
 * virtio-net (§5.1) on a host {@link NetBackend} (a tap): one receive and one
 * transmit queue, MAC and link status in config space, merged receive buffers,
 * checksum and TSO offloads passed through to the tap where it takes them.
 *
 * Receive: one frame at a time is read from the tap into a host buffer of
 * 12 + 64 KiB + 14 bytes, then written into as many receive chains as it
 * needs (one without MRG_RXBUF). When the guest has not posted enough, the
 * chains popped for it are given back (`Queue.undoPop`), the frame waits, the
 * tap is no longer watched (the kernel queues, and drops only at the tap's
 * own queue limit), and the guest's next receive notification resumes.
 * Transmit: a chain's frame goes to the tap with writev straight from guest
 * memory, with the device's checked copy of the header. Malformed chains and
 * frames are dropped and counted in {@link VirtioNet.metrics}; a broken ring
 * sets DEVICE_NEEDS_RESET. Each direction handles at most 64 frames or
 * 1 MiB per turn of the event loop.
 */
export class VirtioNet implements VirtioDevice {
  /** {@inheritDoc VirtioDevice.deviceType} */
  readonly deviceType = VIRTIO_ID_NET;
  /** {@inheritDoc VirtioDevice.queueMaxSizes} */
  readonly queueMaxSizes: readonly number[] = [NET_QUEUE_SIZE, NET_QUEUE_SIZE];
  /** {@inheritDoc VirtioDevice.configSize} */
  readonly configSize = NET_CONFIG_SIZE;
  /** The MAC address in config space, `aa:bb:cc:dd:ee:ff`. */
  readonly mac: string;
  /** Counters. */
  readonly metrics = new NetMetrics();
  /** The receive rate limiter, if any (update it with `update`). */
  readonly rxRateLimiter: RateLimiter | undefined;
  /** The transmit rate limiter, if any. */
  readonly txRateLimiter: RateLimiter | undefined;
  readonly #backend: NetBackend;
  readonly #macBytes: Uint8Array;
  readonly #events: NetEventHandler;
  readonly #onViolation: ((reason: string) => void) | undefined;
  /** The frame being delivered, header first; `#pendingLen` bytes of it are valid. */
  readonly #frame = new Uint8Array(NET_MAX_BUFFER + 1);
  #pendingLen = 0;
  /** The checked copies of transmit headers: a batch's slots, 12 bytes each (shared: view 0 of the transmit IovTable). */
  readonly #txHdr = new Uint8Array(new SharedArrayBuffer(NET_HDR_SIZE * NET_BATCH_FRAMES));
  /** Slot 0 alone: the header piece of a frame sent through views. */
  readonly #txHdr0 = this.#txHdr.subarray(0, NET_HDR_SIZE);
  /** A transmit batch: each frame's triple count, and the counts in / results out of one writeTableBatch. */
  readonly #txCounts = new Uint16Array(NET_BATCH_FRAMES);
  readonly #txIo = new Int32Array(NET_BATCH_FRAMES);
  /** A transmit batch: each frame's chain head and readable length. */
  readonly #txHeads = new Uint16Array(NET_BATCH_FRAMES);
  readonly #txLens = new Uint32Array(NET_BATCH_FRAMES);
  /** Whether this transmit turn returned chains (their used entries wait for publication); set by the turn and its flushes. */
  #txReturned = false;
  /** The writev pieces of one transmit frame, `#txHdr` first; reused (the backend does not keep them). */
  readonly #iov: Uint8Array[] = [];
  /** Where a receive through `rxTable` puts what its chain cannot hold (view 0 of that table). */
  readonly #rxSpare = new Uint8Array(new SharedArrayBuffer(NET_MAX_BUFFER + 1));
  /** The readv pieces of one received frame: a receive chain's views, then `#frame` as the spare; reused. */
  readonly #rxIov: Uint8Array[] = [];
  /** The readv pieces for a receive chain of one buffer: its view, then `#frame`. */
  readonly #rxIov1: Uint8Array[] = [this.#frame, this.#frame];
  /** The chain of a direct receive (one at a time), refilled by each pop: no allocation per chain. */
  readonly #rxChain = new ReusableChain();
  /** The chains a frame is gathered into (`#deliver`, several with MRG_RXBUF), grown on demand up to the ring size. */
  readonly #rxPool: ReusableChain[] = [];
  /** The transmit chain (one at a time), refilled by each pop. */
  readonly #txChain = new ReusableChain();
  /** Whether the pending frame was charged to the rx limiter already. */
  #pendingCharged = false;
  #linkUp = true;
  #active: Active | undefined;
  #txWaitsForBackend = false;
  /** Receive chains returned since creation (to know whether a turn returned any). */
  #rxUsed = 0;
  #txScheduled = false;
  #rxScheduled = false;
  #closed = false;
  /** Between {@link VirtioNet.pause} and {@link VirtioNet.resume}. */
  #paused = false;

  /**
   * @param opts - backend, MAC, rate limiters.
   * @throws {@link VirtioDeviceError} `"InvalidArgument"` for a bad MAC or rate limiter config.
   */
  constructor(opts: VirtioNetOptions) {
    if (typeof opts?.backend?.read !== "function") throw new VirtioDeviceError("InvalidArgument", "virtio-net needs a backend");
    const mac = opts.mac === undefined ? randomMac() : typeof opts.mac === "string" ? parseMac(opts.mac) : parseMac(formatMac(opts.mac));
    this.#macBytes = mac;
    this.mac = formatMac(mac);
    this.#backend = opts.backend;
    this.#onViolation = opts.onViolation;
    this.rxRateLimiter = limiterOf(opts.rxRateLimiter);
    this.txRateLimiter = limiterOf(opts.txRateLimiter);
    if (this.rxRateLimiter !== undefined && this.rxRateLimiter === this.txRateLimiter) {
      // One limiter wakes one queue (its onReady): a shared one would leave rx waiting forever.
      throw new VirtioDeviceError("InvalidArgument", "rxRateLimiter and txRateLimiter must be different RateLimiter objects (pass a config to get one each)");
    }
    this.#events = new NetEventHandler(opts.backend, this, this.rxRateLimiter, this.txRateLimiter);
  }

  /**
   * A device on a tap interface (see {@link TapBackend.open}).
   * @throws {@link VirtioDeviceError} `"Io"` if the tap cannot be opened; `"InvalidArgument"` for bad options.
   */
  static openTap(opts: VirtioNetTapOptions): VirtioNet {
    const backend = TapBackend.open({ name: opts.tap });
    try {
      return new VirtioNet({ ...opts, backend });
    } catch (e) {
      backend.close();
      throw e;
    }
  }

  /** The host backend. */
  get backend(): NetBackend {
    return this.#backend;
  }

  /** {@inheritDoc VirtioDevice.deviceFeatures} */
  get deviceFeatures(): bigint {
    const o = this.#backend.offloads;
    let f = VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | VIRTIO_NET_F_MRG_RXBUF;
    // Transmit offloads: the kernel takes partial checksums and GSO frames from a vnet-header writer.
    f |= VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_TSO6 | VIRTIO_NET_F_HOST_ECN;
    // Receive offloads: only those the tap accepted at open.
    if (o & TUN_F.CSUM) f |= VIRTIO_NET_F_GUEST_CSUM;
    if (o & TUN_F.TSO4) f |= VIRTIO_NET_F_GUEST_TSO4;
    if (o & TUN_F.TSO6) f |= VIRTIO_NET_F_GUEST_TSO6;
    if (o & TUN_F.TSO_ECN) f |= VIRTIO_NET_F_GUEST_ECN;
    return f;
  }

  /** {@inheritDoc VirtioDevice.readConfig} */
  readConfig(offset: number, data: Uint8Array): void {
    data.fill(0);
    const cfg = new Uint8Array(NET_CONFIG_SIZE);
    cfg.set(this.#macBytes, 0);
    cfg[6] = this.#linkUp ? VIRTIO_NET_S_LINK_UP : 0;
    cfg[8] = 1; // max_virtqueue_pairs (meaningful with VIRTIO_NET_F_MQ, not offered)
    if (offset >= 0 && offset < NET_CONFIG_SIZE) data.set(cfg.subarray(offset, Math.min(NET_CONFIG_SIZE, offset + data.length)));
  }

  /** Config writes are ignored (the MAC is read-only without the legacy interface). */
  writeConfig(_offset: number, _data: Uint8Array): void {}

  /** Whether config `status` says the link is up. */
  get linkUp(): boolean {
    return this.#linkUp;
  }

  /** Sets config `status` LINK_UP and tells the driver (a configuration change interrupt). */
  setLinkUp(up: boolean): void {
    if (this.#linkUp === (up === true)) return;
    this.#linkUp = up === true;
    this.#active?.ctx.interrupt.signalConfigChange();
  }

  /** {@inheritDoc VirtioDevice.activate} */
  activate(ctx: ActivateContext): void {
    const [rx, tx] = ctx.queues;
    if (rx === undefined || tx === undefined || this.#closed) return;
    const regions = ctx.mem.regions;
    const a: Active = { ctx, rx, tx, mrg: (ctx.features & VIRTIO_NET_F_MRG_RXBUF) !== 0n, broken: false, rxNotify: true, txOffloads: txOffloadMask(ctx.features), regions, txTable: this.#tableFor(this.#txHdr, regions, "writeTable"), rxTable: this.#tableFor(this.#rxSpare, regions, "readTable") };
    this.#closeTables(); // activated again without a reset
    this.#active = a;
    try {
      this.#backend.setOffload(tunOffloadFlags(ctx.features));
    } catch (e) {
      // The tap refused what it accepted at open: the guest gets complete frames instead.
      this.#violation(`offloads: ${(e as Error).message}`);
    }
    this.#rxTurn();
    // Chains posted before a snapshot: go on once the activation returns.
    this.#scheduleTx();
  }

  /** Stops the data path; a frame waiting for receive buffers is dropped (counted in `rxDroppedReset`). */
  reset(): void {
    this.#closeTables(); // their hold on the old guest memory
    this.#active = undefined;
    this.#rxIov1[0] = this.#frame; // no view of the old guest memory kept
    this.rxRateLimiter?.cancel();
    this.txRateLimiter?.cancel();
    if (this.#pendingLen > 0) this.metrics.rxDroppedReset++;
    this.#pendingLen = 0;
    this.#pendingCharged = false;
    this.#txWaitsForBackend = false;
    this.#events.want(false, false);
    try {
      this.#backend.setOffload(0);
    } catch {
      // closed or refused: nothing is read until the next activation sets them again
    }
  }

  /** {@inheritDoc VirtioDevice.busy} */
  busy(): boolean {
    return false; // every backend call is synchronous
  }

  /**
   * Stops the data path without forgetting it: the tap is no longer watched
   * (frames wait in the kernel's tap queue, which drops only at its own
   * limit), no receive or transmit turn runs, and the rate limiters' timers
   * find nothing to do. A frame already read and waiting for receive buffers
   * stays in the device (and in {@link VirtioNet.state}).
   */
  pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    this.#events.want(false, false);
  }

  /** Watches the tap again and gives both queues a turn (chains posted before the pause go on). */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#rxTurn();
    this.#scheduleTx();
  }

  /** Whether the device is paused. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Stops the device and closes the backend. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.reset();
    this.#closed = true;
    this.#backend.close();
  }

  /** {@inheritDoc VirtioDevice.state} */
  state(): VirtioNetState {
    const pending = this.#pendingLen > 0 ? Buffer.from(this.#frame.subarray(0, this.#pendingLen)).toString("base64") : null;
    return { deviceType: VIRTIO_ID_NET, mac: this.mac, linkUp: this.#linkUp, pendingFrame: pending, rxRateLimiter: this.rxRateLimiter?.state() ?? null, txRateLimiter: this.txRateLimiter?.state() ?? null };
  }

  /** {@inheritDoc VirtioDevice.restoreState} */
  restoreState(state: DeviceState): void {
    const r = checkNetState(state, this.mac);
    const s = state as Partial<VirtioNetState>;
    // Both limiters' states checked before anything changes.
    for (const l of [s.rxRateLimiter, s.txRateLimiter]) if (l !== undefined && l !== null) checkRateLimiterState(l);
    if (s.rxRateLimiter) this.rxRateLimiter?.restoreState(s.rxRateLimiter);
    if (s.txRateLimiter) this.txRateLimiter?.restoreState(s.txRateLimiter);
    this.#linkUp = r.linkUp;
    this.#pendingLen = 0;
    if (r.pending !== undefined) {
      this.#frame.set(r.pending);
      this.#pendingLen = r.pending.length;
    }
    this.#pendingCharged = false;
  }

  /** {@inheritDoc VirtioDevice.queueNotify} */
  queueNotify(index: number): void {
    this.#events.queueNotify(index);
  }

  /** @internal Event handler entry: receive. */
  processRx(): void {
    this.#rxScheduled = false;
    this.#rxTurn();
  }

  /** @internal Event handler entry: transmit (a notification, the backend writable again, the limiter's timer). */
  processTx(): void {
    this.#txScheduled = false;
    // Whatever woke us, try the backend again: a full tap answers "again" once more and we wait again.
    this.#txWaitsForBackend = false;
    this.#txTurn();
  }

  /** @internal Event handler entry: a backend watch failed. */
  watchFailed(reason: string): void {
    this.#violation(`backend watch: ${reason}`);
  }

  #violation(reason: string): void {
    this.#onViolation?.(`virtio-net ${this.#backend.name}: ${reason}`);
  }

  #broken(a: Active, e: unknown): void {
    if (!(e instanceof VirtqueueError) && !(e instanceof GuestMemoryError)) throw e;
    a.broken = true;
    this.metrics.needsReset++;
    this.#updateWatch();
    a.ctx.interrupt.needsReset(`virtio-net: ${e.message}`);
  }

  #usable(): Active | undefined {
    const a = this.#active;
    return a === undefined || a.broken || this.#closed || this.#paused ? undefined : a;
  }

  #updateWatch(): void {
    const a = this.#usable();
    const rx = a !== undefined && a.rx.ready && this.#pendingLen === 0 && !(this.rxRateLimiter?.blocked ?? false);
    const tx = a !== undefined && a.tx.ready && this.#txWaitsForBackend;
    this.#events.want(rx, tx);
  }

  #scheduleRx(): void {
    if (this.#rxScheduled) return;
    this.#rxScheduled = true;
    setImmediate(() => this.processRx());
  }

  #scheduleTx(): void {
    if (this.#txScheduled) return;
    this.#txScheduled = true;
    setImmediate(() => this.processTx());
  }

  // ---- receive ----

  #rxTurn(): void {
    const a = this.#usable();
    if (a === undefined || !a.rx.ready) return;
    let frames = 0;
    let bytes = 0;
    const usedBefore = this.#rxUsed;
    // Straight into the guest's buffer when the backend reads scattered and no limiter must
    // see the frame's size before it is taken from the backend.
    const direct = this.#backend.readv !== undefined && this.rxRateLimiter === undefined;
    try {
      while (frames < NET_BATCH_FRAMES && bytes < NET_BATCH_BYTES) {
        if (this.#pendingLen === 0 && direct) {
          const d = this.#receiveDirect(a);
          if (d === "broken") return this.#publishRx(a);
          if (d === "again") break;
          if (d > 0) {
            frames++;
            bytes += d;
            if (a.rxNotify) this.#rxNotifyOff(a);
            continue;
          }
          // 0: no receive chain (the copying path reads the frame and waits for one), or a frame
          // longer than the chain is pending in `#frame` for the copying path.
        }
        if (this.#pendingLen === 0 && !this.#readFrame()) break;
        const n = this.#pendingLen;
        const limiter = this.rxRateLimiter;
        if (limiter !== undefined && !this.#pendingCharged) {
          if (!limiter.consume(n, 1)) {
            this.metrics.rxThrottled++;
            break;
          }
          this.#pendingCharged = true;
        }
        const r = this.#deliver(a, n);
        if (r === "broken") return this.#publishRx(a);
        if (r === "wait") break;
        this.#pendingLen = 0;
        this.#pendingCharged = false;
        frames++;
        bytes += n;
        if (a.rxNotify) this.#rxNotifyOff(a);
      }
      if (frames >= NET_BATCH_FRAMES || bytes >= NET_BATCH_BYTES) this.metrics.yields++;
      // Chains may have been returned (empty ones too) even when the frame waits.
      // It also publishes the used index the direct path left unpublished, before the turn ends.
      if (this.#rxUsed !== usedBefore && a.rx.needsNotification(a.ctx.mem)) a.ctx.interrupt.signalUsedQueue(0);
    } catch (e) {
      this.#publishRx(a);
      this.#broken(a, e);
      return;
    }
    // Watch the tap only while a frame could be delivered; at the bound the (level-triggered)
    // watch brings us back on the next turn of the loop.
    this.#updateWatch();
  }

  /**
   * Reads the next frame straight into the next receive chain (readv over the triples of
   * `rxTable` when the chain's buffers each lie in one region, else over views of them, with a
   * spare buffer for whatever does not fit). @returns the frame's length when it was delivered;
   * `0` when the copying path must go on (no chain, a chain in too many pieces, or a frame
   * longer than the chain, left in `#frame` as the pending frame); `"again"` when the backend
   * has no frame; `"broken"`.
   */
  #receiveDirect(a: Active): number | "again" | "broken" {
    const { rx, ctx, rxTable: table } = a;
    const mem = ctx.mem;
    const readv = this.#backend.readv as (pieces: readonly Uint8Array[]) => number | "again";
    for (let tries = 0; tries < NET_BATCH_FRAMES; tries++) {
      const c = this.#popRx(a, this.#rxChain);
      if (c === "broken") return "broken";
      if (c === "malformed") continue;
      if (c === undefined) return 0;
      let problem: string | undefined;
      let count = RX_NOT_ONE_REGION;
      if (table !== undefined) {
        const r = rxChainSpans(a.regions, c, table.spans, this.#rxSpare.length);
        if (typeof r === "string") problem = r;
        else count = r;
      }
      // Views: no table, or a chain the table cannot name (the views path says what is wrong).
      // One buffer in one region (what drivers post): a fixed two-piece array, no array churn.
      const one = this.#rxIov1;
      const single = c.length === 1 && c.readableCount === 0;
      let v0: Uint8Array | undefined;
      let iov = one;
      if (count === RX_NOT_ONE_REGION && problem === undefined) {
        if (single && c.lenAt(0) >= NET_HDR_SIZE) {
          try {
            v0 = mem.slice(c.addrAt(0), c.lenAt(0)); // checked: inside one region, exactly that many bytes
          } catch {
            v0 = undefined; // not inside one region: the general path below says what is wrong
          }
        }
        if (v0 !== undefined) one[0] = v0;
        else {
          iov = this.#rxIov;
          iov.length = 0;
          problem = rxChainViews(mem, c, iov, IOV_MAX - 1);
        }
      }
      if (problem !== undefined) {
        if (iov !== one) iov.length = 0;
        if (problem === RX_TOO_MANY_PIECES) {
          rx.undoPop(c);
          return 0;
        }
        this.metrics.rxMalformedChains++;
        this.#violation(problem);
        if (!this.#addUsed(a, rx, c.head, 0)) return "broken";
        continue;
      }
      const cap = c.writableLength;
      if (iov !== one) iov.push(this.#frame);
      let n: number | "again";
      try {
        n = table !== undefined && count > 0 ? this.#readTable(table, count) : readv.call(this.#backend, iov);
      } catch (e) {
        if (iov !== one) iov.length = 0;
        rx.undoPop(c);
        this.metrics.rxTapErrors++;
        this.#violation((e as Error).message);
        return "again";
      }
      if (typeof n !== "number") {
        if (iov !== one) iov.length = 0;
        rx.undoPop(c);
        return "again";
      }
      if (n < NET_HDR_SIZE || n > NET_MAX_BUFFER) {
        if (iov !== one) iov.length = 0;
        rx.undoPop(c);
        this.metrics.rxDroppedBadFrame++;
        this.#violation(`frame of ${n} bytes from the backend dropped (header ${NET_HDR_SIZE}, at most ${NET_MAX_BUFFER})`);
        continue;
      }
      if (n <= cap) {
        // num_buffers (header bytes 10–11): one chain. The tap skips those bytes.
        if (count > 0) {
          setSpanByte(a.regions, (table as IovTable).spans, 10, 1);
          setSpanByte(a.regions, (table as IovTable).spans, 11, 0);
        } else if (v0 !== undefined) {
          v0[10] = 1; // v0 holds at least the 12-byte header
          v0[11] = 0;
        } else {
          setIovByte(iov, 10, 1);
          setIovByte(iov, 11, 0);
        }
        // Writes through views are not dirty-tracked: log what the tap wrote (diff snapshots).
        if (mem.markDirty !== undefined) {
          if (single) mem.markDirty(c.addrAt(0), n);
          else markChainDirty(mem, c, n);
        }
        if (iov !== one) iov.length = 0;
        try {
          // Published once at the end of the turn (needsNotification), not per frame.
          rx.addUsedDeferred(mem, c.head, n);
        } catch (e) {
          return this.#fail(a, e);
        }
        this.#rxUsed++;
        this.metrics.rxFrames++;
        this.metrics.rxZeroCopy++;
        if (count > 0) this.metrics.rxTable++;
        this.metrics.rxBytes += n - NET_HDR_SIZE;
        return n;
      }
      // Longer than the chain: the tail went to the spare from 0. Put the whole frame in
      // `#frame`, in order, and give the chain back for the copying path (merged buffers, or
      // the drop).
      const frame = this.#frame;
      if (count > 0) {
        const spans = (table as IovTable).spans;
        frame.set(this.#rxSpare.subarray(0, n - cap), cap);
        let off = 0;
        for (let k = 0; k < count - 1; k++) {
          const j = 3 * k;
          const bytes = (a.regions[(spans[j] as number) - 1] as GuestMemoryRegion).bytes;
          const o = spans[j + 1] as number;
          const len = spans[j + 2] as number;
          frame.set(bytes.subarray(o, o + len), off);
          off += len;
        }
      } else {
        frame.copyWithin(cap, 0, n - cap);
        let off = 0;
        for (let i = 0; i < iov.length - 1; i++) {
          const v = iov[i] as Uint8Array;
          frame.set(v, off);
          off += v.length;
        }
      }
      if (iov !== one) iov.length = 0;
      rx.undoPop(c);
      this.#pendingLen = n;
      return 0;
    }
    return "again";
  }

  /**
   * Publishes the receive entries the turn left unpublished (a turn that broke the queue still
   * gives back what it delivered; a ring that cannot be written any more is broken already).
   */
  #publishRx(a: Active): void {
    try {
      a.rx.publishUsed(a.ctx.mem);
    } catch {
      // the used ring is out of bounds: DEVICE_NEEDS_RESET is set
    }
  }

  /**
   * Asks the driver not to notify on new receive buffers: the device looks for them when a
   * frame comes, and turns notifications back on when the ring runs dry (`#deliver`), so a
   * driver refilling a ring that has room causes no exits.
   */
  #rxNotifyOff(a: Active): void {
    a.rx.disableNotification(a.ctx.mem);
    a.rxNotify = false;
  }

  /**
   * Pops the next receive chain: the chain, undefined when the ring is empty, `"malformed"`
   * when the chain the ring named was broken (returned with 0 and counted), or `"broken"`.
   */
  #popRx(a: Active, into: ReusableChain): ReusableChain | undefined | "malformed" | "broken" {
    try {
      return a.rx.popDescriptorChainInto(a.ctx.mem, into) ? into : undefined;
    } catch (e) {
      if (!(e instanceof VirtqueueError) || e.head === undefined) return this.#fail(a, e);
      this.metrics.rxMalformedChains++;
      this.#violation(`receive chain ${e.head}: ${e.code}`);
      return this.#addUsed(a, a.rx, e.head, 0) ? "malformed" : "broken";
    }
  }

  /** Reads the next frame from the backend into `#frame`. @returns whether one is pending. */
  #readFrame(): boolean {
    for (let tries = 0; tries < NET_BATCH_FRAMES; tries++) {
      let n: number | "again";
      try {
        n = this.#backend.read(this.#frame);
      } catch (e) {
        this.metrics.rxTapErrors++;
        this.#violation((e as Error).message);
        return false;
      }
      if (n === "again") return false;
      if (n < NET_HDR_SIZE || n > NET_MAX_BUFFER) {
        this.metrics.rxDroppedBadFrame++;
        this.#violation(`frame of ${n} bytes from the backend dropped (header ${NET_HDR_SIZE}, at most ${NET_MAX_BUFFER})`);
        continue;
      }
      this.#pendingLen = n;
      return true;
    }
    return false;
  }

  /**
   * Writes the pending frame of `n` bytes into receive chains: "done" (delivered,
   * or dropped and counted), "wait" (not enough buffers: every chain popped for it
   * went back), "broken" (DEVICE_NEEDS_RESET set).
   */
  #deliver(a: Active, n: number): Delivery {
    const { rx, ctx } = a;
    const mem = ctx.mem;
    // The frame's chains are pool[0, count): one object each, no array built per frame.
    const pool = this.#rxPool;
    let count = 0;
    let cap = 0;
    // Chains before the last malformed one: returning that one made them final (no undoPop).
    let committed = 0;
    let pops = 0;
    for (;;) {
      if (a.mrg ? cap >= n : count === 1) break;
      if (count >= rx.size) {
        // The whole ring cannot hold it: it never will.
        this.metrics.rxDroppedTooLarge++;
        this.#violation(`frame of ${n} bytes is larger than the whole receive ring (${cap} bytes)`);
        return this.#giveBack(a, count, committed) ? "done" : "broken";
      }
      // Each chain held for the frame has its own object; one left over (malformed) is refilled.
      if (pool.length === count) pool.push(new ReusableChain());
      const c = this.#popRx(a, pool[count] as ReusableChain);
      if (c === "broken") return "broken";
      if (c === "malformed") {
        committed = count;
        continue;
      }
      if (c === undefined) {
        if (!this.#giveBack(a, count, committed)) return "broken";
        count = 0;
        cap = 0;
        committed = 0;
        let more: boolean;
        try {
          more = rx.enableNotification(mem);
          a.rxNotify = true;
        } catch (e) {
          return this.#fail(a, e);
        }
        if (more && ++pops < 4) continue; // posted while we looked: try again
        if (more) this.#scheduleRx(); // a guest posting as fast as we look: go on next turn
        this.metrics.rxNoBuffers++;
        return "wait";
      }
      const problem = rxChainProblem(mem, c);
      if (problem !== undefined) {
        this.metrics.rxMalformedChains++;
        this.#violation(problem);
        if (!this.#addUsed(a, rx, c.head, 0)) return "broken";
        committed = count;
        continue;
      }
      count++;
      cap += c.writableLength;
    }
    if (cap < n) {
      // Without MRG_RXBUF one chain must hold the frame; keep the chain for the next one.
      this.metrics.rxDroppedTooLarge++;
      this.#violation(`frame of ${n} bytes is larger than the receive buffer (${cap} bytes)`);
      return this.#giveBack(a, count, committed) ? "done" : "broken";
    }
    // num_buffers: how many chains the frame takes (1 without MRG_RXBUF, as VERSION_1 requires).
    this.#frame[10] = count & 0xff;
    this.#frame[11] = count >> 8;
    let off = 0;
    try {
      for (let i = 0; i < count; i++) {
        const c = pool[i] as ReusableChain;
        const k = Math.min(c.writableLength, n - off);
        c.writeFrom(mem, this.#frame.subarray(off, off + k));
        rx.addUsed(mem, c.head, k);
        this.#rxUsed++;
        off += k;
      }
    } catch (e) {
      return this.#fail(a, e);
    }
    this.metrics.rxFrames++;
    this.metrics.rxBytes += n - NET_HDR_SIZE;
    return "done";
  }

  /**
   * Gives the `count` chains gathered for a frame (`#rxPool[0, count)`) back: newest first
   * with undoPop, the final ones (below `committed`) returned empty.
   */
  #giveBack(a: Active, count: number, committed: number): boolean {
    const pool = this.#rxPool;
    try {
      for (let i = count - 1; i >= committed; i--) a.rx.undoPop(pool[i] as ReusableChain);
      for (let i = 0; i < committed; i++) {
        a.rx.addUsed(a.ctx.mem, (pool[i] as ReusableChain).head, 0);
        this.#rxUsed++;
        this.metrics.rxReturnedEmpty++;
      }
      return true;
    } catch (e) {
      this.#fail(a, e);
      return false;
    }
  }

  #addUsed(a: Active, q: Queue, head: number, len: number): boolean {
    try {
      q.addUsed(a.ctx.mem, head, len);
      if (q === a.rx) this.#rxUsed++;
      return true;
    } catch (e) {
      this.#fail(a, e);
      return false;
    }
  }

  #fail(a: Active, e: unknown): "broken" {
    this.#broken(a, e);
    return "broken";
  }

  // ---- transmit ----

  /**
   * An IovTable over `first` (the transmit header copy or the receive spare) and guest memory's
   * regions, or undefined (the views path) when the backend has no `method`, memory is not
   * fixed-length SharedArrayBuffers or has more than {@link TABLE_REGIONS} regions.
   */
  #tableFor(first: Uint8Array, regions: readonly GuestMemoryRegion[], method: "readTable" | "writeTable"): IovTable | undefined {
    if (typeof this.#backend[method] !== "function") return undefined;
    if (regions.length > TABLE_REGIONS || !regions.every((r) => r.bytes.buffer instanceof SharedArrayBuffer)) return undefined;
    try {
      return IovTable.create([first, ...regions.map((r) => r.bytes)], IOV_MAX);
    } catch {
      return undefined; // a growable buffer, or no addon: frames go through views
    }
  }

  #closeTables(): void {
    this.#active?.txTable?.close();
    this.#active?.rxTable?.close();
  }

  /** Reads into the first `count` triples of `table` through the backend's readTable (the table exists only when it has one). */
  #readTable(table: IovTable, count: number): number | "again" {
    const b = this.#backend;
    if (b.readTable === undefined) throw new VirtioDeviceError("Io", `backend ${b.name} has no readTable any more`);
    return b.readTable(table, count);
  }

  /** Writes the first `count` triples of `table` through the backend's writeTable (the table exists only when it has one). */
  #writeTable(table: IovTable, count: number): number | "again" {
    const b = this.#backend;
    if (b.writeTable === undefined) throw new VirtioDeviceError("Io", `backend ${b.name} has no writeTable any more`);
    return b.writeTable(table, count);
  }

  #txTurn(): void {
    const a = this.#usable();
    if (a === undefined || !a.tx.ready) return;
    const { tx, ctx, txTable: table } = a;
    const mem = ctx.mem;
    const hdrs = this.#txHdr;
    const hdr = this.#txHdr0;
    this.#iov[0] = hdr;
    // Frames in one region go out in batches (one system call for the turn's frames) when the
    // backend takes them; a batch holds at most IOV_MAX triples, and a chain of the queue's
    // size must fit after the ones before it.
    // Not with a transmit limiter: frames a full tap sends back to the ring would be charged again.
    const batching = table !== undefined && typeof this.#backend.writeTableBatch === "function" && this.txRateLimiter === undefined;
    const roomBefore = table !== undefined ? table.spans.length / 3 - (tx.size + 1) : 0;
    let frames = 0;
    let bytes = 0;
    let n = 0; // frames in the batch
    let base = 0; // their triples
    this.#txReturned = false;
    try {
      for (;;) {
        if (frames >= NET_BATCH_FRAMES || bytes >= NET_BATCH_BYTES) {
          this.metrics.yields++;
          this.#scheduleTx();
          break;
        }
        if (this.txRateLimiter?.blocked) break;
        let c: ReusableChain | undefined;
        try {
          c = tx.popDescriptorChainInto(mem, this.#txChain) ? this.#txChain : undefined;
        } catch (e) {
          if (!(e instanceof VirtqueueError) || e.head === undefined) {
            // The queue is broken: what the batch holds still goes, as it would have one by one.
            if (n > 0) this.#flushTx(a, table as IovTable, n, base);
            throw e;
          }
          frames++; // a guest republishing bad chains gets a bounded turn too
          // Out of order with the batch's chains: the batch goes first.
          const go = n === 0 || this.#flushTx(a, table as IovTable, n, base);
          n = 0;
          base = 0;
          this.metrics.txMalformed++;
          this.#violation(`transmit chain ${e.head}: ${e.code}`);
          tx.addUsedDeferred(mem, e.head, 0);
          this.#txReturned = true;
          if (!go) break;
          continue;
        }
        if (c === undefined) {
          if (n > 0) {
            // The ring is empty: the batch goes.
            const go = this.#flushTx(a, table as IovTable, n, base);
            n = 0;
            base = 0;
            if (!go) break;
          }
          if (tx.eventIdx && tx.enableNotification(mem)) continue;
          // A guest that sent something is likely refilling: look once more on the next turn
          // of the loop before waiting for its notification (a turn that finds nothing stops).
          if (frames > 0) this.#scheduleTx();
          break;
        }
        frames++;
        bytes += c.readableLength;
        // Triples of the IovTable for a chain in one region (no view per piece), else views.
        let problem: string | undefined;
        let count = TX_NOT_ONE_REGION;
        const slot = batching ? n : 0;
        if (table !== undefined) {
          const r = txFrameSpans(a.regions, c, hdrs, table.spans, slot, batching ? base : 0);
          if (typeof r === "string") problem = r;
          else count = r;
        }
        if (problem === undefined && count > 0) problem = txHeaderProblem(hdrs, a.txOffloads, NET_HDR_SIZE * slot);
        if (n > 0 && (problem !== undefined || count === TX_NOT_ONE_REGION)) {
          // Anything but a batch frame: the batch goes first, then this chain from the ring again.
          tx.undoPop(c);
          frames--;
          bytes -= c.readableLength;
          const go = this.#flushTx(a, table as IovTable, n, base);
          n = 0;
          base = 0;
          if (!go) break;
          continue;
        }
        if (count === TX_NOT_ONE_REGION && problem === undefined) {
          const iov = this.#iov;
          iov.length = 1; // iov[0] is hdr
          problem = txFrameViews(mem, c, iov);
          if (problem === undefined) {
            c.readInto(mem, hdr);
            problem = txHeaderProblem(hdr, a.txOffloads);
          }
        }
        if (problem !== undefined) {
          if (c.readableLength > NET_MAX_BUFFER && c.writableLength === 0) this.metrics.txOversize++;
          else this.metrics.txMalformed++;
          this.#violation(problem);
          tx.addUsedDeferred(mem, c.head, 0);
          this.#txReturned = true;
          continue;
        }
        if (this.txRateLimiter !== undefined && !this.txRateLimiter.consume(c.readableLength, 1)) {
          this.metrics.txThrottled++;
          tx.undoPop(c); // stays in the ring until the limiter's timer
          break;
        }
        // num_buffers is not the driver's to set on transmit
        hdrs[NET_HDR_SIZE * slot + 10] = 0;
        hdrs[NET_HDR_SIZE * slot + 11] = 0;
        if (batching && count > 0) {
          this.#txCounts[n] = count;
          this.#txHeads[n] = c.head;
          this.#txLens[n] = c.readableLength;
          n++;
          base += count;
          if (n === NET_BATCH_FRAMES || base > roomBefore) {
            const go = this.#flushTx(a, table as IovTable, n, base);
            n = 0;
            base = 0;
            if (!go) break;
          }
          continue;
        }
        let w: number | "again";
        try {
          w = table !== undefined && count > 0 ? this.#writeTable(table, count) : this.#backend.write(this.#iov);
        } catch (e) {
          this.metrics.txTapErrors++;
          this.#violation((e as Error).message);
          w = -1;
        }
        if (typeof w !== "number") {
          this.metrics.txTapFull++;
          tx.undoPop(c);
          this.#txWaitsForBackend = true;
          break;
        }
        if (w >= 0) {
          if (count > 0) this.metrics.txTable++;
          this.metrics.txFrames++;
          this.metrics.txBytes += c.readableLength - NET_HDR_SIZE;
        }
        tx.addUsedDeferred(mem, c.head, 0);
        this.#txReturned = true;
      }
      if (n > 0) this.#flushTx(a, table as IovTable, n, base);
      // Publishes the used index too (the chains above were returned unpublished).
      if (this.#txReturned && tx.needsNotification(mem)) ctx.interrupt.signalUsedQueue(1);
    } catch (e) {
      try {
        tx.publishUsed(mem);
      } catch {
        // the used ring is out of bounds: DEVICE_NEEDS_RESET is set below
      }
      this.#broken(a, e);
      return;
    }
    this.#updateWatch();
  }

  /**
   * Writes the batch's `n` frames (their `total` triples first in `table`, `#txCounts` their
   * counts) through the backend's writeTableBatch and returns their chains: sent ones, and ones
   * the tap refused or whose outcome is unknown (dropped and counted in `txTapErrors`, as a
   * lone frame is). The frames cancelled behind a refused one are written again at once (their
   * triples moved to the table's front; the header triples name slots, which stay). At EAGAIN
   * the frames not sent go back to the ring, newest first; one that cannot (a malformed chain
   * popped since ended the queue's memory of it) is returned unsent and counted in
   * `txDroppedNoRoom`. @returns false when the tap had no room (the device waits for it to be
   * writable), else true.
   */
  #flushTx(a: Active, table: IovTable, n: number, total: number): boolean {
    const { tx, ctx } = a;
    const mem = ctx.mem;
    const io = this.#txIo;
    const counts = this.#txCounts;
    const b = this.#backend;
    let start = 0; // the first frame not yet sent or dropped; its triples are the table's first
    while (start < n) {
      const m = n - start;
      for (let k = 0; k < m; k++) io[k] = counts[start + k] as number;
      try {
        if (b.writeTableBatch === undefined) throw new VirtioDeviceError("Io", `backend ${b.name} has no writeTableBatch any more`);
        b.writeTableBatch(table, m, io);
      } catch (e) {
        // Refused as a whole (a closed backend): every frame of it is lost, as a lone frame is.
        this.#violation((e as Error).message);
        for (let k = 0; k < m; k++) io[k] = -EIO;
      }
      let k = 0;
      for (; k < m; k++) {
        const r = io[k] as number;
        if (r === -EAGAIN || r === -ECANCELED) break;
        const i = start + k;
        if (r >= 0) {
          this.metrics.txTable++;
          this.metrics.txFrames++;
          this.metrics.txBytes += (this.#txLens[i] as number) - NET_HDR_SIZE;
        } else {
          this.metrics.txTapErrors++;
          this.#violation(`tap ${b.name}: write: ${VmmSysError.fromErrno("writev", -r).message}`);
        }
        tx.addUsedDeferred(mem, this.#txHeads[i] as number, 0);
        this.#txReturned = true;
      }
      if (k === m) return true;
      if (io[k] === -EAGAIN) {
        this.#giveBackTx(a, start + k, n);
        this.metrics.txTapFull++;
        this.#txWaitsForBackend = true;
        return false;
      }
      if (k === 0) {
        // Cancelled with nothing before it (a backend breaking its contract): dropped, so the loop ends.
        this.metrics.txTapErrors++;
        this.#violation(`tap ${b.name}: write: cancelled`);
        tx.addUsedDeferred(mem, this.#txHeads[start] as number, 0);
        this.#txReturned = true;
        k = 1;
      }
      // Cancelled behind a refused frame: the rest again, their triples moved to the front.
      let done = 0;
      for (let j = start; j < start + k; j++) done += counts[j] as number;
      table.spans.copyWithin(0, 3 * done, 3 * total);
      total -= done;
      start += k;
    }
    return true;
  }

  /** Gives the batch's frames `from`..`n - 1` back to the ring, newest first (see {@link #flushTx}). */
  #giveBackTx(a: Active, from: number, n: number): void {
    const { tx, ctx } = a;
    for (let i = n - 1; i >= from; i--) {
      try {
        tx.undoPop(this.#txChain);
      } catch {
        // The queue cannot rewind past this chain (or any older one): they are returned unsent.
        this.#violation(`${i - from + 1} transmit frame(s) returned unsent: the tap had no room, and a malformed chain popped after them keeps them from going back to the ring`);
        for (let j = from; j <= i; j++) {
          this.metrics.txDroppedNoRoom++;
          tx.addUsedDeferred(ctx.mem, this.#txHeads[j] as number, 0);
        }
        this.#txReturned = true;
        return;
      }
    }
  }
}

/** Sets byte `pos` of the bytes that `iov` views in order (pos is inside them). */
function setIovByte(iov: readonly Uint8Array[], pos: number, value: number): void {
  for (let i = 0; i < iov.length; i++) {
    const v = iov[i] as Uint8Array;
    if (pos < v.length) {
      v[pos] = value;
      return;
    }
    pos -= v.length;
  }
}

/**
 * Sets byte `pos` of the bytes that an {@link IovTable}'s triples name in order (view 0 the
 * spare, `1 + i` `regions[i]`; pos is inside the chain's buffers, which come before the spare).
 */
function setSpanByte(regions: readonly GuestMemoryRegion[], spans: Float64Array, pos: number, value: number): void {
  for (let j = 0; j + 2 < spans.length && spans[j] !== 0; j += 3) {
    const len = spans[j + 2] as number;
    if (pos < len) {
      (regions[(spans[j] as number) - 1] as GuestMemoryRegion).bytes[(spans[j + 1] as number) + pos] = value;
      return;
    }
    pos -= len;
  }
}

/** Marks the first `n` bytes of a device-writable chain dirty (writes through views are not tracked). */
function markChainDirty(mem: GuestMemory, c: ReusableChain, n: number): void {
  for (let i = 0; i < c.length && n > 0; i++) {
    const k = Math.min(c.lenAt(i), n);
    if (k > 0) mem.markDirty?.(c.addrAt(i), k);
    n -= k;
  }
}
