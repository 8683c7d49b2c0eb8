// The packed virtqueue (virtio 1.2 §2.8, oasis-tcs/virtio-spec packed-ring.tex).
// Layout, little-endian:
//   descriptor ring: size x { le64 addr; le32 len; le16 id; le16 flags }          align 16
//   driver area (driver event suppression, read by the device):  le16 off_wrap; le16 flags   align 4
//   device area (device event suppression, written by the device): le16 off_wrap; le16 flags align 4
// A descriptor is available when its AVAIL bit equals the driver wrap counter and
// its USED bit does not; the device marks one used by setting both to its own wrap
// counter. A list of N descriptors gets one used descriptor; both sides skip N slots.
import type { GuestMemory } from "@ts-vmm/vm-memory";
import {
  DESCRIPTOR_SIZE,
  MAX_INDIRECT_DESCRIPTORS,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
} from "./constants.js";
import { VirtqueueError, wrapMemoryError } from "./errors.js";
import type { QueueCore } from "./queue-core.js";
import type { ReusableChain } from "./reusable-chain.js";
import { DESC_WORDS, chainTooLong, guestAddress } from "./split-ring.js";

/** Bytes of each packed event suppression structure. */
export const PACKED_EVENT_SIZE = 4;

function isAvailable(flags: number, wrap: boolean): boolean {
  const avail = (flags & VIRTQ_DESC_F_AVAIL) !== 0;
  const used = (flags & VIRTQ_DESC_F_USED) !== 0;
  return avail === wrap && used !== wrap;
}

/**
 * Pops the next available chain into `out`; false if there is none.
 * @throws {@link VirtqueueError} see `Queue.popDescriptorChain`.
 */
export function popPacked(q: QueueCore, mem: GuestMemory, out: ReusableChain): boolean {
  const size = q.size;
  const ring = q.descTable;
  const start = q.nextAvail;
  let headFlags: number;
  try {
    headFlags = mem.loadU16Acquire(ring + start * DESCRIPTOR_SIZE + 14);
  } catch (e) {
    throw wrapMemoryError(e, "RingOutOfBounds", "reading the descriptor ring", { addr: ring + start * 16 });
  }
  if (!isAvailable(headFlags, q.availWrap)) return false;

  // Pass 1: find where the list ends (its last descriptor holds the buffer id).
  // The driver makes the head available last, so the rest is already written.
  // Each descriptor's flags are read once, here; pass 2 uses these copies.
  const flagList = q.flagScratch;
  let count = 0;
  let pos = start;
  let flags = headFlags;
  let id: number;
  try {
    for (;;) {
      if (count === size) {
        throw new VirtqueueError(
          "ChainTooLong",
          `descriptor list at ${start} has NEXT set on all ${size} ring slots: the queue is broken`,
        );
      }
      flagList[count++] = flags;
      if (!(flags & VIRTQ_DESC_F_NEXT)) {
        id = mem.readU16(ring + pos * DESCRIPTOR_SIZE + 12);
        break;
      }
      pos = pos + 1 === size ? 0 : pos + 1;
      flags = mem.readU16(ring + pos * DESCRIPTOR_SIZE + 14);
    }
  } catch (e) {
    throw wrapMemoryError(e, "RingOutOfBounds", "reading the descriptor ring");
  }

  // A driver reuses a slot only once a buffer that took it came back, so what
  // is in flight never takes more slots than the ring has (Linux's num_free
  // accounting). A list over slots still in flight is the packed form of an
  // avail index too far ahead: the ring is broken, nothing is consumed.
  if (q.inFlight.totalSlots + count > size) {
    throw new VirtqueueError(
      "AvailIndexAhead",
      `list of ${count} at ${start} is made available over ring slots still in flight (${q.inFlight.totalSlots} of ${size})`,
    );
  }

  // A reused id is refused before anything moves (like AvailIndexAhead: the ring is
  // broken): a consumed list that is not in flight would leave the avail position ahead
  // of the used one by slots nobody returns, the invariant fromState checks.
  if (q.inFlight.get(id) !== undefined) {
    throw new VirtqueueError("BufferIdInUse", `buffer id ${id} is made available again while in flight`);
  }

  // The list is consumed from here on, whatever it holds.
  const end = start + count;
  if (end >= size) {
    q.nextAvail = end - size;
    q.availWrap = !q.availWrap;
  } else {
    q.nextAvail = end;
  }
  q.inFlight.set(id, count);

  const limit = q.chainLimit();
  if (count > limit) throw chainTooLong(id, limit);

  // Pass 2: read and check the descriptors.
  out.begin(id, "buffer");
  readPackedList(mem, ring, size, start, flagList, count, id, q.indirectDesc, limit, out);
  return true;
}

