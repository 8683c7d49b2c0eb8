// struct kvm_msr_filter and struct kvm_msr_filter_range (include/uapi/linux/kvm.h).
// Each range carries a host pointer to its bitmap; the addon writes those pointers
// (ioctlMsrFilter), never the caller, so here they stay 0.
import { view } from "./bytes.js";

/** Offsets in struct kvm_msr_filter (392 bytes) and its 24-byte ranges. */
export const MSR_FILTER = {
  size: 392, flags: 0, ranges: 8, maxRanges: 16,
  rangeSize: 24, rangeFlags: 0, rangeNmsrs: 4, rangeBase: 8, rangeBitmap: 16,
} as const;

/** Bytes of bitmap the kernel copies for `nmsrs` MSRs: BITS_TO_LONGS(nmsrs) * sizeof(long). @internal */
export function msrFilterBitmapBytes(nmsrs: number): number {
  return Math.ceil(nmsrs / 64) * 8;
}

/** One range as the struct holds it (the bitmap travels separately). @internal */
export interface MsrFilterRangeFields {
  readonly flags: number;
  readonly nmsrs: number;
  readonly base: number;
}

/** struct kvm_msr_filter with zeroed bitmap pointers. @internal */
export function encodeMsrFilter(flags: number, ranges: readonly MsrFilterRangeFields[]): Uint8Array {
  const buf = new Uint8Array(MSR_FILTER.size);
  const dv = view(buf);
  dv.setUint32(MSR_FILTER.flags, flags, true);
  ranges.forEach((r, i) => {
    const o = MSR_FILTER.ranges + i * MSR_FILTER.rangeSize;
    dv.setUint32(o + MSR_FILTER.rangeFlags, r.flags, true);
    dv.setUint32(o + MSR_FILTER.rangeNmsrs, r.nmsrs, true);
    dv.setUint32(o + MSR_FILTER.rangeBase, r.base, true);
  });
  return buf;
}
