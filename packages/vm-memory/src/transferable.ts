import type { GuestAddress } from "./address.js";
import { DirtyBitmap } from "./dirty-bitmap.js";
import { GuestMemoryError } from "./error.js";
import { BackedRegion } from "./region.js";

/** One region of a {@link GuestMemoryTransferable}. */
export interface TransferableRegion {
  /** Guest physical start address. */
  readonly start: GuestAddress;
  /** Size in bytes. */
  readonly size: number;
  /** The shared buffer holding the region (the mapping, for mmap memory). */
  readonly buffer: SharedArrayBuffer;
  /** Byte offset of the region in `buffer`. */
  readonly byteOffset: number;
  /** Host virtual address of the mapping (mmap memory). */
  readonly hostAddress?: bigint;
  /** Backing fd, as in the source region (the number is valid in every thread of the process). */
  readonly fd?: number | null;
  /** Offset of the region in `fd`. */
  readonly fileOffset?: number;
  /** The dirty bitmap's shared storage, when tracking is on. */
  readonly dirty?: SharedArrayBuffer;
}

/**
 * Plain, structured-cloneable description of a guest memory whose regions are
 * in `SharedArrayBuffer`s: post it to a worker (`worker.postMessage(t)`) and
 * rebuild it there with `GuestMemoryMmap.fromTransferable` or
 * `GuestMemoryArrayBuffer.fromTransferable`. Both sides then access the same
 * bytes (and the same dirty bitmaps); nothing is copied.
 */
export interface GuestMemoryTransferable {
  /** Which backend made it (and must rebuild it). */
  readonly kind: "mmap" | "arraybuffer";
  /** The regions, in order. */
  readonly regions: readonly TransferableRegion[];
}

/** @internal */
export function regionsToTransferable(regions: readonly BackedRegion[]): TransferableRegion[] {
  return regions.map((r) => {
    if (!(r.buffer instanceof SharedArrayBuffer)) {
      throw new GuestMemoryError(
        "InvalidArgument",
        `region at 0x${r.start.toString(16)} is not backed by a SharedArrayBuffer and cannot be shared`,
        { addr: r.start },
      );
    }
    const t: {
      -readonly [K in keyof TransferableRegion]: TransferableRegion[K];
    } = { start: r.start, size: r.size, buffer: r.buffer, byteOffset: r.hostOffset };
    if (r.hostAddress !== undefined) t.hostAddress = r.hostAddress;
    if (r.fd !== undefined) t.fd = r.fd;
    if (r.fileOffset !== undefined) t.fileOffset = r.fileOffset;
    if (r.dirty !== undefined) t.dirty = r.dirty.buffer;
    return t;
  });
}

/**
 * @internal
 * @throws {@link GuestMemoryError} `"InvalidArgument"` if the description is malformed.
 */
export function regionsFromTransferable(t: GuestMemoryTransferable, kind: GuestMemoryTransferable["kind"]): BackedRegion[] {
  if (typeof t !== "object" || t === null || t.kind !== kind || !Array.isArray(t.regions)) {
    throw new GuestMemoryError("InvalidArgument", `not a transferable ${kind} guest memory`);
  }
  return t.regions.map((r: TransferableRegion | null | undefined) => {
    if (typeof r !== "object" || r === null || !(r.buffer instanceof SharedArrayBuffer)) {
      throw new GuestMemoryError("InvalidArgument", "transferable region without a SharedArrayBuffer");
    }
    return new BackedRegion({
      start: r.start,
      size: r.size,
      buffer: r.buffer,
      byteOffset: r.byteOffset,
      ...(r.hostAddress !== undefined ? { hostAddress: r.hostAddress } : {}),
      ...(r.fd !== undefined ? { fd: r.fd } : {}),
      ...(r.fileOffset !== undefined ? { fileOffset: r.fileOffset } : {}),
      ...(r.dirty !== undefined ? { dirty: new DirtyBitmap(r.size, r.dirty) } : {}),
    });
  });
}
