import type { GuestAddress, GuestMemory } from "@ts-vmm/vm-memory";
import {
  DESCRIPTOR_SIZE,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../constants.js";
import { VirtqueueError } from "../errors.js";
import { Queue } from "../queue.js";
import { splitAvailSize, splitUsedSize } from "../split-ring.js";
import { Scratch, alignUp, writeAddr, type MockBuffer, type MockQueueOptions, type MockUsed } from "./buffers.js";

/** A raw split descriptor, written as given (for malformed tables). */
export interface RawSplitDescriptor {
  /** Address; a bigint may be any 64-bit value. */
  readonly addr: number | bigint;
  /** Length (u32). */
  readonly len: number;
  /** NEXT / WRITE / INDIRECT bits, or anything else for malformed tables. */
  readonly flags: number;
  /** Next index (u16), used when NEXT is set. */
  readonly next: number;
}

/**
 * Plays the guest driver of a split virtqueue over real guest memory: lays out
 * the descriptor table, avail and used rings, makes chains available (direct or
 * indirect, or raw descriptors for malformed ones) and reads the used ring.
 * The device side is a real {@link Queue} from {@link MockSplitQueue.createQueue}.
 */
export class MockSplitQueue {
  /** Guest memory the rings live in. */
  readonly mem: GuestMemory;
  /** Queue size. */
  readonly size: number;
  /** Descriptor table address. */
  readonly descTable: GuestAddress;
  /** Avail ring address. */
  readonly availRing: GuestAddress;
  /** Used ring address. */
  readonly usedRing: GuestAddress;
  /** First address after the rings. */
  readonly end: GuestAddress;
  /** Whether the queue is set up with VIRTIO_F_EVENT_IDX. */
  readonly eventIdx: boolean;
  private readonly freeDescs: number[] = [];
  private readonly chains = new Map<number, { descs: number[]; table?: [number, number] }>();
  private readonly scratch: Scratch;
  private availIdx = 0;
  private lastUsed = 0;

  /**
   * Lays out and zeroes the rings.
   * @throws `VirtqueueError` `"InvalidQueueSize"` if `size` is not a power of two in [1, 32768];
   *   a `GuestMemoryError` if the rings do not fit in `mem`.
   */
  constructor(mem: GuestMemory, size: number, opts: MockQueueOptions = {}) {
    if (!(Number.isInteger(size) && size >= 1 && size <= 32768 && (size & (size - 1)) === 0)) {
      throw new VirtqueueError("InvalidQueueSize", `mock split queue size ${size}`);
    }
    this.mem = mem;
    this.size = size;
    this.eventIdx = opts.eventIdx ?? false;
    this.descTable = alignUp(opts.base ?? 0, 16);
    this.availRing = this.descTable + DESCRIPTOR_SIZE * size;
    this.usedRing = alignUp(this.availRing + splitAvailSize(size), 4);
    this.end = this.usedRing + splitUsedSize(size);
    mem.write(this.descTable, new Uint8Array(this.end - this.descTable));
    for (let i = size - 1; i >= 0; i--) this.freeDescs.push(i);
    const [s, e] = opts.scratch ?? [alignUp(this.end, 16), alignUp(this.end, 16) + 0x10000];
    this.scratch = new Scratch(s, e);
  }

  /** A ready device-side queue over these rings. */
  createQueue(): Queue {
    const q = new Queue(this.size);
    q.setEventIdx(this.eventIdx);
    q.trySetSize(this.size);
    q.trySetDescTableAddress(this.descTable, 0);
    q.trySetAvailRingAddress(this.availRing, 0);
    q.trySetUsedRingAddress(this.usedRing, 0);
    q.setReady(true);
    return q;
  }

  /** Free descriptors left in the table. */
  get freeCount(): number {
    return this.freeDescs.length;
  }

  /**
   * Makes a chain of `buffers` available and bumps the avail index.
   * @param opts.indirect - put the buffers in an indirect table (one ring descriptor).
   * @returns the head index.
   * @throws `VirtqueueError` `"QueueFull"` if descriptors or scratch memory run out.
   */
  addChain(buffers: readonly MockBuffer[], opts: { indirect?: boolean } = {}): number {
    if (buffers.length === 0) throw new VirtqueueError("InvalidArgument", "a chain needs at least one buffer");
    if (opts.indirect) {
      const tlen = buffers.length * DESCRIPTOR_SIZE;
      const table = this.scratch.alloc(tlen);
      buffers.forEach((b, i) => this.writeAt(table + i * DESCRIPTOR_SIZE, descOf(b, i + 1 < buffers.length, i + 1)));
      const [head] = this.take(1);
      this.writeDescriptor(head as number, { addr: table, len: tlen, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      this.chains.set(head as number, { descs: [head as number], table: [table, tlen] });
      this.publish(head as number);
      return head as number;
    }
    const idx = this.take(buffers.length);
    buffers.forEach((b, i) => this.writeDescriptor(idx[i] as number, descOf(b, i + 1 < buffers.length, idx[i + 1] ?? 0)));
    this.chains.set(idx[0] as number, { descs: idx });
    this.publish(idx[0] as number);
    return idx[0] as number;
  }

  private take(n: number): number[] {
    if (this.freeDescs.length < n) throw new VirtqueueError("QueueFull", `mock needs ${n} descriptors, ${this.freeDescs.length} free`);
    return this.freeDescs.splice(this.freeDescs.length - n, n).reverse();
  }

  /**
   * Writes descriptor `index` of the table as given (no bookkeeping).
   * @throws `GuestMemoryError` if the write falls outside guest memory.
   */
  writeDescriptor(index: number, d: RawSplitDescriptor): void {
    this.writeAt(this.descTable + index * DESCRIPTOR_SIZE, d);
  }

  /**
   * Writes a raw descriptor at any address (e.g. into an indirect table).
   * @throws `GuestMemoryError` if the write falls outside guest memory.
   */
  writeAt(at: GuestAddress, d: RawSplitDescriptor): void {
    writeAddr(this.mem, at, d.addr);
    this.mem.writeU32(at + 8, d.len);
    this.mem.writeU16(at + 12, d.flags);
    this.mem.writeU16(at + 14, d.next);
  }

  /** Puts `head` (any u16) in the next avail slot and bumps the index (release). */
  publish(head: number): void {
    this.mem.writeU16(this.availRing + 4 + 2 * (this.availIdx % this.size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.mem.storeU16Release(this.availRing + 2, this.availIdx);
  }

  /** Writes the avail index directly (e.g. to run it ahead of the ring). */
  setAvailIdx(idx: number): void {
    this.availIdx = idx & 0xffff;
    this.mem.storeU16Release(this.availRing + 2, this.availIdx);
  }

  /** Avail ring `flags` (VIRTQ_AVAIL_F_NO_INTERRUPT). */
  setAvailFlags(flags: number): void {
    this.mem.writeU16(this.availRing, flags);
  }

  /** `used_event` (at the end of the avail ring). */
  setUsedEvent(v: number): void {
    this.mem.writeU16(this.availRing + 4 + 2 * this.size, v);
  }

  /** Used ring `flags` as the device wrote them (VIRTQ_USED_F_NO_NOTIFY). */
  usedFlags(): number {
    return this.mem.readU16(this.usedRing);
  }

  /** `avail_event` as the device wrote it. */
  availEvent(): number {
    return this.mem.readU16(this.usedRing + 4 + 8 * this.size);
  }

  /** The used index as the device published it. */
  usedIdx(): number {
    return this.mem.loadU16Acquire(this.usedRing + 2);
  }

  /** Allocates guest memory from the mock's scratch area (for buffers or tables). */
  alloc(len: number, align = 16): GuestAddress {
    return this.scratch.alloc(len, align);
  }

  /**
   * Reads the used entries published since the last call and frees the
   * descriptors of chains the mock built.
   */
  takeUsed(): MockUsed[] {
    const out: MockUsed[] = [];
    const idx = this.usedIdx();
    while (this.lastUsed !== idx) {
      const e = this.usedRing + 4 + 8 * (this.lastUsed % this.size);
      const id = this.mem.readU32(e);
      out.push({ id, len: this.mem.readU32(e + 4) });
      const c = this.chains.get(id);
      if (c !== undefined) {
        this.chains.delete(id);
        for (const d of c.descs) this.freeDescs.push(d);
        if (c.table) this.scratch.release(c.table[0], c.table[1]);
      }
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }
}

function descOf(b: MockBuffer, hasNext: boolean, next: number): RawSplitDescriptor {
  return {
    addr: b.addr,
    len: b.len,
    flags: (hasNext ? VIRTQ_DESC_F_NEXT : 0) | (b.writable ? VIRTQ_DESC_F_WRITE : 0),
    next: hasNext ? next : 0,
  };
}
