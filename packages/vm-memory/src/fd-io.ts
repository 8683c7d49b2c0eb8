import { readv, readvSync, writev, writevSync } from "node:fs";
import type { GuestAddress } from "./address.js";
import { GuestMemoryError } from "./error.js";
import type { GuestMemory } from "./guest-memory.js";
import { sliceRange } from "./slices.js";

// Copies between guest memory and file descriptors go straight between the
// file and views over the mapping (readv/writev with one iovec per region):
// no intermediate buffer.

/** A file position: a byte offset, or null to use (and advance) the fd's current position. */
export type FilePosition = number | null;

function checkPosition(position: FilePosition): void {
  if (position !== null && !(Number.isSafeInteger(position) && position >= 0)) {
    throw new GuestMemoryError("InvalidArgument", `file position ${String(position)} is not a non-negative integer`);
  }
}

function ioError(op: string, fd: number, done: number, cause: unknown): GuestMemoryError {
  const code = (cause as { code?: unknown }).code;
  return new GuestMemoryError("Io", `${op} on fd ${fd} failed after ${done} bytes: ${String(code ?? cause)}`, {
    len: done,
    cause,
  });
}

/** Drops the first `n` bytes from a list of views (for a short transfer). */
function advance(views: Uint8Array[], n: number): Uint8Array[] {
  let i = 0;
  while (i < views.length && n >= (views[i] as Uint8Array).length) n -= (views[i++] as Uint8Array).length;
  const rest = views.slice(i);
  if (n > 0 && rest.length > 0) rest[0] = (rest[0] as Uint8Array).subarray(n);
  return rest;
}

/**
 * Reads up to `len` bytes from `fd` into guest memory at `addr`, looping over
 * short reads until `len` bytes or end of file. The range is checked before
 * any I/O; the pages read into are marked dirty.
 *
 * @param position - file offset to read at, or null for the fd's position.
 * @returns the number of bytes read (less than `len` only at end of file).
 * @throws {@link GuestMemoryError} range errors (nothing read), `"InvalidArgument"`
 *   for a bad position, `"Io"` if a read fails (`cause` holds the fs error,
 *   `len` the bytes already read).
 */
export function readFromFd(mem: GuestMemory, fd: number, addr: GuestAddress, len: number, position: FilePosition = null): number {
  checkPosition(position);
  let views = sliceRange(mem, addr, len);
  let done = 0;
  try {
    while (done < len) {
      const n = readvSync(fd, views, position === null ? undefined : position + done);
      if (n === 0) break;
      done += n;
      views = advance(views, n);
    }
  } catch (e) {
    throw ioError("readv", fd, done, e);
  } finally {
    if (done > 0) mem.markDirty?.(addr, done);
  }
  return done;
}

/**
 * Writes `len` bytes of guest memory at `addr` to `fd`, looping over short
 * writes until all are written. The range is checked before any I/O.
 *
 * @returns `len`.
 * @throws {@link GuestMemoryError} range errors (nothing written),
 *   `"InvalidArgument"` for a bad position, `"Io"` if a write fails or makes
 *   no progress (`len` holds the bytes already written).
 */
export function writeToFd(mem: GuestMemory, fd: number, addr: GuestAddress, len: number, position: FilePosition = null): number {
  checkPosition(position);
  let views = sliceRange(mem, addr, len);
  let done = 0;
  while (done < len) {
    let n: number;
    try {
      n = writevSync(fd, views, position === null ? undefined : position + done);
    } catch (e) {
      throw ioError("writev", fd, done, e);
    }
    if (n === 0) throw ioError("writev", fd, done, new Error("no progress"));
    done += n;
    views = advance(views, n);
  }
  return done;
}

/**
 * The asynchronous form of {@link readFromFd} (the read runs on libuv's thread
 * pool, straight into guest memory).
 *
 * Safety: guest memory must stay open until the promise settles.
 * @throws {@link GuestMemoryError} (as a rejection) range and argument errors
 *   before any I/O, `"Io"` if a read fails.
 */
export async function readFromFdAsync(
  mem: GuestMemory,
  fd: number,
  addr: GuestAddress,
  len: number,
  position: FilePosition = null,
): Promise<number> {
  checkPosition(position);
  let views = sliceRange(mem, addr, len);
  let done = 0;
  try {
    while (done < len) {
      const n = await new Promise<number>((resolve, reject) =>
        readv(fd, views, position === null ? null : position + done, (err, bytes) => (err ? reject(err) : resolve(bytes))),
      );
      if (n === 0) break;
      done += n;
      views = advance(views, n);
    }
  } catch (e) {
    throw ioError("readv", fd, done, e);
  } finally {
    if (done > 0) mem.markDirty?.(addr, done);
  }
  return done;
}

/**
 * The asynchronous form of {@link writeToFd}.
 *
 * Safety: guest memory must stay open until the promise settles; the guest may
 * change the bytes while they are being written (as with DMA on real hardware).
 * @throws {@link GuestMemoryError} (as a rejection) range and argument errors
 *   before any I/O, `"Io"` if a write fails.
 */
export async function writeToFdAsync(
  mem: GuestMemory,
  fd: number,
  addr: GuestAddress,
  len: number,
  position: FilePosition = null,
): Promise<number> {
  checkPosition(position);
  let views = sliceRange(mem, addr, len);
  let done = 0;
  while (done < len) {
    let n: number;
    try {
      n = await new Promise<number>((resolve, reject) =>
        writev(fd, views, position === null ? null : position + done, (err, bytes) => (err ? reject(err) : resolve(bytes))),
      );
    } catch (e) {
      throw ioError("writev", fd, done, e);
    }
    if (n === 0) throw ioError("writev", fd, done, new Error("no progress"));
    done += n;
    views = advance(views, n);
  }
  return done;
}
