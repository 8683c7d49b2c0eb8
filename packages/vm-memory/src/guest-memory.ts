import type { GuestAddress } from "./address.js";
import type { GuestMemoryRegion } from "./region.js";

/** A 64-bit value as its two u32 halves. */
export interface U64Halves {
  /** Bits 31..0. */
  lo: number;
  /** Bits 63..32. */
  hi: number;
}

/**
 * Guest physical memory: a sorted, non-overlapping set of regions with
 * bounds-checked little-endian access. This is the seam consumers
 * (virtio-queue, linux-loader, devices) are typed against.
 *
 * Every method that takes an address checks it and the whole access range
 * before touching memory, and throws `GuestMemoryError` (never anything else)
 * when the range is not fully backed: `"Hole"` if `addr` is in no region,
 * `"OutOfBounds"` if the range runs past the end of backed memory,
 * `"AddressTooLarge"`/`"InvalidArgument"` for a malformed address. Nothing is
 * ever wrapped, truncated or partially written.
 *
 * Scalar and bulk accesses may span adjacent, contiguous regions; views
 * (`slice`) and atomics must lie in one region.
 */
export interface GuestMemory {
  /** The regions, sorted by `start`, non-overlapping. */
  readonly regions: readonly GuestMemoryRegion[];
  /** Total bytes over all regions. */
  readonly size: number;

  /** The region containing `addr`, or undefined (never throws). */
  findRegion(addr: GuestAddress): GuestMemoryRegion | undefined;
  /**
   * Whether `[addr, addr + len)` is entirely backed (possibly by several
   * contiguous regions). Never throws: malformed input gives false.
   */
  checkRange(addr: GuestAddress, len: number): boolean;

  /** Reads a u8. @throws {@link GuestMemoryError} if not backed or malformed. */
  readU8(addr: GuestAddress): number;
  /** Reads a little-endian u16. @throws {@link GuestMemoryError} if not backed or malformed. */
  readU16(addr: GuestAddress): number;
  /** Reads a little-endian u32. @throws {@link GuestMemoryError} if not backed or malformed. */
  readU32(addr: GuestAddress): number;
  /** Reads a little-endian u64. @throws {@link GuestMemoryError} if not backed or malformed. */
  readU64(addr: GuestAddress): bigint;
  /**
   * Writes a u8 (marks dirty).
   * @throws {@link GuestMemoryError} `"InvalidArgument"` if `value` is not an integer in [0, 2^8); range errors as for reads.
   */
  writeU8(addr: GuestAddress, value: number): void;
  /** Writes a little-endian u16. @throws {@link GuestMemoryError} as `writeU8`, value in [0, 2^16). */
  writeU16(addr: GuestAddress, value: number): void;
  /** Writes a little-endian u32. @throws {@link GuestMemoryError} as `writeU8`, value in [0, 2^32). */
  writeU32(addr: GuestAddress, value: number): void;
  /** Writes a little-endian u64. @throws {@link GuestMemoryError} as `writeU8`, value in [0, 2^64). */
  writeU64(addr: GuestAddress, value: bigint): void;

  /**
   * Copies `dest.length` bytes from guest memory at `addr` into `dest`.
   * @throws {@link GuestMemoryError} if the whole range is not backed (nothing copied).
   */
  read(addr: GuestAddress, dest: Uint8Array): void;
  /**
   * Reads `dest.length` consecutive little-endian u32 words starting at `addr`
   * into `dest`: a small fixed-size record (a 16-byte virtqueue descriptor is
   * four words) with one range check and, in the common case, one region
   * lookup, instead of one per field. `addr` need not be aligned. For bulk
   * data use {@link GuestMemory.read}.
   *
   * The range is checked as a whole before anything is written to `dest`; it
   * may span adjacent, contiguous regions (as the scalar reads may). The words
   * are copies: the guest changing memory afterwards does not change `dest`.
   * @param dest - the caller's reusable buffer; its length sets the record size.
   * @throws {@link GuestMemoryError} as {@link GuestMemory.read} if
   *   `[addr, addr + 4 * dest.length)` is not backed or `addr` is malformed
   *   (`dest` is then unchanged).
   */
  readU32s(addr: GuestAddress, dest: Uint32Array): void;
  /**
   * Copies `src` into guest memory at `addr` and marks the pages dirty.
   * @throws {@link GuestMemoryError} if the whole range is not backed (nothing written).
   */
  write(addr: GuestAddress, src: Uint8Array): void;
  /**
   * A zero-copy view of `[addr, addr + len)`, which must lie in one region.
   *
   * Safety: the view aliases guest memory. The guest may change it at any
   * time (read each value once, validate, then use); writes through it are not
   * dirty-tracked; it must not be used after the memory is closed.
   * @throws {@link GuestMemoryError} `"Hole"` / `"OutOfBounds"` if the range is
   *   not inside a single region.
   */
  slice(addr: GuestAddress, len: number): Uint8Array;

  /**
   * Atomic (sequentially consistent, so at least acquire) load of a u16 ring index.
   * @throws {@link GuestMemoryError} `"Unaligned"` if `addr` is odd; range errors as for reads.
   */
  loadU16Acquire(addr: GuestAddress): number;
  /**
   * Atomic (at least release) store of a u16 ring index; marks dirty.
   * @throws {@link GuestMemoryError} `"Unaligned"`, `"InvalidArgument"` or range errors.
   */
  storeU16Release(addr: GuestAddress, value: number): void;
  /** Atomic load of a u32. @throws {@link GuestMemoryError} `"Unaligned"` unless 4-aligned; range errors. */
  loadU32Acquire(addr: GuestAddress): number;
  /** Atomic store of a u32; marks dirty. @throws {@link GuestMemoryError} `"Unaligned"`, `"InvalidArgument"`, range errors. */
  storeU32Release(addr: GuestAddress, value: number): void;

  /**
   * Reads a guest-written 64-bit value as two u32 halves, without making a
   * number of it (see `toGuestAddress`).
   * @throws {@link GuestMemoryError} if not backed or malformed.
   */
  readU64Split(addr: GuestAddress): U64Halves;
  /**
   * Reads a guest-written u64 that must be an address or a length, without
   * allocating: the value if it is below 2^52.
   * @throws {@link GuestMemoryError} `"AddressTooLarge"` if the value is ≥ 2^52; range errors as for reads.
   */
  readU64AsAddress(addr: GuestAddress): GuestAddress;
  /**
   * Marks `[addr, addr + len)` dirty after writing through a view (`slice`,
   * an fd read into guest memory). Optional: a backend without dirty tracking
   * may omit it.
   * @throws {@link GuestMemoryError} if the range is not backed.
   */
  markDirty?(addr: GuestAddress, len: number): void;
}
