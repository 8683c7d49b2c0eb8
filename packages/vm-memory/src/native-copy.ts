import { nativeCopyBytes } from "@ts-vmm/vmm-sys-util";
import type { BulkCopier } from "./bulk-copy.js";

/**
 * The shortest copy the native bulk copier takes: below it, one call into the addon costs
 * more than V8's own copy. Measured with `bench/copy-threshold.mjs` (copies through
 * `GuestMemory.read`/`write` into and out of a `Buffer`, native against
 * `TypedArray.prototype.set`, in one run); the numbers are in the package's
 * [DESIGN.md](../DESIGN.md), "Bulk copies".
 */
export const NATIVE_COPY_MIN_LENGTH = 512;

let cached: BulkCopier | null | undefined;

/**
 * vmm-sys-util's native copy (libc `memmove`; every argument checked in the addon) as a
 * {@link BulkCopier} for copies of {@link NATIVE_COPY_MIN_LENGTH} bytes and up, or null where
 * the addon does not load in this thread. `GuestMemoryMmap` uses it by default; pass it as
 * `bulkCopier` to `GuestMemoryArrayBuffer` to get the same copies over plain
 * `SharedArrayBuffer`s. Decided once per thread, at the first call; the same object after.
 * @returns the copier, or null without the addon
 */
export function nativeBulkCopier(): BulkCopier | null {
  if (cached === undefined) {
    try {
      cached = Object.freeze({ copy: nativeCopyBytes(), minLength: NATIVE_COPY_MIN_LENGTH });
    } catch {
      cached = null;
    }
  }
  return cached;
}
