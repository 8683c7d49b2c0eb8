// The split virtqueue (virtio 1.2 §2.7, oasis-tcs/virtio-spec split-ring.tex).
// Layout, little-endian:
//   descriptor table: size x { le64 addr; le32 len; le16 flags; le16 next }   align 16
//   avail ring:       le16 flags; le16 idx; le16 ring[size]; le16 used_event align 2
//   used ring:        le16 flags; le16 idx; {le32 id; le32 len}[size]; le16 avail_event  align 4
import { toGuestAddress, type GuestMemory } from "@ts-vmm/vm-memory";
import {
  DESCRIPTOR_SIZE,
  MAX_INDIRECT_DESCRIPTORS,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from "./constants.js";
import { VirtqueueError, wrapMemoryError } from "./errors.js";
import type { QueueCore } from "./queue-core.js";
import type { ReusableChain } from "./reusable-chain.js";

/**
 * Scratch for one descriptor as four u32 words (addr lo, addr hi, len, and flags | next << 16
 * for split, id | flags << 16 for packed), read with one checked `readU32s`. One per thread
 * (module instance); a walk copies each descriptor's fields out before the next read.
 * @internal
 */
export const DESC_WORDS = new Uint32Array(4);

/** Bytes of the avail ring for `size` entries, `used_event` included. */
export function splitAvailSize(size: number): number {
  return 6 + 2 * size;
}

/** Bytes of the used ring for `size` entries, `avail_event` included. */
export function splitUsedSize(size: number): number {
  return 6 + 8 * size;
}

/**
 * Pops the next available chain into `out`; false if there is none.
 * @throws {@link VirtqueueError} see `Queue.popDescriptorChain`.
 */
export function popSplit(q: QueueCore, mem: GuestMemory, out: ReusableChain): boolean {
  const size = q.size;
  let pending = (q.availIdxCache - q.nextAvail) & 0xffff;
  if (pending === 0) {
    let idx: number;
    try {
      idx = mem.loadU16Acquire(q.availRing + 2);
    } catch (e) {
      throw wrapMemoryError(e, "RingOutOfBounds", "reading the avail index", { addr: q.availRing + 2 });
    }
    pending = (idx - q.nextAvail) & 0xffff;
    if (pending === 0) return false;
    if (pending > size) {
      throw new VirtqueueError(
        "AvailIndexAhead",
        `avail idx ${idx} is ${pending} entries ahead of the device (${q.nextAvail}), more than the queue size ${size}`,
      );
    }
    q.availIdxCache = idx;
  }
  const slotAddr = q.availRing + 4 + 2 * (q.nextAvail & (size - 1));
  let head: number;
  try {
    head = mem.readU16(slotAddr);
  } catch (e) {
    throw wrapMemoryError(e, "RingOutOfBounds", "reading the avail ring", { addr: slotAddr });
  }
  // The entry is consumed from here on, whatever the chain holds.
  q.nextAvail = (q.nextAvail + 1) & 0xffff;
  if (head >= size) {
    throw new VirtqueueError("InvalidDescriptorIndex", `avail ring entry ${head} is outside a table of ${size}`);
  }
  walkSplitChain(q, mem, head, out);
  return true;
}

/**
 * Follows a chain from `head`, through at most one indirect table, into `out` (which checks
 * the readable-then-writable order and the total length as each buffer is added).
 */
function walkSplitChain(q: QueueCore, mem: GuestMemory, head: number, out: ReusableChain): void {
  out.begin(head);
  let table = q.descTable;
  let tableLen = q.size;
  let idx = head;
  let ttl = q.size;
  const limit = q.chainLimit();
  for (;;) {
    if (out.length >= limit) throw chainTooLong(head, limit);
    if (ttl-- === 0) {
      throw new VirtqueueError(
        "ChainTooLong",
        `chain ${head} is longer than its ${out.indirect ? "indirect table" : "queue"} (${tableLen}): a loop`,
        { head },
      );
    }
    const base = table + idx * DESCRIPTOR_SIZE;
    // The whole descriptor in one checked read (issue 13), each field taken once.
    const w = DESC_WORDS;
    try {
      mem.readU32s(base, w);
    } catch (e) {
      throw wrapMemoryError(
        e,
        out.indirect ? "IndirectTableOutOfBounds" : "RingOutOfBounds",
        `reading descriptor ${idx} of chain ${head}`,
        { head, addr: base },
      );
    }
    const lo = w[0] as number;
    const hi = w[1] as number;
    const len = w[2] as number;
    const flags = (w[3] as number) & 0xffff;
    const next = (w[3] as number) >>> 16;
    if (flags & VIRTQ_DESC_F_INDIRECT) {
      if (!q.indirectDesc) {
        throw new VirtqueueError("IndirectNotNegotiated", `chain ${head}: indirect descriptor without VIRTIO_F_INDIRECT_DESC`, {
          head,
        });
      }
      if (out.indirect) {
        throw new VirtqueueError("NestedIndirect", `chain ${head} has an indirect descriptor inside an indirect table`, {
          head,
        });
      }
      if (flags & VIRTQ_DESC_F_NEXT) {
        throw new VirtqueueError("IndirectWithNext", `chain ${head}: descriptor ${idx} has both INDIRECT and NEXT`, {
          head,
        });
      }
      if (len === 0 || len % DESCRIPTOR_SIZE !== 0 || len / DESCRIPTOR_SIZE > MAX_INDIRECT_DESCRIPTORS) {
        throw new VirtqueueError(
          "InvalidIndirectLength",
          `chain ${head}: indirect table length ${len} is not a non-zero multiple of 16 up to ${MAX_INDIRECT_DESCRIPTORS} entries`,
          { head },
        );
      }
      const taddr = guestAddress(lo, hi, head);
      if (!mem.checkRange(taddr, len)) {
        throw new VirtqueueError(
          "IndirectTableOutOfBounds",
          `chain ${head}: indirect table [0x${taddr.toString(16)}, +${len}) is not inside guest memory`,
          { head, addr: taddr },
        );
      }
      // Checked before any entry is read: a guest cannot make one pop walk more than the limit.
      if (out.length + len / DESCRIPTOR_SIZE > limit) throw chainTooLong(head, limit);
      out.indirect = true;
      table = taddr;
      tableLen = len / DESCRIPTOR_SIZE;
      ttl = tableLen;
      idx = 0;
      continue;
    }
    out.add(guestAddress(lo, hi, head), len, (flags & VIRTQ_DESC_F_WRITE) !== 0);
    if (!(flags & VIRTQ_DESC_F_NEXT)) break;
    if (next >= tableLen) {
      throw new VirtqueueError(
        "InvalidDescriptorIndex",
        `chain ${head}: next ${next} is outside its ${out.indirect ? "indirect " : ""}table of ${tableLen}`,
        { head },
      );
    }
    idx = next;
  }
}

/**
 * A chain over the queue's chain limit.
 * @internal
 */
export function chainTooLong(head: number, limit: number): VirtqueueError {
  return new VirtqueueError("ChainTooLong", `chain ${head} has more than ${limit} descriptors (the chain limit)`, {
    head,
  });
}

/**
 * A guest-written u64 as an address.
 * @internal
 */
export function guestAddress(lo: number, hi: number, head: number): number {
  if (hi < 0x10_0000) return hi * 0x1_0000_0000 + lo;
  try {
    return toGuestAddress(lo, hi);
  } catch (e) {
    throw wrapMemoryError(e, "AddressTooLarge", `chain ${head}: descriptor address`, { head });
  }
}

/**
 * Puts `head` with `len` written bytes in the used ring and, with `publish`, stores the used
 * `idx` (release), which also publishes every entry written before it without `publish`.
 * @throws {@link VirtqueueError} see `Queue.addUsed`.
 */
export function addUsedSplit(q: QueueCore, mem: GuestMemory, head: number, len: number, publish: boolean): void {
  if (!(Number.isInteger(head) && head >= 0 && head < q.size)) {
    throw new VirtqueueError("InvalidDescriptorIndex", `head ${head} is not below the queue size ${q.size}`);
  }
  // A full ring of unpublished entries (only a device returning a head twice gets here):
  // publish them before this one overwrites the oldest's slot.
  if (((q.nextUsed - q.usedPublished) & 0xffff) >= q.size) publishUsedSplit(q, mem);
  const next = (q.nextUsed + 1) & 0xffff;
  const entry = q.usedRing + 4 + 8 * (q.nextUsed & (q.size - 1));
  try {
    mem.writeU32(entry, head);
    mem.writeU32(entry + 4, len);
    // Release: the entries are visible before the index that publishes them.
    if (publish) mem.storeU16Release(q.usedRing + 2, next);
  } catch (e) {
    throw wrapMemoryError(e, "RingOutOfBounds", "writing the used ring", { addr: entry, head });
  }
  q.nextUsed = next;
  if (publish) q.usedPublished = next;
  q.numAdded = (q.numAdded + 1) & 0xffff;
}

/**
 * Stores the used `idx` (release) if entries were written since it was last stored.
 * @throws {@link VirtqueueError} `"RingOutOfBounds"`.
 */
export function publishUsedSplit(q: QueueCore, mem: GuestMemory): void {
  const next = q.nextUsed;
  if (q.usedPublished === next) return;
  try {
    mem.storeU16Release(q.usedRing + 2, next);
  } catch (e) {
    throw wrapMemoryError(e, "RingOutOfBounds", "publishing the used index", { addr: q.usedRing + 2 });
  }
  q.usedPublished = next;
}

/**
 * Whether the driver wants a used-buffer notification for the entries added
 * since the last call (virtio 1.2 §2.7.7).
 */
export function needsNotificationSplit(q: QueueCore, mem: GuestMemory): boolean {
  // The decision is about what the driver can see: deferred entries are published first.
  publishUsedSplit(q, mem);
  try {
    if (q.eventIdx) {
      // The used idx store was sequentially consistent, so this load is ordered after it.
      const usedEvent = mem.loadU16Acquire(q.availRing + 4 + 2 * q.size);
      const newIdx = q.nextUsed;
      const oldIdx = (newIdx - q.numAdded) & 0xffff;
      q.numAdded = 0;
      return vringNeedEvent(usedEvent, newIdx, oldIdx);
    }
    q.numAdded = 0;
    return (mem.loadU16Acquire(q.availRing) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  } catch (e) {
    throw wrapMemoryError(e, "RingOutOfBounds", "reading the avail ring");
  }
}

/** Asks the driver for notifications; returns whether chains are already waiting. */
export function enableNotificationSplit(q: QueueCore, mem: GuestMemory): boolean {
  try {
    // Chains given back (undoPop) were seen: ask for the entry after them.
    const seen = (q.nextAvail + q.unpopped) & 0xffff;
    if (q.eventIdx) mem.storeU16Release(q.usedRing + 4 + 8 * q.size, seen);
    else mem.storeU16Release(q.usedRing, 0);
    // Sequentially consistent store then load: no notification can be lost in between.
    const idx = mem.loadU16Acquire(q.availRing + 2);
    return idx !== seen;
  } catch (e) {
    throw wrapMemoryError(e, "RingOutOfBounds", "updating notification suppression");
  }
}

/** Asks the driver not to notify (without EVENT_IDX; with it, the driver stops once avail_event is passed). */
export function disableNotificationSplit(q: QueueCore, mem: GuestMemory): void {
  if (q.eventIdx) return;
  try {
    mem.storeU16Release(q.usedRing, VIRTQ_USED_F_NO_NOTIFY);
  } catch (e) {
    throw wrapMemoryError(e, "RingOutOfBounds", "updating notification suppression");
  }
}
