import { checkGuestAddress, checkLength, type GuestAddress } from "./address.js";
import { GuestMemoryError } from "./error.js";
import type { GuestMemory } from "./guest-memory.js";

/**
 * Zero-copy views covering `[addr, addr + len)`, one per region the range
 * crosses (the range may span contiguous regions). The whole range is checked
 * before any view is returned. For `len === 0` the result is empty, and
 * `addr` must still be backed.
 *
 * Safety: the views alias guest memory (see `GuestMemory.slice`): the guest can
 * change them at any time, writes through them are not dirty-tracked (call
 * `markDirty`), and they must not be used after the memory is closed.
 *
 * @throws {@link GuestMemoryError} `"Closed"` after the memory was closed, `"Hole"` if `addr` is not backed,
 *   `"OutOfBounds"` if the range runs past backed memory, `"InvalidArgument"`
 *   / `"AddressTooLarge"` for malformed input.
 */
export function sliceRange(mem: GuestMemory, addr: GuestAddress, len: number): Uint8Array[] {
  checkGuestAddress(addr);
  checkLength(len);
  const first = mem.findRegion(addr);
  if (first === undefined) {
    // A closed memory has no regions: say so instead of "Hole" (readFromFd, writeToFd and
    // the streams go through here too).
    if ((mem as { readonly isClosed?: unknown }).isClosed === true) {
      throw new GuestMemoryError("Closed", "guest memory is closed", { addr, len });
    }
    throw new GuestMemoryError("Hole", `address 0x${addr.toString(16)} is not in guest memory`, { addr, len });
  }
  const out: Uint8Array[] = [];
  let cur = addr;
  let left = len;
  let r = first;
  for (;;) {
    const n = Math.min(left, r.end - cur);
    if (n > 0) out.push(mem.slice(cur, n));
    cur += n;
    left -= n;
    if (left === 0) return out;
    const next = mem.findRegion(cur);
    if (next === undefined || next.start !== cur) {
      throw new GuestMemoryError("OutOfBounds", `range [0x${addr.toString(16)}, +${len}) runs past backed memory at 0x${cur.toString(16)}`, {
        addr,
        len,
      });
    }
    r = next;
  }
}
