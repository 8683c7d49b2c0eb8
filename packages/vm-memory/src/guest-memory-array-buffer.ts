import type { GuestAddress } from "./address.js";
import type { BulkCopier } from "./bulk-copy.js";
import { DirtyBitmap } from "./dirty-bitmap.js";
import { GuestMemoryError } from "./error.js";
import { GuestMemoryBase } from "./guest-memory-base.js";
import { BackedRegion } from "./region.js";
import {
  type GuestMemoryTransferable,
  regionsFromTransferable,
  regionsToTransferable,
} from "./transferable.js";

/** A region of a {@link GuestMemoryArrayBuffer}: where it is and, optionally, what backs it. */
export interface ArrayBufferRegionSpec {
  /** Guest physical start address. */
  readonly start: GuestAddress;
  /** Size in bytes (> 0). */
  readonly size: number;
  /** Existing storage; a new zeroed buffer of `size` bytes if omitted. */
  readonly buffer?: ArrayBuffer | SharedArrayBuffer;
  /** Offset of the region in `buffer` (default 0). */
  readonly byteOffset?: number;
}

/** Options of {@link GuestMemoryArrayBuffer.fromRanges}. */
export interface ArrayBufferMemoryOptions {
  /** Allocate `SharedArrayBuffer`s (shareable with workers). Default true. */
  readonly shared?: boolean;
  /** Give every region a dirty bitmap. Default false. */
  readonly dirtyTracking?: boolean;
  /**
   * The copy for bulk reads and writes (from its `minReadLength`/`minWriteLength` bytes on), e.g. `nativeBulkCopier()`
   * from `@ts-vmm/vm-memory/mmap` (needs `@ts-vmm/vmm-sys-util`). Default: none, every copy
   * uses `TypedArray.prototype.set`.
   */
  readonly bulkCopier?: BulkCopier | null;
}

/**
 * {@link GuestMemory} over plain `ArrayBuffer`s or `SharedArrayBuffer`s: the
 * test backend, and the backend for memory that no KVM guest maps (a
 * vhost-user-style device test, a recorded memory image). Same checks and
 * same code paths as `GuestMemoryMmap`.
 */
export class GuestMemoryArrayBuffer extends GuestMemoryBase {
  private constructor(regions: readonly BackedRegion[], copier?: BulkCopier | null) {
    super(regions, copier);
  }

  /**
   * Builds memory from regions, allocating zeroed storage for those without a buffer.
   *
   * @example
   * const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x10000 }]);
   * mem.writeU32(0x100, 0xdeadbeef);
   * @throws {@link GuestMemoryError} `"Overlap"` if regions overlap; `"InvalidArgument"`
   *   for an empty region, a region outside its buffer or a bad option;
   *   `"AddressTooLarge"` for a region ending above 2^52; `"InvalidArgument"` for a malformed `bulkCopier`.
   */
  static fromRanges(
    ranges: readonly ArrayBufferRegionSpec[],
    opts: ArrayBufferMemoryOptions = {},
  ): GuestMemoryArrayBuffer {
    const shared = opts.shared ?? true;
    const regions = ranges.map((s) => {
      if (!(Number.isSafeInteger(s.size) && s.size > 0)) {
        throw new GuestMemoryError("InvalidArgument", `region size ${s.size} is not a positive integer`, { addr: s.start });
      }
      const buffer = s.buffer ?? (shared ? new SharedArrayBuffer(s.size) : new ArrayBuffer(s.size));
      return new BackedRegion({
        start: s.start,
        size: s.size,
        buffer,
        byteOffset: s.byteOffset ?? 0,
        ...(opts.dirtyTracking ? { dirty: new DirtyBitmap(s.size) } : {}),
      });
    });
    return new GuestMemoryArrayBuffer(regions, opts.bulkCopier);
  }

  /**
   * A description of this memory that can be posted to a worker.
   * @throws {@link GuestMemoryError} `"InvalidArgument"` if a region is not in a SharedArrayBuffer.
   */
  toTransferable(): GuestMemoryTransferable {
    return { kind: "arraybuffer", regions: regionsToTransferable(this.backedRegions) };
  }

  /**
   * Rebuilds memory over the same shared buffers (typically in a worker).
   * @param opts - `bulkCopier` as in {@link ArrayBufferMemoryOptions} (a function cannot be posted: pass it again here)
   * @throws {@link GuestMemoryError} `"InvalidArgument"` if `t` or the copier is malformed; `"Overlap"` as `fromRanges`.
   */
  static fromTransferable(t: GuestMemoryTransferable, opts: { readonly bulkCopier?: BulkCopier | null } = {}): GuestMemoryArrayBuffer {
    return new GuestMemoryArrayBuffer(regionsFromTransferable(t, "arraybuffer"), opts.bulkCopier);
  }

  /** Drops the regions; later accesses throw `"Closed"`. */
  close(): void {
    this.dropRegions();
  }
}
