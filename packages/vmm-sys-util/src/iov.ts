import { constants } from "node:os";
import { VmmSysError, invalid } from "./errors.js";
import { native } from "./native.js";
import { describe } from "./validate.js";

const { EAGAIN, EINVAL, ERANGE } = constants.errno;
/** Linux's IOV_MAX. */
const IOV_MAX = 1024;

/**
 * The addon's `readv(2)` or `writev(2)` itself, for hot paths (a tap's frames): one system
 * call over byte views in order, given as an array (`fn(fd, views, count?)`: its first `count`
 * elements, all by default) or as arguments (`fn(fd, a, b)`: faster, no array to walk).
 * Returns the bytes transferred, or a negative errno when it failed or was refused.
 * It never throws: `-EAGAIN` is what a non-blocking fd with nothing to read (or no room) gives,
 * `-EINVAL` means a bad argument (fd not an int32 ≥ 0, `views` not an array, `count` not an
 * integer in [0, views.length], more than IOV_MAX (1024) views, an element that is not a
 * `Uint8Array`), `-ERANGE` a view outside its buffer; the system call's own errors come as
 * they are (EINTR is retried). The addon checks every view against its buffer's backing store
 * before the call, so the kernel reads or writes only inside the views.
 *
 * Safety: a view over memory another thread (or a guest) writes during the call sees torn
 * bytes, never bytes outside it. The views are used only during the call.
 */
export interface NativeIov {
  /** Over the first `count` elements of `views` (all by default). */
  (fd: number, views: readonly Uint8Array[], count?: number): number;
  /** Over the views given as arguments (at least one). */
  (fd: number, first: Uint8Array, ...more: Uint8Array[]): number;
}

/** Frees a dropped table's native state (its references to the buffers). */
const tablesDropped = new FinalizationRegistry<number>((id) => {
  native().iovTableFree(id);
});

/**
 * Byte views registered once for many `readv(2)` / `writev(2)` calls that name their pieces as
 * (view index, byte offset, length) triples in {@link IovTable.spans}: the fastest form, for
 * a device's data path (a tap's frames), since a call hands the addon no view at all — the
 * addon checked the views when the table was made, and checks each triple (read once) against
 * them on every call. Every buffer must be a fixed-length SharedArrayBuffer (guest memory is
 * one); the table holds a reference to each buffer's memory until it is closed or collected,
 * so the kernel only ever reads or writes inside the views.
 *
 * A table belongs to the thread that made it (its id means nothing on another thread).
 *
 * Safety: as {@link NativeIov}; {@link IovTable.spans} may be written by another thread (each
 * triple is read once and checked before it is used).
 *
 * @example
 * ```ts
 * const hdr = new Uint8Array(new SharedArrayBuffer(12));
 * const table = IovTable.create([hdr, guestRegionView], 4);
 * table.spans.set([0, 0, 12, 1, 0x1000, 1514]); // hdr, then 1514 bytes at 0x1000 of view 1
 * const n = table.writev(tapFd, 2); // bytes written, or -errno
 * table.close();
 * ```
 */
export class IovTable {
  /** The triples: piece `i` is bytes `[spans[3i+1], +spans[3i+2])` of view `spans[3i]` (in the order given to {@link IovTable.create}). */
  readonly spans: Float64Array;
  #id: number;
  readonly #readv: (fd: number, id: number, count: number) => number;
  readonly #writev: (fd: number, id: number, count: number) => number;
  readonly #writevBatch: (fd: number, id: number, n: number, io: Int32Array) => number;

  private constructor(spans: Float64Array, id: number) {
    this.spans = spans;
    this.#id = id;
    const n = native();
    this.#readv = n.readvTable;
    this.#writev = n.writevTable;
    this.#writevBatch = n.writevTableBatch;
    tablesDropped.register(this, id, this);
  }