function readPackedList(
  mem: GuestMemory,
  ring: number,
  size: number,
  start: number,
  flagList: readonly number[],
  count: number,
  id: number,
  indirectDesc: boolean,
  limit: number,
  acc: ReusableChain,
): void {
  let pos = start;
  for (let i = 0; i < count; i++) {
    const base = ring + pos * DESCRIPTOR_SIZE;
    const flags = flagList[i] as number;
    // One checked read of the whole slot; its id and flags word is not used (the flags
    // were read once in pass 1, and the id is the list's last descriptor's).
    const w = DESC_WORDS;
    try {
      mem.readU32s(base, w);
    } catch (e) {
      throw wrapMemoryError(e, "RingOutOfBounds", `reading descriptor ${pos}`, { head: id, addr: base });
    }
    const lo = w[0] as number;
    const hi = w[1] as number;
    const len = w[2] as number;
    if (flags & VIRTQ_DESC_F_INDIRECT) {
      if (!indirectDesc) {
        throw new VirtqueueError("IndirectNotNegotiated", `buffer ${id}: indirect descriptor without VIRTIO_F_INDIRECT_DESC`, {
          head: id,
        });
      }
      if (count !== 1) {
        throw new VirtqueueError(
          "IndirectWithNext",
          `buffer ${id}: an indirect descriptor is part of a list of ${count} linked by NEXT`,
          { head: id },
        );
      }
      readIndirect(mem, id, lo, hi, len, limit, acc);
      return;
    }
    acc.add(guestAddress(lo, hi, id), len, (flags & VIRTQ_DESC_F_WRITE) !== 0);
    pos = pos + 1 === size ? 0 : pos + 1;
  }
}

/** A packed indirect table: len/16 consecutive descriptors; only WRITE is meaningful in them. */
function readIndirect(
  mem: GuestMemory,
  id: number,
  lo: number,
  hi: number,
  len: number,
  limit: number,
  acc: ReusableChain,
): void {
  if (len === 0 || len % DESCRIPTOR_SIZE !== 0 || len / DESCRIPTOR_SIZE > MAX_INDIRECT_DESCRIPTORS) {
    throw new VirtqueueError(
      "InvalidIndirectLength",
      `buffer ${id}: indirect table length ${len} is not a non-zero multiple of 16 up to ${MAX_INDIRECT_DESCRIPTORS} entries`,
      { head: id },
    );
  }
  // Checked before any entry is read: a guest cannot make one pop walk more than the limit.
  if (len / DESCRIPTOR_SIZE > limit) throw chainTooLong(id, limit);
  const table = guestAddress(lo, hi, id);
  if (!mem.checkRange(table, len)) {
    throw new VirtqueueError(
      "IndirectTableOutOfBounds",
      `buffer ${id}: indirect table [0x${table.toString(16)}, +${len}) is not inside guest memory`,
      { head: id, addr: table },
    );
  }
  acc.indirect = true;
  const n = len / DESCRIPTOR_SIZE;
  for (let i = 0; i < n; i++) {
    const base = table + i * DESCRIPTOR_SIZE;
    const w = DESC_WORDS;
    try {
      mem.readU32s(base, w);
    } catch (e) {
      throw wrapMemoryError(e, "IndirectTableOutOfBounds", `reading indirect descriptor ${i}`, { head: id, addr: base });
    }
    const dlo = w[0] as number;
    const dhi = w[1] as number;
    const dlen = w[2] as number;
    const flags = (w[3] as number) >>> 16;
    // NEXT, INDIRECT, AVAIL, USED and the id are reserved in an indirect table and ignored (§2.8.7).
    acc.add(guestAddress(dlo, dhi, id), dlen, (flags & VIRTQ_DESC_F_WRITE) !== 0);
  }
}

/**
 * Writes the used descriptor for buffer `id` at the device's position and skips
 * the slots its list took.
 * @throws {@link VirtqueueError} see `Queue.addUsed`.
 */
