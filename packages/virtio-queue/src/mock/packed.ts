import type { GuestAddress, GuestMemory } from "@ts-vmm/vm-memory";
import {
  DESCRIPTOR_SIZE,
  MAX_QUEUE_SIZE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
} from "../constants.js";
import { VirtqueueError } from "../errors.js";
import { PACKED_EVENT_SIZE } from "../packed-ring.js";
import { Queue } from "../queue.js";
import { Scratch, alignUp, writeAddr, type MockBuffer, type MockQueueOptions, type MockUsed } from "./buffers.js";

/** A raw packed descriptor; AVAIL/USED are added by the mock unless `rawFlags`. */
export interface RawPackedDescriptor {
  /** Address; a bigint may be any 64-bit value. */
  readonly addr: number | bigint;
  /** Length (u32). */
  readonly len: number;
  /** Buffer id (u16). */
  readonly id: number;
  /** NEXT / WRITE / INDIRECT bits. */
  readonly flags: number;
}

/** A ring position with its wrap counter. */
export interface MockRingPosition {
  /** Offset in the ring, in descriptors. */
  readonly offset: number;
  /** Wrap counter. */
  readonly wrap: boolean;
}

/** A packed event suppression structure, decoded. */
export interface MockEventState extends MockRingPosition {
  /** RING_EVENT_FLAGS_ENABLE, _DISABLE or _DESC. */
  readonly flags: number;
}

/** A used descriptor as the packed driver reads it. */
export interface MockPackedUsed extends MockUsed {
  /** Its flags (WRITE set when the device reported written bytes). */
  readonly flags: number;
}

/**
 * Plays the guest driver of a packed virtqueue over real guest memory: keeps
 * the driver wrap counters, writes lists of descriptors making the head
 * available last (as the spec requires), and reads used descriptors skipping
 * each list's length. The device side is a real {@link Queue} from
 * {@link MockPackedQueue.createQueue}.
 */
export class MockPackedQueue {
  /** Guest memory the ring lives in. */
  readonly mem: GuestMemory;
  /** Queue size (any value in [1, 32768]). */
  readonly size: number;
  /** Descriptor ring address. */
  readonly descRing: GuestAddress;
  /** Driver event suppression area (the queue's driver area). */
  readonly driverEvent: GuestAddress;
  /** Device event suppression area (the queue's device area). */
  readonly deviceEvent: GuestAddress;
  /** First address after the structures. */
  readonly end: GuestAddress;
  /** Whether the queue is set up with VIRTIO_F_EVENT_IDX. */
  readonly eventIdx: boolean;
  private nextAvail = 0;
  private availWrap = true;
  private nextUsed = 0;
  private usedWrap = true;
  private freeSlots: number;
  private readonly freeIds: number[] = [];
  private readonly lists = new Map<number, { slots: number; table?: [number, number] }>();
  private readonly scratch: Scratch;

  /**
   * Lays out and zeroes the ring and event areas.
   * @throws `VirtqueueError` `"InvalidQueueSize"` if `size` is not in [1, 32768];
   *   a `GuestMemoryError` if they do not fit in `mem`.
   */
  constructor(mem: GuestMemory, size: number, opts: MockQueueOptions = {}) {
    if (!(Number.isInteger(size) && size >= 1 && size <= MAX_QUEUE_SIZE)) {
      throw new VirtqueueError("InvalidQueueSize", `mock packed queue size ${size}`);
    }
    this.mem = mem;
    this.size = size;
    this.eventIdx = opts.eventIdx ?? false;
    this.descRing = alignUp(opts.base ?? 0, 16);
    this.driverEvent = this.descRing + DESCRIPTOR_SIZE * size;
    this.deviceEvent = this.driverEvent + PACKED_EVENT_SIZE;
    this.end = this.deviceEvent + PACKED_EVENT_SIZE;
    mem.write(this.descRing, new Uint8Array(this.end - this.descRing));
    this.freeSlots = size;
    for (let i = size - 1; i >= 0; i--) this.freeIds.push(i);
    const [s, e] = opts.scratch ?? [alignUp(this.end, 16), alignUp(this.end, 16) + 0x10000];
    this.scratch = new Scratch(s, e);
  }

  /** A ready packed device-side queue over this ring. */
  createQueue(): Queue {
    const q = new Queue(2 ** Math.ceil(Math.log2(this.size)));
    q.setRingPacked(true);
    q.setEventIdx(this.eventIdx);
    q.trySetSize(this.size);
    q.trySetDescTableAddress(this.descRing, 0);
    q.trySetAvailRingAddress(this.driverEvent, 0);
    q.trySetUsedRingAddress(this.deviceEvent, 0);
    q.setReady(true);
    return q;
  }

  /** Ring slots not holding an outstanding list. */
  get freeCount(): number {
    return this.freeSlots;
  }