  /**
   * A table over `views` with room for `maxSpans` triples (at most 1024, Linux's IOV_MAX).
   * @param views - one to eight `Uint8Array`s over SharedArrayBuffers (not growable ones)
   * @param maxSpans - pieces a call may name
   * @throws VmmSysError `InvalidArgument` for a view that is not a `Uint8Array` over a
   *   SharedArrayBuffer, no view or more than eight, or a bad `maxSpans`; `OutOfBounds` for a
   *   view outside its buffer; `Unsupported` if the addon does not load
   */
  static create(views: readonly Uint8Array[], maxSpans = IOV_MAX): IovTable {
    if (!Number.isInteger(maxSpans) || maxSpans < 1 || maxSpans > IOV_MAX) throw invalid(`IovTable: maxSpans must be an integer in [1, ${IOV_MAX}], got ${describe(maxSpans)}`);
    if (!Array.isArray(views) || views.length < 1 || views.length > 8) throw invalid(`IovTable: between one and eight views, got ${describe(views)}`);
    const spans = new Float64Array(new SharedArrayBuffer(maxSpans * 3 * 8));
    const id = native().iovTable(spans, ...views);
    if (id < 0) {
      if (id === -ERANGE) throw new VmmSysError("OutOfBounds", "IovTable: a view is outside its buffer");
      if (id === -EINVAL) throw invalid(`IovTable: every view must be a Uint8Array over a SharedArrayBuffer, got ${describe(views)}`);
      throw VmmSysError.fromErrno("iovTable", -id);
    }
    return new IovTable(spans, id);
  }

  /** Whether {@link IovTable.close} was called. */
  get closed(): boolean {
    return this.#id === 0;
  }

  /**
   * `writev(2)` of the first `count` pieces to `fd`, in order.
   * @returns the bytes written, or a negative errno (`-EAGAIN` when a non-blocking fd has no
   *   room; `-EINVAL` for a bad fd or `count`, a bad triple, or a closed table; `-ERANGE` for
   *   a piece outside its view). Never throws.
   */
  writev(fd: number, count: number): number {
    return this.#writev(fd, this.#id, count);
  }

  /**
   * Several `writev(2)` calls in one system call: message `i` (a tap frame) is the next `io[i]`
   * pieces of {@link IovTable.spans} (message 0 from triple 0, message 1 right after it, …),
   * written in order; on return `io[i]` is its result, the bytes written or a negative errno.
   * The batch stops at the first message that fails or is written short: every later one is
   * `-ECANCELED`, not written. Three messages or more go as one io_uring submission of linked
   * writes, each with RWF_NOWAIT (a full fd answers `-EAGAIN` at once, as a non-blocking
   * writev does), on kernels that allow it (Linux 5.5+; see {@link iovBatchRing}); fewer, or
   * without a ring, a loop of `pwritev2(RWF_NOWAIT)` with the same results (one or two writes
   * cost less that way). A file that refuses RWF_NOWAIT (no `FMODE_NOWAIT`: a pipe opened
   * blocking, say) is written with plain writev(2), which blocks on a blocking fd as writev
   * does: pass a non-blocking fd (a tap opened by `TapBackend` is). A message the kernel took but
   * whose completion could not be seen is `-EIO`: its outcome is unknown, do not write it again.
   * @param n - messages, 1 to {@link IOV_BATCH_MAX}; their pieces together at most the table's `maxSpans`
   * @param io - `n` piece counts in (each 1 to 1024), results out
   * @returns 0, or a negative errno with `io` unchanged (`-EINVAL` for a bad fd, `n` or count,
   *   a bad triple, a closed table; `-ERANGE` for a piece outside its view). Never throws.
   */
  writevBatch(fd: number, n: number, io: Int32Array): number {
    return this.#writevBatch(fd, this.#id, n, io);
  }