export function addUsedPacked(q: QueueCore, mem: GuestMemory, id: number, len: number): void {
  // Number.isInteger first: a typed array would also take "5" or [5] as index 5.
  const slots = Number.isInteger(id) ? q.inFlight.get(id) : undefined;
  if (slots === undefined) {
    throw new VirtqueueError("UnknownBufferId", `buffer id ${id} is not in flight`);
  }
  const base = q.descTable + q.nextUsed * DESCRIPTOR_SIZE;
  let flags = q.usedWrap ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0;
  if (len > 0) flags |= VIRTQ_DESC_F_WRITE;
  try {
    mem.writeU32(base + 8, len);
    mem.writeU16(base + 12, id);
    // Release: id and len are visible before the flags that mark the descriptor used.
    mem.storeU16Release(base + 14, flags);
  } catch (e) {
    throw wrapMemoryError(e, "RingOutOfBounds", "writing a used descriptor", { addr: base, head: id });
  }
  q.inFlight.delete(id);
  q.usedSinceSignal = Math.min(q.usedSinceSignal + slots, 2 * q.size);
  const next = q.nextUsed + slots;
  if (next >= q.size) {
    q.nextUsed = next - q.size;
    q.usedWrap = !q.usedWrap;
  } else {
    q.nextUsed = next;
  }
}

/** The used position as one number in [0, 2*size): wrap counter 1 is the first half. */
function usedPosition(q: QueueCore): number {
  return q.nextUsed + (q.usedWrap ? 0 : q.size);
}

/**
 * Whether the driver wants a used-buffer notification for what was used since
 * the last call, from the driver event suppression structure (§2.8.10).
 */
export function needsNotificationPacked(q: QueueCore, mem: GuestMemory): boolean {
  let word: number;
  try {
    // Sequentially consistent: ordered after the used flags stores.
    word = mem.loadU32Acquire(q.availRing);
  } catch (e) {
    throw wrapMemoryError(e, "RingOutOfBounds", "reading the driver event suppression area");
  }
  const span = 2 * q.size;
  const newPos = usedPosition(q);
  const oldPos = q.signalledUsed;
  // Slots used since the last check, counted (not the position difference, which
  // aliases to 0 once 2*size slots were used in between: a lost interrupt).
  const moved = q.usedSinceSignal;
  q.signalledUsed = newPos;
  q.usedSinceSignal = 0;
  const flags = (word >>> 16) & 3;
  if (flags === RING_EVENT_FLAGS_DISABLE) return false;
  if (flags !== RING_EVENT_FLAGS_DESC || !q.eventIdx) return true; // ENABLE, reserved, or DESC without EVENT_IDX
  const off = word & 0x7fff;
  if (off >= q.size) return true; // nonsense offset: a spurious notification is always safe
  const event = off + ((word & 0x8000) !== 0 ? 0 : q.size);
  // Every position was passed, the event's included.
  if (moved >= span) return true;
  // Was the event slot passed between oldPos and newPos (mod 2*size)?
  const dist = (event - oldPos + span) % span;
  return dist < moved;
}

/** Asks the driver for notifications; returns whether a chain is already waiting. */
export function enableNotificationPacked(q: QueueCore, mem: GuestMemory): boolean {
  // Slots given back (undoPop) were seen: ask for the descriptor after them.
  let pos = q.nextAvail + Math.min(q.unpopped, q.size);
  let wrap = q.availWrap;
  if (pos >= q.size) {
    pos -= q.size;
    wrap = !wrap;
  }
  const word = q.eventIdx ? (pos | (wrap ? 0x8000 : 0)) | (RING_EVENT_FLAGS_DESC << 16) : RING_EVENT_FLAGS_ENABLE << 16;
  try {
    mem.storeU32Release(q.usedRing, word >>> 0);
    const flags = mem.loadU16Acquire(q.descTable + pos * DESCRIPTOR_SIZE + 14);
    return isAvailable(flags, wrap);
  } catch (e) {
    throw wrapMemoryError(e, "RingOutOfBounds", "updating notification suppression");
  }
}

/** Asks the driver not to notify. */
export function disableNotificationPacked(q: QueueCore, mem: GuestMemory): void {
  try {
    mem.storeU32Release(q.usedRing, (RING_EVENT_FLAGS_DISABLE << 16) >>> 0);
  } catch (e) {
    throw wrapMemoryError(e, "RingOutOfBounds", "updating notification suppression");
  }
}
