// Guest-physical ranges: the one address check and the one overlap check every
// builder and parser of this package uses (issue 14 item 18: there were five copies
// of the first and four of the second). Internal: callers raise their own error code.
import { MAX_GUEST_ADDRESS } from "./bytes.js";

/** A safe integer in [0, 2^52): a guest-physical address (or a size no larger). @internal */
export function isGuestAddress(v: number): boolean {
  return Number.isSafeInteger(v) && v >= 0 && v < MAX_GUEST_ADDRESS;
}

/** `[addr, addr + size)` with safe-integer `addr`, `size` ≥ 0, ending at or below 2^52. @internal */
export function isGuestRange(addr: number, size: number): boolean {
  return Number.isSafeInteger(addr) && Number.isSafeInteger(size) && addr >= 0 && size >= 0 && addr + size <= MAX_GUEST_ADDRESS;
}

/** Whether the half-open ranges `[aStart, aEnd)` and `[bStart, bEnd)` share a byte; an empty range shares none. @internal */
export function overlaps(aStart: number, aEnd: number, bStart: number, bEnd: number): boolean {
  return aStart < aEnd && bStart < bEnd && aStart < bEnd && bStart < aEnd;
}

/**
 * The first two of `items` that overlap, in address order (empty ranges ignored), or
 * undefined. Sorting first makes it O(n log n): any overlap shows between neighbours
 * once the ranges are ordered by start, as long as the running end is carried along.
 * @internal
 */
export function firstOverlap<T>(items: readonly T[], start: (t: T) => number, end: (t: T) => number): readonly [T, T] | undefined {
  const sorted = items.filter((t) => end(t) > start(t)).sort((a, b) => start(a) - start(b));
  let far: T | undefined;
  for (const cur of sorted) {
    if (far !== undefined && start(cur) < end(far)) return [far, cur];
    if (far === undefined || end(cur) > end(far)) far = cur;
  }
  return undefined;
}
