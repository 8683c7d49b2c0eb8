import type { GuestAddress, GuestMemory } from "@ts-vmm/vm-memory";
import { VirtqueueError } from "../errors.js";

/** One buffer of a chain the mock driver makes available. */
export interface MockBuffer {
  /** Guest physical address. */
  readonly addr: GuestAddress;
  /** Length in bytes (u32). */
  readonly len: number;
  /** Device-writable (default false: device-readable). */
  readonly writable?: boolean;
}

/** A used element as the driver sees it. */
export interface MockUsed {
  /** Split: head index. Packed: buffer id. */
  readonly id: number;
  /** Bytes the device says it wrote. */
  readonly len: number;
}

/** Options shared by the mock drivers. */
export interface MockQueueOptions {
  /** Where the rings start (default 0; aligned up to 16). */
  readonly base?: GuestAddress;
  /** Use VIRTIO_F_EVENT_IDX (default false). */
  readonly eventIdx?: boolean;
  /** Scratch memory for indirect tables: [start, end). Default: right after the rings, 64 KiB. */
  readonly scratch?: readonly [GuestAddress, GuestAddress];
}

/**
 * Writes a u64 given as a number (< 2^53) or a bigint (any 64-bit value, for
 * malformed descriptors).
 * @internal
 */
export function writeAddr(mem: GuestMemory, at: GuestAddress, addr: number | bigint): void {
  const v = typeof addr === "bigint" ? addr : BigInt(addr);
  mem.writeU64(at, v & 0xffff_ffff_ffff_ffffn);
}

/**
 * A bump allocator over a range, with reuse of freed blocks of the same size.
 * @internal
 */
export class Scratch {
  private next: number;
  private readonly free = new Map<number, number[]>();

  constructor(
    start: number,
    private readonly end: number,
  ) {
    this.next = start;
  }

  alloc(len: number, align = 16): number {
    const list = this.free.get(len);
    const reused = list?.pop();
    if (reused !== undefined) return reused;
    const at = Math.ceil(this.next / align) * align;
    if (at + len > this.end) throw new VirtqueueError("QueueFull", `mock scratch memory exhausted (${len} bytes)`);
    this.next = at + len;
    return at;
  }

  release(addr: number, len: number): void {
    let list = this.free.get(len);
    if (list === undefined) this.free.set(len, (list = []));
    list.push(addr);
  }
}

/** @internal */
export function alignUp(v: number, a: number): number {
  return Math.ceil(v / a) * a;
}