  /**
   * `readv(2)` of `fd` into the first `count` pieces, in order.
   * @returns the bytes read, or a negative errno as {@link IovTable.writev}. Never throws.
   */
  readv(fd: number, count: number): number {
    return this.#readv(fd, this.#id, count);
  }

  /** Drops the table's references to the buffers now (else when it is collected); later calls answer -EINVAL. Idempotent. */
  close(): void {
    if (this.#id === 0) return;
    tablesDropped.unregister(this);
    native().iovTableFree(this.#id);
    this.#id = 0;
  }
}

/** Most messages one {@link IovTable.writevBatch} takes. */
export const IOV_BATCH_MAX = 256;

/**
 * Whether {@link IovTable.writevBatch} on this thread submits through io_uring (true) or
 * loops over writev(2) (false: io_uring refused by the kernel, or turned off here). `on`
 * turns the ring off (false) or back on (true) first, for this thread: a test of the loop, or
 * a host whose io_uring misbehaves.
 * @throws VmmSysError `Unsupported` if the addon does not load
 */
export function iovBatchRing(on?: boolean): boolean {
  return native().iovBatchRing(on) === 1;
}

/**
 * Loads the addon and returns its {@link NativeIov} `readv` (that of the binding set with
 * `setNativeBinding` at the time of the call, if any). About 0.1 µs over the system call;
 * node:fs `readvSync` costs about ten times as much and throws for EAGAIN.
 * @returns the addon's function
 * @throws VmmSysError `Unsupported` if the addon does not load
 */
export function nativeReadv(): NativeIov {
  return native().readv;
}

/**
 * Loads the addon and returns its {@link NativeIov} `writev` (as {@link nativeReadv}).
 * @returns the addon's function
 * @throws VmmSysError `Unsupported` if the addon does not load
 */
export function nativeWritev(): NativeIov {
  return native().writev;
}

/**
 * `readv(2)` of `fd` into `views` in order (one system call).
 * @param fd - an open file descriptor
 * @param views - where the bytes go, in order (guest memory views too)
 * @returns the bytes read (0 at end of file), or `"again"` when a non-blocking fd has nothing
 * @throws VmmSysError `InvalidArgument` for a bad fd or view (or more than 1024 of them),
 *   `OutOfBounds` for a view outside its buffer, an errno code (`EBADF`, `EIO`, …) if the call fails
 */
export function readvFd(fd: number, views: readonly Uint8Array[]): number | "again" {
  return result("readv", native().readv(fd, views), fd, views);
}

/**
 * `writev(2)` of `views` in order to `fd` (one system call).
 * @param fd - an open file descriptor
 * @param views - the bytes to write, in order
 * @returns the bytes written (possibly fewer, as writev(2)), or `"again"` when a non-blocking fd has no room
 * @throws VmmSysError as {@link readvFd}
 */
export function writevFd(fd: number, views: readonly Uint8Array[]): number | "again" {
  return result("writev", native().writev(fd, views), fd, views);
}

function result(call: string, r: number, fd: unknown, views: unknown): number | "again" {
  if (r >= 0) return r;
  if (r === -EAGAIN) return "again";
  // The addon answers bad arguments with -EINVAL or -ERANGE before any call: say which.
  if (r === -ERANGE) throw new VmmSysError("OutOfBounds", `${call}: a view is outside its buffer (detached, or over a resizable buffer that shrank)`);
  if (r === -EINVAL && !goodArguments(fd, views)) {
    throw invalid(`${call}: fd must be an integer in [0, 2^31-1] and views an array of at most ${IOV_MAX} Uint8Arrays, got ${describe(fd)}, ${describe(views)}`);
  }
  throw VmmSysError.fromErrno(call, -r);
}

function goodArguments(fd: unknown, views: unknown): boolean {
  return Number.isInteger(fd) && (fd as number) >= 0 && (fd as number) <= 0x7fffffff && Array.isArray(views) &&
    views.length <= IOV_MAX && views.every((v) => v instanceof Uint8Array);
}
