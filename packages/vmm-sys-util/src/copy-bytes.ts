import { constants } from "node:os";
import { VmmSysError, invalid } from "./errors.js";
import { type NativeBinding, native } from "./native.js";
import { describe } from "./validate.js";

const { EINVAL, ERANGE } = constants.errno;

/**
 * Copies `length` bytes from `src` at `srcOffset` to `dst` at `dstOffset` with libc's
 * `memmove`, whatever the views are over: `ArrayBuffer`, `SharedArrayBuffer` (guest memory)
 * or a `Buffer`. The ranges may overlap (even within one buffer); a zero length copies nothing.
 *
 * Why: V8 copies into or out of a `SharedArrayBuffer`-backed view (`TypedArray.prototype.set`,
 * `Buffer.copy`) with a relaxed-atomic word loop, about half the speed of `memmove` for 4 KiB
 * on this project's machine. One call costs about 50 ns, so below several hundred bytes
 * `TypedArray.prototype.set` is faster: see the package's [DESIGN.md](../DESIGN.md), "Copies".
 *
 * Offsets and length count bytes from the start of each view (its `byteOffset` is added for
 * you). The addon checks every argument, each range against its view and each view against
 * its buffer's backing store before it copies, so no call can read or write outside the two
 * views.
 *
 * Safety: when a buffer is shared with another thread or a guest that writes it during the
 * copy, the copy may see some bytes old and some new (as with a guest's DMA), never bytes
 * outside the range.
 *
 * @param dst - the view written (a `Uint8Array` or `Buffer`)
 * @param dstOffset - first byte written, from the start of `dst`
 * @param src - the view read
 * @param srcOffset - first byte read, from the start of `src`
 * @param length - bytes to copy
 * @throws VmmSysError `InvalidArgument` if a view is not a `Uint8Array` or an offset or the
 *   length is not an integer in [0, 2^53-1]; `OutOfBounds` if a range runs past the end of
 *   its view (a view over a detached buffer, or a fixed-length view over a resizable buffer
 *   that shrank below it, has length 0); `Unsupported` if the addon does not load. Nothing
 *   is copied then.
 */
export function copyBytes(dst: Uint8Array, dstOffset: number, src: Uint8Array, srcOffset: number, length: number): void {
  const b = native();
  // The addon object's properties are slow to look up (~8 ns a call here): keep its function.
  if (b !== boundTo) {
    boundTo = b;
    copyFn = b.copyBytes;
  }
  // The addon checks every argument (and only it: checking them here as well cost ~8 ns a
  // call, more than a tenth of a 4 KiB copy) and returns a status for bad ones.
  const r = copyFn(dst, dstOffset, src, srcOffset, length);
  if (r !== 0) throw copyError(r, dst, dstOffset, src, srcOffset, length);
}

/**
 * The addon's copy function itself, for hot paths that cannot afford a wrapper around each call
 * (vm-memory's bulk copies): `(dst, dstOffset, src, srcOffset, length)` as {@link copyBytes},
 * with the same checks, made in the addon, but a bad argument is a return value instead of an
 * exception: `0` when it copied, `-EINVAL` (a view is not a `Uint8Array`, a number is not an
 * integer in [0, 2^53-1]) or `-ERANGE` (a range outside its view, a view outside its buffer)
 * when it copied nothing. It never throws.
 */
export type NativeCopyBytes = (dst: Uint8Array, dstOffset: number, src: Uint8Array, srcOffset: number, length: number) => number;

/**
 * Loads the addon and returns its {@link NativeCopyBytes} (that of the binding set with
 * `setNativeBinding` at the time of the call, if any).
 * @returns the addon's function
 * @throws VmmSysError `Unsupported` if the addon does not load
 */
export function nativeCopyBytes(): NativeCopyBytes {
  return native().copyBytes;
}

let boundTo: NativeBinding | undefined;
let copyFn: NativeBinding["copyBytes"] = () => 0;

function copyError(status: number, dst: unknown, dstOffset: unknown, src: unknown, srcOffset: unknown, length: unknown): VmmSysError {
  if (status === -ERANGE) {
    const len = (v: unknown): string => String((v as Uint8Array).length);
    return new VmmSysError(
      "OutOfBounds",
      `copyBytes: [${String(dstOffset)}, +${String(length)}) of a ${len(dst)}-byte destination or [${String(srcOffset)}, +${String(length)}) ` +
        `of a ${len(src)}-byte source is outside its view (a detached buffer, or a resizable one that shrank, leaves a view of length 0)`,
    );
  }
  if (status === -EINVAL) {
    return invalid(
      `copyBytes: dst and src must be Uint8Arrays and the offsets and length integers in [0, 2^53-1], got ` +
        `${describe(dst)}, ${describe(dstOffset)}, ${describe(src)}, ${describe(srcOffset)}, ${describe(length)}`,
    );
  }
  return VmmSysError.fromErrno("copyBytes", -status);
}
