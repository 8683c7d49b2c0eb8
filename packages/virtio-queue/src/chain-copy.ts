import type { GuestMemory } from "@ts-vmm/vm-memory";
import { VirtqueueError, isGuestMemoryError } from "./errors.js";

/**
 * A chain's buffers as the copy loops below read them: {@link DescriptorChain} (objects) and
 * {@link ReusableChain} (typed arrays) both provide it, so their `readInto`, `readAll` and
 * `writeFrom` share one implementation. Each class keeps its own one-buffer fast path, which
 * inlines into callers; the loops here are the general case.
 * @internal
 */
export interface ChainBuffers {
  readonly head: number;
  readonly length: number;
  readonly readableCount: number;
  readonly readableLength: number;
  readonly writableLength: number;
  addrAt(i: number): number;
  lenAt(i: number): number;
}

/**
 * The error for a buffer outside guest memory (rethrows anything that is not a guest memory error).
 * @internal
 */
export function bufferError(cause: unknown, addr: number, len: number, head: number): VirtqueueError {
  if (cause !== undefined && !isGuestMemoryError(cause)) throw cause;
  return new VirtqueueError(
    "BufferOutOfBounds",
    `buffer [0x${addr.toString(16)}, +${len}) of chain ${head} is not inside guest memory`,
    { addr, head, cause },
  );
}

function checkOffset(offset: number): void {
  if (!(Number.isSafeInteger(offset) && offset >= 0)) {
    throw new VirtqueueError("InvalidArgument", `offset ${String(offset)} is not a non-negative integer`);
  }
}

/**
 * `readInto`'s general case: any offset, several buffers; stops at the end of `dest` or of the
 * readable part. Guest memory is untouched; `dest` may be partly filled when a buffer is outside it.
 * @internal
 */
export function readIntoAny(c: ChainBuffers, mem: GuestMemory, dest: Uint8Array, offset: number): number {
  checkOffset(offset);
  const want = dest.length;
  let skip = offset;
  let done = 0;
  for (let i = 0; i < c.readableCount && done < want; i++) {
    const len = c.lenAt(i);
    if (skip >= len) {
      skip -= len;
      continue;
    }
    const n = Math.min(len - skip, want - done);
    const addr = c.addrAt(i) + skip;
    try {
      mem.read(addr, n === want ? dest : dest.subarray(done, done + n));
    } catch (e) {
      throw bufferError(e, addr, n, c.head);
    }
    done += n;
    skip = 0;
  }
  return done;
}

/**
 * `readAll`: the readable part in a new array, refused above `maxLength` (the length is
 * guest-chosen, up to 4 GiB).
 * @internal
 */
export function readAllOf(c: ChainBuffers & { readInto(mem: GuestMemory, dest: Uint8Array): number }, mem: GuestMemory, maxLength: number): Uint8Array {
  if (c.readableLength > maxLength) {
    throw new VirtqueueError("LimitExceeded", `readable part is ${c.readableLength} bytes, above the limit of ${maxLength}`, { head: c.head });
  }
  const out = new Uint8Array(c.readableLength);
  c.readInto(mem, out);
  return out;
}

/**
 * `writeFrom`'s general case: every target range is checked before anything is written, so the
 * write is all-or-nothing.
 * @internal
 */
export function writeFromAny(c: ChainBuffers, mem: GuestMemory, src: Uint8Array, offset: number): number {
  checkOffset(offset);
  const total = src.length;
  if (offset + total > c.writableLength) {
    throw new VirtqueueError("BufferTooSmall", `writing ${total} bytes at offset ${offset} into a writable part of ${c.writableLength} bytes`, { head: c.head });
  }
  if (total === 0) return 0;
  const first = c.readableCount;
  // One buffer takes the whole write.
  const l0 = c.lenAt(first);
  if (offset + total <= l0) {
    const a = c.addrAt(first) + offset;
    try {
      mem.write(a, src);
    } catch (e) {
      throw bufferError(e, a, total, c.head);
    }
    return total;
  }
  for (let pass = 0; pass < 2; pass++) {
    let skip = offset;
    let done = 0;
    for (let i = first; i < c.length && done < total; i++) {
      const len = c.lenAt(i);
      if (skip >= len) {
        skip -= len;
        continue;
      }
      const n = Math.min(len - skip, total - done);
      const addr = c.addrAt(i) + skip;
      if (pass === 0) {
        if (!mem.checkRange(addr, n)) throw bufferError(undefined, addr, n, c.head);
      } else {
        try {
          mem.write(addr, n === total ? src : src.subarray(done, done + n));
        } catch (e) {
          throw bufferError(e, addr, n, c.head);
        }
      }
      done += n;
      skip = 0;
    }
  }
  return total;
}
