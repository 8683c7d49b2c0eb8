import { closeSync, fdatasync, fdatasyncSync, fstatSync, openSync } from "node:fs";
import { basename } from "node:path";
import { GuestMemoryError, type GuestMemory } from "@ts-vmm/vm-memory";
import { VirtqueueError, type DescriptorChain, type Queue } from "@ts-vmm/virtio-queue";
import { fallocate } from "@ts-vmm/vmm-sys-util";
import {
  SECTOR_SIZE,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  parseRequest,
  type Segment,
} from "./blk-request.js";
import { transferAsync, transferSync, viewsOf, writeSegments, zeroRange } from "./blk-io.js";
import { VIRTIO_ID_BLOCK } from "./constants.js";
import type { ActivateContext, DeviceState, VirtioDevice } from "./device.js";
import { VirtioDeviceError } from "./errors.js";
import { QueuePoll } from "./queue-poll.js";
import { RateLimiter, type RateLimiterConfig, type RateLimiterState } from "./rate-limiter.js";

/** virtio-blk feature bits (§5.2.3). */
export const VIRTIO_BLK_F_SIZE_MAX = 1n << 1n;
/** seg_max in config is valid. */
export const VIRTIO_BLK_F_SEG_MAX = 1n << 2n;
/** The device is read-only. */
export const VIRTIO_BLK_F_RO = 1n << 5n;
/** blk_size in config is valid. */
export const VIRTIO_BLK_F_BLK_SIZE = 1n << 6n;
/** FLUSH is supported. */
export const VIRTIO_BLK_F_FLUSH = 1n << 9n;
/** DISCARD is supported. */
export const VIRTIO_BLK_F_DISCARD = 1n << 13n;
/** WRITE_ZEROES is supported. */
export const VIRTIO_BLK_F_WRITE_ZEROES = 1n << 14n;

/** Queue size offered. */
const QUEUE_SIZE = 256;
/** Largest data part of one request; also seg_max × size_max in config, so a conforming driver never exceeds it. */
export const BLK_MAX_REQUEST_BYTES = 32 * 1024 * 1024;
const SIZE_MAX = 256 * 1024;
const SEG_MAX = BLK_MAX_REQUEST_BYTES / SIZE_MAX;
/** Most segments in one DISCARD / WRITE_ZEROES request, and most sectors per segment. */
const MAX_DISCARD_SEG = 16;
const MAX_DISCARD_SECTORS = 0x3f_ffff; // 2 GiB - 512 per segment
const CONFIG_SIZE = 60;
/** One notification handles at most this many requests, or this many bytes, before yielding to the event loop. */
const BATCH_REQUESTS = 256;
const BATCH_BYTES = 16 * 1024 * 1024;
/** With polling: one turn of the event loop polls and handles requests for at most this long (ms), then yields. */
const TURN_MS = 1;
/** Largest `pollMaxUs`. */
const POLL_MAX_US = 1000;
const ID_BYTES = 20;
const WRITE_ZEROES_F_UNMAP = 1;

/** Options of {@link VirtioBlock.open}. */
export interface VirtioBlockOptions {
  /** Open the image read-only and offer VIRTIO_BLK_F_RO. Default false. */
  readonly readOnly?: boolean;
  /** GET_ID string (printable ASCII, at most 20 bytes). Default: the file name, non-ASCII as "?", cut to 20 bytes. */
  readonly id?: string;
  /**
   * `"sync"` (default): each request's file I/O runs on the device thread before
   * the next is popped (as Firecracker's sync engine). `"async"`: file I/O runs
   * on libuv's thread pool, many requests in flight at once, completed out of order.
   */
  readonly engine?: "sync" | "async";
  /**
   * Limits requests (the ops bucket) and their data bytes (the bandwidth bucket:
   * the chain's length minus the 16-byte header and the status byte). A
   * {@link RateLimiter} instance can be updated later; a config makes one.
   * Default: no limit.
   */
  readonly rateLimiter?: RateLimiter | RateLimiterConfig;
  /**
   * Sync engine only: after running out of requests, keep looking at the avail ring
   * for up to this many microseconds before going back to the event loop, with
   * notifications from the driver suppressed meanwhile (VRING_USED_F_NO_NOTIFY
   * without EVENT_IDX). The window adapts (see DESIGN.md, "virtio-blk polling"): it
   * grows while the driver's next request comes within `pollMaxUs` of the previous
   * completion and shrinks or stops when it does not, so an idle or slow guest costs
   * nothing; one turn of the event loop polls for at most 1 ms, then yields. A
   * number from 0 to 1000; default 0 (off).
   */
  readonly pollMaxUs?: number;
  /** The clock polling reads, in milliseconds (default `performance.now`); tests inject one. */
  readonly pollClock?: () => number;
}

