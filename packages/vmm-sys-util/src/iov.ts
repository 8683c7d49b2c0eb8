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
