// A namespace import: a vmm-sys-util older than nativeCopyBytes (the peer range allows one)
// still loads, and the memory then copies with TypedArray.prototype.set.
import * as sysUtil from "@ts-vmm/vmm-sys-util";
import type { BulkCopier } from "./bulk-copy.js";

/**
 * The shortest read (guest memory to a caller's array) the native bulk copier takes: below
 * it, one call into the addon costs more than V8's own copy. Measured with
 * `bench/copy-threshold.mjs` (`GuestMemory.read`/`write` into and out of a `Buffer`, native
 * against `TypedArray.prototype.set`, in one run); the numbers are in the package's
 * [DESIGN.md](../DESIGN.md), "Bulk copies".
 */
export const NATIVE_COPY_MIN_READ = 320;

/**
 * The shortest write (a caller's array to guest memory) the native bulk copier takes. Higher
 * than {@link NATIVE_COPY_MIN_READ}: V8's write path allocates nothing, so it stays cheaper
 * than the call for longer (same bench, same DESIGN.md section).
 */
export const NATIVE_COPY_MIN_WRITE = 1280;

let cached: BulkCopier | null | undefined;

/**
 * vmm-sys-util's native copy (libc `memmove`; every argument checked in the addon) as a
 * {@link BulkCopier} for reads of {@link NATIVE_COPY_MIN_READ} and writes of
 * {@link NATIVE_COPY_MIN_WRITE} bytes and up, or null where the addon does not load in this
 * thread (or the installed vmm-sys-util predates it). `GuestMemoryMmap` uses it by default;
 * pass it as `bulkCopier` to `GuestMemoryArrayBuffer` to get the same copies over plain
 * `SharedArrayBuffer`s. Decided once per thread, at the first call; the same object after.
 * @returns the copier, or null without the addon
 */
export function nativeBulkCopier(): BulkCopier | null {
  if (cached === undefined) {
    const load = (sysUtil as Partial<typeof sysUtil>).nativeCopyBytes;
    try {
      cached =
        typeof load === "function"
          ? Object.freeze({ copy: load(), minReadLength: NATIVE_COPY_MIN_READ, minWriteLength: NATIVE_COPY_MIN_WRITE })
          : null;
    } catch {
      cached = null; // the addon does not load in this thread (VmmSysError "Unsupported")
    }
  }
  return cached;
}
