import { GuestMemoryError } from "./error.js";

/**
 * A copy function for the bulk paths of guest memory (`read`, `write` and the chains and
 * streams built on them), injected into a backend when it is built: the seam through which
 * a native `memmove` replaces `TypedArray.prototype.set` for larger copies.
 *
 * Why: guest memory is a `SharedArrayBuffer`, and V8 copies into or out of one with a
 * relaxed-atomic word loop (another thread may be writing it), about half as fast as
 * `memmove` for 4 KiB. vm-memory itself stays pure TypeScript; the `@ts-vmm/vm-memory/mmap`
 * entry point supplies vmm-sys-util's native copy (`nativeBulkCopier()`), and
 * `GuestMemoryMmap` uses it by default. See the package's [DESIGN.md](../DESIGN.md), "Bulk copies".
 *
 * The backend picks the path per call by direction and length alone: a read (guest memory to
 * the caller's array) of `minReadLength` bytes or more, or a write of `minWriteLength` or
 * more, goes to `copy`; anything shorter to `TypedArray.prototype.set`. The two differ because
 * V8's read path allocates a view (`subarray`) and its write path does not, so `set` stays
 * cheaper for longer when writing. Ranges are checked by the backend before `copy` is called,
 * and `copy` is only called with ranges inside both views.
 */
export interface BulkCopier {
  /**
   * Copies `src[srcOffset, +length)` to `dst[dstOffset, +length)` as `memmove` does (the
   * ranges may overlap: a caller may read guest memory into a view of guest memory) and
   * returns 0; or copies nothing and returns another number (the backend then throws
   * `"InvalidArgument"` naming it). A status rather than an exception, so that vmm-sys-util's
   * `nativeCopyBytes` can be used as it is, without a wrapper around each call.
   */
  readonly copy: (dst: Uint8Array, dstOffset: number, src: Uint8Array, srcOffset: number, length: number) => number;
  /** The shortest read handed to `copy` (a positive integer); shorter ones use `TypedArray.prototype.set`. */
  readonly minReadLength: number;
  /** The shortest write handed to `copy` (a positive integer). */
  readonly minWriteLength: number;
}

/**
 * Checks a copier given as an option and returns what the backend stores: the function, and
 * the threshold (Infinity, and a `set`-based function that is never called, without one).
 * @internal
 */
export function resolveCopier(c: BulkCopier | null | undefined): { copy: BulkCopier["copy"]; minRead: number; minWrite: number } {
  if (c === undefined || c === null) return { copy: setCopy, minRead: Infinity, minWrite: Infinity };
  const ok = (n: unknown): boolean => Number.isSafeInteger(n) && (n as number) > 0;
  if (typeof c !== "object" || typeof c.copy !== "function" || !ok(c.minReadLength) || !ok(c.minWriteLength)) {
    return invalidCopier();
  }
  return { copy: c.copy, minRead: c.minReadLength, minWrite: c.minWriteLength };
}

function setCopy(dst: Uint8Array, dstOffset: number, src: Uint8Array, srcOffset: number, length: number): number {
  dst.set(src.subarray(srcOffset, srcOffset + length), dstOffset);
  return 0;
}

/**
 * The error for a copier that refused (returned `status`): only a `dest`/`src` that is not a
 * `Uint8Array` over a live buffer gets there, since the backend checked the guest range.
 * @internal
 */
export function copyRefused(status: number, addr: number, len: number): GuestMemoryError {
  return new GuestMemoryError(
    "InvalidArgument",
    `bulk copy of ${len} bytes at 0x${addr.toString(16)} refused (status ${status}): the buffer must be a Uint8Array over a live (not detached) buffer`,
    { addr, len },
  );
}

function invalidCopier(): never {
  throw new GuestMemoryError("InvalidArgument", "bulkCopier must be { copy: function, minReadLength: positive integer, minWriteLength: positive integer }");
}