/** virtio-blk's saved state. */
export interface VirtioBlockState extends DeviceState {
  /** Always 2. */
  readonly deviceType: 2;
  /** Capacity in sectors when saved (restore checks the image still has it). */
  readonly capacity: string;
  /** Whether the image was read-only. */
  readonly readOnly: boolean;
  /** The rate limiter's buckets (tokens and burst left), null without one; absent in states written before it was saved. */
  readonly rateLimiter?: RateLimiterState | null;
}

interface Active {
  readonly ctx: ActivateContext;
  readonly queue: Queue;
  broken: boolean;
}

type Done = (status: number, written: number) => void;

/**
 * virtio-blk (§5.2) over a raw image file: IN, OUT, FLUSH (fdatasync before the
 * status byte), GET_ID, DISCARD (punch hole) and WRITE_ZEROES (zero range or
 * punch hole), one request queue. File I/O goes straight between the file and
 * views of guest memory (readv/writev), no copies.
 *
 * Every request is checked before any I/O: header present, status byte
 * device-writable and in guest memory, data direction matching the type,
 * data a multiple of 512, sectors inside the image (in 64-bit arithmetic),
 * every data buffer inside guest memory. A failed check completes the
 * request with IOERR (UNSUPP for unknown types) and never touches the file;
 * a chain the queue rejects, or one without a usable status byte, sets
 * DEVICE_NEEDS_RESET.
 */
export class VirtioBlock implements VirtioDevice {
  /** {@inheritDoc VirtioDevice.deviceType} */
  readonly deviceType = VIRTIO_ID_BLOCK;
  /** {@inheritDoc VirtioDevice.queueMaxSizes} */
  readonly queueMaxSizes: readonly number[] = [QUEUE_SIZE];
  /** {@inheritDoc VirtioDevice.configSize} */
  readonly configSize = CONFIG_SIZE;
  /** Capacity in 512-byte sectors (the image size rounded down). */
  readonly capacity: bigint;
  /** Whether the image is read-only. */
  readonly readOnly: boolean;
  readonly #fd: number;
  readonly #id: Uint8Array;
  readonly #config: Uint8Array;
  readonly #async: boolean;
  /** Polling state (sync engine with `pollMaxUs` > 0). */
  readonly #poll: QueuePoll | undefined;
  #active: Active | undefined;
  /** Between pause and resume: no request is taken (a turn queued by a yield does nothing). */
  #paused = false;
  #inFlight = 0;
  #closed = false;
  /**
   * Requests completed with each status since creation (OK, IOERR, UNSUPP); `throttled`: waits
   * for the rate limiter; `readBytes`/`writeBytes`: data bytes of the reads and writes that
   * completed OK (a failed transfer adds nothing).
   */
  readonly stats = { ok: 0, ioerr: 0, unsupp: 0, needsReset: 0, throttled: 0, readBytes: 0, writeBytes: 0 };
  /**
   * Polling (`pollMaxUs`): requests found by polling the avail ring (`hits`), poll
   * windows that ended without one (`misses`), and the current window in microseconds.
   * All 0 when polling is off.
   */
  get pollStats(): { readonly hits: number; readonly misses: number; readonly windowUs: number } {
    const p = this.#poll;
    return { hits: p?.hits ?? 0, misses: p?.misses ?? 0, windowUs: (p?.windowMs ?? 0) * 1000 };
  }
  /** The rate limiter, if any (update it with `rateLimiter.update`). */
  readonly rateLimiter: RateLimiter | undefined;

