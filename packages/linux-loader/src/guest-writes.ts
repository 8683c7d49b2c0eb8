import { hex } from "./bytes.js";
import { LoaderError } from "./error.js";
import type { GuestMemory } from "./memory.js";
import { MMIO_HOLE_END, MMIO_HOLE_START } from "./layout.js";
import { firstOverlap, isGuestRange, overlaps } from "./ranges.js";

/** One block of bytes the loader wants in guest memory. */
export interface GuestWrite {
  /** Guest physical address of the first byte. */
  readonly addr: number;
  /** The bytes. For a kernel segment this is a view into the file, not a copy. */
  readonly data: Uint8Array;
  /**
   * Bytes to zero after `data` (an ELF segment's `p_memsz - p_filesz`, the BSS).
   * Zero when absent.
   */
  readonly zeroFill?: number;
  /** What this is, for error messages ("kernel", "zero page", "DSDT"). */
  readonly what: string;
}

function writeEnd(w: GuestWrite): number {
  return w.addr + w.data.byteLength + (w.zeroFill ?? 0);
}

/**
 * Checks a set of writes without touching memory: every range is an integer
 * range inside guest RAM (`mem.checkRange`), outside the 32-bit MMIO hole, and
 * no two writes overlap.
 *
 * @throws LoaderError `InMmioHole`, `OutOfGuestMemory`, `Overlap`, `Overflow`
 */
export function validateWrites(mem: GuestMemory, writes: readonly GuestWrite[]): void {
  for (const w of writes) {
    const len = w.data.byteLength + (w.zeroFill ?? 0);
    if (!isGuestRange(w.addr, len)) {
      throw new LoaderError("Overflow", `${w.what} at ${hex(w.addr)} (${len} bytes) is outside the 2^52 guest address space`);
    }
    if (len === 0) continue;
    const end = w.addr + len;
    if (overlaps(w.addr, end, MMIO_HOLE_START, MMIO_HOLE_END)) {
      throw new LoaderError(
        "InMmioHole",
        `${w.what} at ${hex(w.addr)}..${hex(end)} overlaps the MMIO hole ${hex(MMIO_HOLE_START)}..${hex(MMIO_HOLE_END)}`,
      );
    }
    if (!mem.checkRange(w.addr, len)) {
      throw new LoaderError(
        "OutOfGuestMemory",
        `${w.what} at ${hex(w.addr)}..${hex(end)} is not inside guest RAM (guest memory is ${hex(mem.size)} bytes)`,
      );
    }
  }
  const clash = firstOverlap(writes, (w) => w.addr, writeEnd);
  if (clash) {
    const [prev, cur] = clash;
    throw new LoaderError("Overlap", `${cur.what} at ${hex(cur.addr)} overlaps ${prev.what} at ${hex(prev.addr)}..${hex(writeEnd(prev))}`);
  }
}

const ZERO_CHUNK = new Uint8Array(1 << 16);

/** Options of {@link commitWrites}. */
export interface CommitOptions {
  /**
   * The memory reads as zeroes wherever nothing was written to it yet (fresh
   * anonymous, memfd or guest_memfd memory, not a file's contents): the
   * `zeroFill` bytes are then not written. An ELF's BSS is often megabytes
   * (the micro-guest's 4 MiB), and writing zeroes there only faults its pages
   * in (~3 ms here). Writes never overlap ({@link validateWrites}), so no other
   * write lands in a skipped range. Default false.
   */
  readonly memoryIsZero?: boolean;
}

/**
 * Validates all writes ({@link validateWrites}), then performs them. Nothing is
 * written unless everything is valid.
 *
 * @throws LoaderError as {@link validateWrites}; a `GuestMemoryError` raised
 * by the memory despite the checks is wrapped as `cause` of `OutOfGuestMemory`.
 */
export function commitWrites(mem: GuestMemory, writes: readonly GuestWrite[], options: CommitOptions = {}): void {
  validateWrites(mem, writes);
  const fill = options.memoryIsZero !== true;
  try {
    for (const w of writes) {
      if (w.data.byteLength > 0) mem.write(w.addr, w.data);
      let z = fill ? (w.zeroFill ?? 0) : 0;
      let a = w.addr + w.data.byteLength;
      while (z > 0) {
        const n = Math.min(z, ZERO_CHUNK.byteLength);
        mem.write(a, n === ZERO_CHUNK.byteLength ? ZERO_CHUNK : ZERO_CHUNK.subarray(0, n));
        a += n;
        z -= n;
      }
    }
  } catch (e) {
    throw new LoaderError("OutOfGuestMemory", `guest memory refused a write that passed checkRange: ${String(e)}`, { cause: e });
  }
}