  /**
   * Makes a list of `buffers` available (head flags written last, with release).
   * @param opts.indirect - put the buffers in an indirect table (one ring slot).
   * @returns the buffer id.
   * @throws `VirtqueueError` `"QueueFull"` if slots, ids or scratch memory run out.
   */
  addChain(buffers: readonly MockBuffer[], opts: { indirect?: boolean } = {}): number {
    if (buffers.length === 0) throw new VirtqueueError("InvalidArgument", "a chain needs at least one buffer");
    const id = this.freeIds.pop();
    if (id === undefined) throw new VirtqueueError("QueueFull", "mock has no free buffer id");
    try {
      if (opts.indirect) {
        const tlen = buffers.length * DESCRIPTOR_SIZE;
        const table = this.scratch.alloc(tlen);
        buffers.forEach((b, i) => {
          const at = table + i * DESCRIPTOR_SIZE;
          writeAddr(this.mem, at, b.addr);
          this.mem.writeU32(at + 8, b.len);
          this.mem.writeU16(at + 12, 0);
          this.mem.writeU16(at + 14, b.writable ? VIRTQ_DESC_F_WRITE : 0);
        });
        this.addRawChain([{ addr: table, len: tlen, id, flags: VIRTQ_DESC_F_INDIRECT }]);
        this.lists.set(id, { slots: 1, table: [table, tlen] });
      } else {
        this.addRawChain(
          buffers.map((b, i) => ({
            addr: b.addr,
            len: b.len,
            id,
            flags: (i + 1 < buffers.length ? VIRTQ_DESC_F_NEXT : 0) | (b.writable ? VIRTQ_DESC_F_WRITE : 0),
          })),
        );
        this.lists.set(id, { slots: buffers.length });
      }
    } catch (e) {
      this.freeIds.push(id);
      throw e;
    }
    return id;
  }

  /**
   * Writes raw descriptors at the next ring slots, with AVAIL/USED set for the
   * driver wrap counter, the head's flags last; no validation (for malformed lists).
   * @throws `VirtqueueError` `"QueueFull"` if more slots than are free.
   */
  addRawChain(descs: readonly RawPackedDescriptor[]): void {
    if (descs.length > this.freeSlots) throw new VirtqueueError("QueueFull", `mock needs ${descs.length} ring slots`);
    const first = this.nextAvail;
    let headFlags = 0;
    descs.forEach((d, i) => {
      const at = this.descRing + this.nextAvail * DESCRIPTOR_SIZE;
      writeAddr(this.mem, at, d.addr);
      this.mem.writeU32(at + 8, d.len);
      this.mem.writeU16(at + 12, d.id);
      const f = (d.flags & ~(VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED)) | (this.availWrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED);
      if (i === 0) headFlags = f;
      else this.mem.writeU16(at + 14, f);
      if (++this.nextAvail === this.size) {
        this.nextAvail = 0;
        this.availWrap = !this.availWrap;
      }
    });
    this.freeSlots -= descs.length;
    this.mem.storeU16Release(this.descRing + first * DESCRIPTOR_SIZE + 14, headFlags);
  }

  /**
   * Reads used descriptors written since the last call, skipping each list's
   * slots (from the mock's own bookkeeping; 1 for an unknown id).
   */
  takeUsed(): MockPackedUsed[] {
    const out: MockPackedUsed[] = [];
    for (;;) {
      const at = this.descRing + this.nextUsed * DESCRIPTOR_SIZE;
      const flags = this.mem.loadU16Acquire(at + 14);
      const avail = (flags & VIRTQ_DESC_F_AVAIL) !== 0;
      const used = (flags & VIRTQ_DESC_F_USED) !== 0;
      if (avail !== this.usedWrap || used !== this.usedWrap) break;
      const id = this.mem.readU16(at + 12);
      out.push({ id, len: this.mem.readU32(at + 8), flags });
      const l = this.lists.get(id);
      const slots = l?.slots ?? 1;
      if (l !== undefined) {
        this.lists.delete(id);
        this.freeIds.push(id);
        if (l.table) this.scratch.release(l.table[0], l.table[1]);
      }
      this.freeSlots += slots;
      this.nextUsed += slots;
      if (this.nextUsed >= this.size) {
        this.nextUsed -= this.size;
        this.usedWrap = !this.usedWrap;
      }
    }
    return out;
  }

  /** Writes the driver event suppression structure (flags, and offset/wrap for RING_EVENT_FLAGS_DESC). */
  setDriverEvent(flags: number, offset = 0, wrap = true): void {
    this.mem.writeU16(this.driverEvent, (offset & 0x7fff) | (wrap ? 0x8000 : 0));
    this.mem.writeU16(this.driverEvent + 2, flags);
  }

  /** The device event suppression structure as the device wrote it. */
  deviceEventState(): MockEventState {
    const off = this.mem.readU16(this.deviceEvent);
    return { flags: this.mem.readU16(this.deviceEvent + 2), offset: off & 0x7fff, wrap: (off & 0x8000) !== 0 };
  }

  /** The driver's next ring position and wrap counter. */
  get availPosition(): MockRingPosition {
    return { offset: this.nextAvail, wrap: this.availWrap };
  }

  /** Allocates guest memory from the mock's scratch area. */
  alloc(len: number, align = 16): GuestAddress {
    return this.scratch.alloc(len, align);
  }
}
