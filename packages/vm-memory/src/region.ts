import { GUEST_ADDRESS_LIMIT, type GuestAddress } from "./address.js";
import type { DirtyBitmap } from "./dirty-bitmap.js";
import type { MemoryBacking } from "./discard.js";
import { GuestMemoryError } from "./error.js";

/**
 * A contiguous run of guest physical memory backed by host memory.
 *
 * Safety: `bytes` is a live view of guest memory. The guest (and other
 * threads) can change it at any time; read each value once and validate it
 * before use, never index host memory with a value read twice. Writes made
 * through `bytes` are not dirty-tracked (use `GuestMemory.write` or call
 * `markDirty`). The view is only valid while the owning memory is open.
 */
export interface GuestMemoryRegion {
  /** First guest physical address of the region. */
  readonly start: GuestAddress;
  /** Size in bytes. */
  readonly size: number;
  /** One past the last address: `start + size` (exclusive). */
  readonly end: GuestAddress;
  /** A view over the whole region (see the Safety note on the interface). */
  readonly bytes: Uint8Array;
  /** Host virtual address of the mapping, when the backend knows it (mmap). */
  readonly hostAddress?: bigint;
  /** File descriptor backing the region (memfd, file, guest_memfd), or null. */
  readonly fd?: number | null;
  /** Offset of the region in `fd`. */
  readonly fileOffset?: number;
  /** The region's dirty bitmap, when dirty tracking is on. */
  readonly dirty?: DirtyBitmap;
  /** What backs the mapping (mmap memory that owns its mappings); decides how a discard returns pages. */
  readonly backing?: MemoryBacking;
}

/** What a backend supplies to build one region. */
export interface RegionBacking {
  readonly start: GuestAddress;
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  readonly byteOffset: number;
  readonly size: number;
  readonly hostAddress?: bigint;
  readonly fd?: number | null;
  readonly fileOffset?: number;
  readonly dirty?: DirtyBitmap;
  readonly backing?: MemoryBacking;
}

/**
 * The one region class all backends use, so that the access paths stay
 * monomorphic. Holds typed views made once: a DataView for the region and
 * Uint16/Uint32 arrays over the whole underlying buffer for Atomics.
 * @internal
 */
export class BackedRegion implements GuestMemoryRegion {
  readonly start: number;
  readonly size: number;
  readonly end: number;
  readonly bytes: Uint8Array;
  readonly hostAddress?: bigint;
  readonly fd?: number | null;
  readonly fileOffset?: number;
  readonly dirty?: DirtyBitmap;
  readonly backing?: MemoryBacking;
  /** @internal DataView over exactly the region. */
  readonly dv: DataView;
  /** @internal Byte offset of the region in `buffer`. */
  readonly hostOffset: number;
  /** @internal The underlying buffer. */
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  /** @internal Uint16Array over the whole buffer, for Atomics. */
  readonly u16: Uint16Array;
  /** @internal Uint32Array over the whole buffer, for Atomics. */
  readonly u32: Uint32Array;

  /**
   * @throws {@link GuestMemoryError} `"InvalidArgument"` if the backing does
   *   not lie inside its buffer; `"AddressTooLarge"` if it ends above 2^52.
   */
  constructor(b: RegionBacking) {
    if (!(Number.isSafeInteger(b.start) && b.start >= 0)) {
      throw new GuestMemoryError("InvalidArgument", `region start ${b.start} is not a non-negative integer`);
    }
    if (!(Number.isSafeInteger(b.size) && b.size >= 0)) {
      throw new GuestMemoryError("InvalidArgument", `region size ${b.size} is not a non-negative integer`);
    }
    if (b.start + b.size > GUEST_ADDRESS_LIMIT) {
      throw new GuestMemoryError("AddressTooLarge", `region [${b.start}, +${b.size}) ends above 2^52`, {
        addr: b.start,
        len: b.size,
      });
    }
    if (!(Number.isSafeInteger(b.byteOffset) && b.byteOffset >= 0 && b.byteOffset + b.size <= b.buffer.byteLength)) {
      throw new GuestMemoryError(
        "InvalidArgument",
        `region bytes [${b.byteOffset}, +${b.size}) do not fit a buffer of ${b.buffer.byteLength} bytes`,
      );
    }
    if (b.dirty !== undefined && b.dirty.size !== b.size) {
      throw new GuestMemoryError("InvalidArgument", `dirty bitmap covers ${b.dirty.size} bytes, region has ${b.size}`);
    }
    this.start = b.start;
    this.size = b.size;
    this.end = b.start + b.size;
    this.buffer = b.buffer;
    this.hostOffset = b.byteOffset;
    this.bytes = new Uint8Array(b.buffer, b.byteOffset, b.size);
    this.dv = new DataView(b.buffer, b.byteOffset, b.size);
    this.u16 = new Uint16Array(b.buffer, 0, Math.floor(b.buffer.byteLength / 2));
    this.u32 = new Uint32Array(b.buffer, 0, Math.floor(b.buffer.byteLength / 4));
    if (b.hostAddress !== undefined) this.hostAddress = b.hostAddress;
    if (b.fd !== undefined) this.fd = b.fd;
    if (b.fileOffset !== undefined) this.fileOffset = b.fileOffset;
    if (b.dirty !== undefined) this.dirty = b.dirty;
    if (b.backing !== undefined) this.backing = b.backing;
  }
}

/** A region of size 0 at address 0: the "last hit" before any lookup. @internal */
export const EMPTY_REGION = new BackedRegion({ start: 0, buffer: new ArrayBuffer(0), byteOffset: 0, size: 0 });
