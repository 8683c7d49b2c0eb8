/**
 * The conditions a guest memory access or construction can fail on.
 *
 * - `"OutOfBounds"`: the range starts inside memory but runs past the end of
 *   its region (with no contiguous region after it) or past the end of memory;
 *   or a view was asked for that would span two regions.
 * - `"Hole"`: the start address is not inside any region.
 * - `"AddressTooLarge"`: an address or 64-bit value is ≥ 2^52 (or is an
 *   infinite/unsafe number), so it cannot be a guest physical address.
 * - `"InvalidArgument"`: a length, offset, value or option is malformed
 *   (negative, fractional, NaN, out of the field's range...).
 * - `"Overlap"`: two regions given to a builder overlap.
 * - `"Unaligned"`: an atomic access is not naturally aligned, or a discard
 *   range does not cover whole pages of its backing (4 KiB, or the huge page
 *   size of a hugetlb region).
 * - `"Closed"`: the memory (its mappings) has been closed.
 * - `"Mmap"`: creating a mapping failed in vmm-sys-util (see `cause`).
 * - `"Io"`: a file-descriptor or stream copy failed (see `cause`).
 * - `"DiscardUnsupported"`: the memory cannot give pages back to the host
 *   (its backing is unknown, or this object does not own the mappings).
 * - `"Discard"`: the discard syscall failed (see `cause`, a `VmmSysError`:
 *   `EINVAL` for locked memory, `EOPNOTSUPP` for a file system without
 *   punch-hole).
 */
export type GuestMemoryErrorCode =
  | "OutOfBounds"
  | "Hole"
  | "AddressTooLarge"
  | "InvalidArgument"
  | "Overlap"
  | "Unaligned"
  | "Closed"
  | "Mmap"
  | "Io"
  | "DiscardUnsupported"
  | "Discard";

/**
 * The one error class of `@ts-vmm/vm-memory`. Every failed check throws this;
 * nothing in the package throws anything else for a bad address, length or
 * value. Errors from lower layers (vmm-sys-util, `node:fs`) are wrapped and kept
 * as `cause`.
 */
export class GuestMemoryError extends Error {
  /** What went wrong; see {@link GuestMemoryErrorCode}. */
  readonly code: GuestMemoryErrorCode;
  /** The guest address involved, when there is one. */
  readonly addr?: number;
  /** The length of the access involved, when there is one. */
  readonly len?: number;

  /**
   * @param code - the condition.
   * @param message - a human-readable description.
   * @param details - the address and length involved, and a lower-level cause.
   */
  constructor(
    code: GuestMemoryErrorCode,
    message: string,
    details: { addr?: number; len?: number; cause?: unknown } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "GuestMemoryError";
    this.code = code;
    if (details.addr !== undefined) this.addr = details.addr;
    if (details.len !== undefined) this.len = details.len;
  }
}