  private constructor(fd: number, size: number, readOnly: boolean, id: string, engine: "sync" | "async", limiter: RateLimiter | undefined, pollMaxUs: number, pollClock: () => number) {
    this.#fd = fd;
    this.rateLimiter = limiter;
    if (limiter !== undefined) limiter.onReady = () => this.queueNotify(0);
    this.readOnly = readOnly;
    this.capacity = BigInt(Math.floor(size / SECTOR_SIZE));
    this.#async = engine === "async";
    this.#poll = pollMaxUs > 0 && !this.#async ? new QueuePoll(pollMaxUs / 1000, pollClock) : undefined;
    this.#id = new Uint8Array(ID_BYTES);
    this.#id.set(new TextEncoder().encode(id).subarray(0, ID_BYTES));
    const c = new DataView(new ArrayBuffer(CONFIG_SIZE));
    c.setBigUint64(0, this.capacity, true);
    c.setUint32(8, SIZE_MAX, true);
    c.setUint32(12, SEG_MAX, true);
    c.setUint32(20, SECTOR_SIZE, true); // blk_size
    c.setUint32(36, MAX_DISCARD_SECTORS, true);
    c.setUint32(40, MAX_DISCARD_SEG, true);
    c.setUint32(44, 1, true); // discard_sector_alignment
    c.setUint32(48, MAX_DISCARD_SECTORS, true);
    c.setUint32(52, MAX_DISCARD_SEG, true);
    c.setUint8(56, 1); // write_zeroes_may_unmap
    this.#config = new Uint8Array(c.buffer);
  }

