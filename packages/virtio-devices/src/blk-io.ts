// Host I/O helpers of virtio-blk: guest ranges to views, readv/writev loops
// over short transfers and IOV_MAX, zeroing a range.
import { readv, readvSync, writev, writevSync } from "node:fs";
import { sliceRange, type GuestMemory } from "@ts-vmm/vm-memory";
import { fallocate } from "@ts-vmm/vmm-sys-util";
import type { Segment } from "./blk-request.js";

/** Linux's IOV_MAX: one readv/writev takes at most this many views. */
const IOV_MAX = 1024;

/** Views of guest memory for `segs`, or undefined if any byte is outside guest memory. @internal */
export function viewsOf(mem: GuestMemory, segs: readonly Segment[]): Uint8Array[] | undefined {
  const views: Uint8Array[] = [];
  try {
    for (const s of segs) for (const v of sliceRange(mem, s.addr, s.len)) views.push(v);
  } catch {
    return undefined; // a buffer outside guest memory: IOERR, never a silent success
  }
  return views;
}

/** Copies `src` into the segments, all-or-nothing. @internal */
export function writeSegments(mem: GuestMemory, segs: readonly Segment[], src: Uint8Array): boolean {
  let at = 0;
  for (const s of segs) {
    if (at >= src.length) break;
    const n = Math.min(s.len, src.length - at);
    if (!mem.checkRange(s.addr, n)) return false;
    at += n;
  }
  at = 0;
  for (const s of segs) {
    if (at >= src.length) break;
    const n = Math.min(s.len, src.length - at);
    mem.write(s.addr, src.subarray(at, at + n));
    at += n;
  }
  return true;
}

/** Drops the first `n` bytes of a view list (after a short transfer). */
function advance(views: Uint8Array[], n: number): Uint8Array[] {
  let i = 0;
  while (i < views.length && n >= views[i]!.length) n -= views[i++]!.length;
  const rest = views.slice(i);
  if (n > 0 && rest.length > 0) rest[0] = rest[0]!.subarray(n);
  return rest;
}

/** readv/writev the views at `pos` until `len` bytes moved. @internal */
export function transferSync(fd: number, views: Uint8Array[], pos: number, write: boolean, len: number): boolean {
  let done = 0;
  let rest = views;
  try {
    while (done < len) {
      const batch = rest.length > IOV_MAX ? rest.slice(0, IOV_MAX) : rest;
      const n = write ? writevSync(fd, batch, pos + done) : readvSync(fd, batch, pos + done);
      if (n <= 0) return false; // EOF inside the capacity (the file shrank) or no progress
      done += n;
      rest = advance(rest, n);
    }
  } catch {
    return false;
  }
  return true;
}

/** The thread-pool form of {@link transferSync}. @internal */
export function transferAsync(fd: number, views: Uint8Array[], pos: number, write: boolean, len: number, cb: (ok: boolean) => void): void {
  let done = 0;
  let rest = views;
  const step = (): void => {
    const batch = rest.length > IOV_MAX ? rest.slice(0, IOV_MAX) : rest;
    const after = (e: NodeJS.ErrnoException | null, n: number): void => {
      if (e || n <= 0) return cb(false);
      done += n;
      if (done >= len) return cb(true);
      rest = advance(rest, n);
      step();
    };
    if (write) writev(fd, batch, pos + done, after);
    else readv(fd, batch, pos + done, after);
  };
  step();
}

const ZEROES = new Uint8Array(1 << 20);

/** Makes a file range read as zeros (fallocate, or writing zeros). @internal */
export function zeroRange(fd: number, off: number, len: number, unmap: boolean): boolean {
  try {
    fallocate(fd, off, len, unmap ? "punchHole" : "zeroRange");
    return true;
  } catch (e) {
    if ((e as { code?: string }).code !== "EOPNOTSUPP") return false;
  }
  // The file system cannot do it: write zeros.
  let done = 0;
  try {
    while (done < len) {
      const n = Math.min(len - done, ZEROES.length);
      done += writevSync(fd, [ZEROES.subarray(0, n)], off + done);
    }
  } catch {
    return false;
  }
  return true;
}