  /**
   * Opens a raw image.
   * @throws {@link VirtioDeviceError} `"Io"` if the file cannot be opened or is not a regular file;
   *   `"InvalidArgument"` for bad options.
   */
  static open(path: string, opts: VirtioBlockOptions = {}): VirtioBlock {
    const readOnly = opts.readOnly ?? false;
    const engine = opts.engine ?? "sync";
    if (typeof readOnly !== "boolean" || (engine !== "sync" && engine !== "async")) {
      throw new VirtioDeviceError("InvalidArgument", "readOnly must be a boolean and engine \"sync\" or \"async\"");
    }
    const pollMaxUs = opts.pollMaxUs ?? 0;
    if (typeof pollMaxUs !== "number" || !Number.isFinite(pollMaxUs) || pollMaxUs < 0 || pollMaxUs > POLL_MAX_US) {
      throw new VirtioDeviceError("InvalidArgument", `pollMaxUs must be a number from 0 to ${POLL_MAX_US}`);
    }
    const pollClock = opts.pollClock ?? (() => performance.now());
    if (typeof pollClock !== "function") throw new VirtioDeviceError("InvalidArgument", "pollClock must be a function");
    const limiter = opts.rateLimiter === undefined || opts.rateLimiter instanceof RateLimiter ? opts.rateLimiter : new RateLimiter(opts.rateLimiter);
    // Default: the file name, with anything but printable ASCII as "?", cut to 20 bytes.
    const id = opts.id ?? basename(path).replace(/[^\x20-\x7e]/g, "?").slice(0, ID_BYTES);
    if (typeof id !== "string" || !/^[\x20-\x7e]*$/.test(id) || id.length > ID_BYTES) {
      throw new VirtioDeviceError("InvalidArgument", `id must be at most ${ID_BYTES} printable ASCII characters`);
    }
    let fd: number;
    try {
      fd = openSync(path, readOnly ? "r" : "r+");
    } catch (e) {
      throw new VirtioDeviceError("Io", `cannot open disk image ${path}: ${(e as Error).message}`, { cause: e });
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new VirtioDeviceError("Io", `disk image ${path} is not a regular file`);
      return new VirtioBlock(fd, st.size, readOnly, id, engine, limiter, pollMaxUs, pollClock);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** {@inheritDoc VirtioDevice.deviceFeatures} */
  get deviceFeatures(): bigint {
    return (
      VIRTIO_BLK_F_SIZE_MAX |
      VIRTIO_BLK_F_SEG_MAX |
      VIRTIO_BLK_F_BLK_SIZE |
      VIRTIO_BLK_F_FLUSH |
      VIRTIO_BLK_F_DISCARD |
      VIRTIO_BLK_F_WRITE_ZEROES |
      (this.readOnly ? VIRTIO_BLK_F_RO : 0n)
    );
  }

  /** {@inheritDoc VirtioDevice.readConfig} */
  readConfig(offset: number, data: Uint8Array): void {
    data.fill(0);
    if (offset < 0 || offset >= CONFIG_SIZE) return;
    data.set(this.#config.subarray(offset, Math.min(CONFIG_SIZE, offset + data.length)));
  }

  /** Config writes are ignored: every field is read-only here (no CONFIG_WCE). */
  writeConfig(_offset: number, _data: Uint8Array): void {}

  /** {@inheritDoc VirtioDevice.activate} */
  activate(ctx: ActivateContext): void {
    const queue = ctx.queues[0];
    if (queue === undefined) return;
    this.#active = { ctx, queue, broken: false };
  }

  /** {@inheritDoc VirtioDevice.reset} */
  reset(): void {
    this.#active = undefined;
    this.rateLimiter?.cancel();
    this.#poll?.forget();
  }

  /**
   * Stops taking requests: a turn this device queued for itself (after a batch or a
   * polling turn) does nothing until {@link VirtioBlock.resume}, and the driver's
   * notifications are asked for again (none stay suppressed in a snapshot's guest memory).
   */
  pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    this.#poll?.forget();
    const a = this.#active;
    if (a !== undefined && !a.broken && a.queue.ready) this.#enableNotification(a);
  }

  /** Takes requests again, starting with one turn as if the driver had notified. */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.queueNotify(0);
  }

  /** {@inheritDoc VirtioDevice.busy} */
  busy(): boolean {
    return this.#inFlight > 0;
  }

  /** Closes the image (after the last request completed). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#active = undefined;
    closeSync(this.#fd);
  }

  /** {@inheritDoc VirtioDevice.state} */
  state(): VirtioBlockState {
    return { deviceType: VIRTIO_ID_BLOCK, capacity: this.capacity.toString(), readOnly: this.readOnly, rateLimiter: this.rateLimiter?.state() ?? null };
  }

  /** {@inheritDoc VirtioDevice.restoreState} */
  restoreState(state: DeviceState): void {
    const s = state as Partial<VirtioBlockState>;
    if (s.deviceType !== VIRTIO_ID_BLOCK || s.capacity !== this.capacity.toString() || s.readOnly !== this.readOnly) {
      throw new VirtioDeviceError("InvalidState", "virtio-blk state does not match this image (capacity or read-only differ)");
    }
    if (s.rateLimiter !== undefined && s.rateLimiter !== null) this.rateLimiter?.restoreState(s.rateLimiter);
  }

  /** {@inheritDoc VirtioDevice.queueNotify} */
  queueNotify(index: number): void {
    const a = this.#active;
    if (index !== 0 || a === undefined || a.broken || !a.queue.ready || this.#paused) return;
    const { mem } = a.ctx;
    let n = 0;
    let bytes = 0;
    const limiter = this.rateLimiter;
    const poll = this.#poll;
    const start = poll?.now() ?? 0;
    // Polling: the end of the current window (-1: not polling), and whether the
    // driver's notifications are suppressed (they must be asked for again before we leave).
    let deadline = -1;
    let suppressed = false;
    let yielded = false;
    for (;;) {
      // Rate-limited: the requests stay in the ring; the limiter's timer resumes.
      if (limiter?.blocked) break;
      let chain: DescriptorChain | undefined;
      try {
        chain = a.queue.popDescriptorChain(mem);
      } catch (e) {
        if (!(e instanceof VirtqueueError)) throw e;
        this.#broken(a, `virtio-blk queue: ${e.code}: ${e.message}`);
        break;
      }
      if (chain === undefined) {
        if (poll === undefined) {
          // EVENT_IDX: ask for the next notification, then look once more (the driver may have raced us).
          if (a.queue.eventIdx && this.#enableNotification(a)) continue;
          break;
        }
        const now = poll.now();
        poll.idle(now);
        if (deadline < 0) {
          if (poll.windowMs > 0 && now - start < TURN_MS) {
            // Out of work: publish what completed (the driver may be waiting on it), then poll.
            this.#signal(a);
            if (a.broken || this.#active !== a) break;
            if (!this.#disableNotification(a)) break;
            suppressed = true;
            deadline = now + poll.windowMs;
            continue;
          }
        } else if (now < deadline) {
          continue;
        } else {
          poll.miss();
        }
        deadline = -1;
        // Leaving: notifications on again, then one more look (the driver may have raced us).
        suppressed = false;
        if (this.#enableNotification(a)) continue;
        break;
      }
      if (poll !== undefined) {
        const now = poll.now();
        if (deadline >= 0) poll.hit();
        deadline = -1;
        poll.arrived(now);
      }
      if (limiter !== undefined && !limiter.consume(Math.max(0, chain.readableLength + chain.writableLength - 17), 1)) {
        this.stats.throttled++;
        this.#undoPop(a, chain);
        break;
      }
      bytes += chain.readableLength + chain.writableLength;
      this.#handle(a, chain);
      if (a.broken || this.#active !== a) break;
      if (++n >= BATCH_REQUESTS || bytes >= BATCH_BYTES || (poll !== undefined && poll.now() - start >= TURN_MS)) {
        // Yield to the event loop (other devices, MMIO exits, timers), then go on:
        // a guest refilling as fast as we complete must not starve them.
        setImmediate(() => this.queueNotify(0));
        yielded = true;
        break;
      }
    }
    // Never leave with the driver's notifications off, unless a turn of our own is already queued.
    if (suppressed && !yielded && this.#active === a && !a.broken) this.#enableNotification(a);
    this.#signal(a);
  }

  /** Puts a chain back in the ring (rate-limited): it is popped again when the limiter allows. */
  #undoPop(a: Active, chain: DescriptorChain): boolean {
    try {
      a.queue.undoPop(chain);
      return true;
    } catch (e) {
      if (!(e instanceof VirtqueueError)) throw e;
      this.#broken(a, `virtio-blk queue: ${e.message}`);
      return false;
    }
  }

  #enableNotification(a: Active): boolean {
    try {
      return a.queue.enableNotification(a.ctx.mem);
    } catch (e) {
      if (!(e instanceof VirtqueueError)) throw e;
      this.#broken(a, `virtio-blk queue: ${e.message}`);
      return false;
    }
  }

  /** Asks the driver not to notify (while polling). @returns false if the queue broke. */
  #disableNotification(a: Active): boolean {
    try {
      a.queue.disableNotification(a.ctx.mem);
      return true;
    } catch (e) {
      if (!(e instanceof VirtqueueError)) throw e;
      this.#broken(a, `virtio-blk queue: ${e.message}`);
      return false;
    }
  }

  #broken(a: Active, reason: string): void {
    a.broken = true;
    this.stats.needsReset++;
    a.ctx.interrupt.needsReset(reason);
  }

  /**
   * Publishes the used entries completed since the last call (they are added deferred:
   * one used-index store per turn, not per request) and interrupts if the driver wants it.
   * Every turn and every async completion ends here.
   */
  #signal(a: Active): void {
    if (this.#active !== a) return;
    if (a.broken) {
      // No interrupt for a broken queue, but what completed before it broke is published,
      // as when each completion published its own entry.
      try {
        if (a.queue.ready) a.queue.publishUsed(a.ctx.mem);
      } catch (e) {
        if (!(e instanceof VirtqueueError)) throw e;
      }
      return;
    }
    try {
      // needsNotification publishes the deferred entries before it decides.
      if (a.queue.needsNotification(a.ctx.mem)) a.ctx.interrupt.signalUsedQueue(0);
    } catch (e) {
      if (!(e instanceof VirtqueueError)) throw e;
      this.#broken(a, `virtio-blk used ring: ${e.message}`);
    }
  }

  #countBytes(isRead: boolean, n: number): void {
    if (isRead) this.stats.readBytes += n;
    else this.stats.writeBytes += n;
  }

  /**
   * Completes a chain: status byte, used entry (only if the activation is still current).
   * The entry is deferred; the caller's turn (or the async completion) publishes it in `#signal`.
   */
  #complete(a: Active, chain: DescriptorChain, statusAddr: number, status: number, written: number): void {
    if (status === VIRTIO_BLK_S_OK) this.stats.ok++;
    else if (status === VIRTIO_BLK_S_UNSUPP) this.stats.unsupp++;
    else this.stats.ioerr++;
    if (this.#active !== a || a.broken) return; // reset since: the guest no longer owns this chain
    try {
      a.ctx.mem.writeU8(statusAddr, status);
      a.queue.addUsedDeferred(a.ctx.mem, chain.head, written + 1);
    } catch (e) {
      if (!(e instanceof VirtqueueError) && !(e instanceof GuestMemoryError)) throw e;
      this.#broken(a, `virtio-blk completion: ${(e as Error).message}`);
    }
  }

  #handle(a: Active, chain: DescriptorChain): void {
    const { mem } = a.ctx;
    const req = parseRequest(mem, chain);
    if (!req.ok) {
      if (req.statusAddr === undefined) {
        this.#broken(a, `virtio-blk request ${chain.head}: ${req.reason}`);
        return;
      }
      this.#complete(a, chain, req.statusAddr, VIRTIO_BLK_S_IOERR, 0);
      return;
    }
    const statusAddr = req.statusAddr;
    // The sync paths complete in place; only the async engine needs closures.
    const done = (status: number, written: number): void => this.#complete(a, chain, statusAddr, status, written);
    const asyncDone: Done = (status, written) => {
      this.#inFlight--;
      done(status, written);
      this.#signal(a);
    };
    const err = (): void => this.#complete(a, chain, statusAddr, VIRTIO_BLK_S_IOERR, 0);
    if (req.mixed) return err();
    switch (req.type) {
      case VIRTIO_BLK_T_IN:
      case VIRTIO_BLK_T_OUT: {
        const isRead = req.type === VIRTIO_BLK_T_IN;
        if (req.dataLen > 0 && req.dataWritable !== isRead) return err();
        if (req.dataLen % SECTOR_SIZE !== 0 || req.dataLen > BLK_MAX_REQUEST_BYTES) return err();
        if (!isRead && this.readOnly) return err();
        const sectors = BigInt(req.dataLen / SECTOR_SIZE);
        if (req.sector > this.capacity || sectors > this.capacity - req.sector) return err();
        const views = viewsOf(mem, req.data);
        if (views === undefined) return err();
        const pos = Number(req.sector) * SECTOR_SIZE;
        if (req.dataLen === 0) return done(VIRTIO_BLK_S_OK, 0);
        if (this.#async) {
          this.#inFlight++;
          transferAsync(this.#fd, views, pos, !isRead, req.dataLen, (ok) => {
            if (ok) this.#countBytes(isRead, req.dataLen);
            if (ok && isRead) for (const s of req.data) mem.markDirty?.(s.addr, s.len);
            asyncDone(ok ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR, ok && isRead ? req.dataLen : 0);
          });
          return;
        }
        const ok = transferSync(this.#fd, views, pos, !isRead, req.dataLen);
        if (ok) this.#countBytes(isRead, req.dataLen);
        if (ok && isRead && mem.markDirty !== undefined) for (const s of req.data) mem.markDirty(s.addr, s.len);
        return this.#complete(a, chain, statusAddr, ok ? VIRTIO_BLK_S_OK : VIRTIO_BLK_S_IOERR, ok && isRead ? req.dataLen : 0);
      }
      case VIRTIO_BLK_T_FLUSH: {
        if (req.dataLen !== 0) return err();
        if (this.#async) {
          this.#inFlight++;
          fdatasync(this.#fd, (e) => asyncDone(e ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK, 0));
          return;
        }
        try {
          fdatasyncSync(this.#fd);
        } catch {
          return err();
        }
        return done(VIRTIO_BLK_S_OK, 0);
      }
      case VIRTIO_BLK_T_GET_ID: {
        if (!req.dataWritable || req.dataLen === 0) return err();
        const n = Math.min(ID_BYTES, req.dataLen);
        if (!writeSegments(mem, req.data, this.#id.subarray(0, n))) return err();
        return done(VIRTIO_BLK_S_OK, n);
      }
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES:
        return done(this.#discardOrZero(mem, req.type, req.data, req.dataLen, req.dataWritable), 0);
      default:
        return done(VIRTIO_BLK_S_UNSUPP, 0);
    }
  }

  #discardOrZero(mem: GuestMemory, type: number, data: readonly Segment[], len: number, writable: boolean): number {
    if (writable || len === 0 || len % 16 !== 0 || len / 16 > MAX_DISCARD_SEG) return VIRTIO_BLK_S_IOERR;
    if (this.readOnly) return VIRTIO_BLK_S_IOERR;
    const raw = new Uint8Array(len);
    let at = 0;
    for (const s of data) {
      try {
        mem.read(s.addr, raw.subarray(at, at + s.len));
      } catch {
        return VIRTIO_BLK_S_IOERR;
      }
      at += s.len;
    }
    const dv = new DataView(raw.buffer);
    const ranges: [number, number, boolean][] = [];
    for (let i = 0; i < len; i += 16) {
      const sector = dv.getBigUint64(i, true);
      const num = dv.getUint32(i + 8, true);
      const flags = dv.getUint32(i + 12, true);
      // §5.2.6.2: DISCARD takes no flags; WRITE_ZEROES only UNMAP. Other bits: UNSUPP.
      if (type === VIRTIO_BLK_T_DISCARD ? flags !== 0 : (flags & ~WRITE_ZEROES_F_UNMAP) !== 0) return VIRTIO_BLK_S_UNSUPP;
      if (num === 0 || num > MAX_DISCARD_SECTORS) return VIRTIO_BLK_S_IOERR;
      if (sector > this.capacity || BigInt(num) > this.capacity - sector) return VIRTIO_BLK_S_IOERR;
      ranges.push([Number(sector) * SECTOR_SIZE, num * SECTOR_SIZE, (flags & WRITE_ZEROES_F_UNMAP) !== 0]);
    }
    for (const [off, n, unmap] of ranges) {
      if (type === VIRTIO_BLK_T_DISCARD) {
        try {
          fallocate(this.#fd, off, n, "punchHole");
        } catch (e) {
          // Discard is a hint (§5.2.6.2): a file system that cannot punch holes keeps the data.
          if ((e as { code?: string }).code !== "EOPNOTSUPP") return VIRTIO_BLK_S_IOERR;
        }
        continue;
      }
      if (!zeroRange(this.#fd, off, n, unmap)) return VIRTIO_BLK_S_IOERR;
    }
    return VIRTIO_BLK_S_OK;
  }
}
