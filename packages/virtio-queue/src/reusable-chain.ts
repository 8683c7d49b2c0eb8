import type { GuestAddress, GuestMemory } from "@ts-vmm/vm-memory";
import { DEFAULT_READ_LIMIT, DescriptorChain, type Descriptor } from "./chain.js";
import { bufferError, readAllOf, readIntoAny, writeFromAny } from "./chain-copy.js";
import { MAX_CHAIN_LENGTH } from "./constants.js";
import { VirtqueueError } from "./errors.js";

const INITIAL_CAPACITY = 8;

/**
 * A descriptor chain that a device owns and reuses: `Queue.popDescriptorChainInto`
 * refills it in place, so a pop allocates nothing (no chain object, no object per buffer, no
 * array), where `Queue.popDescriptorChain` makes a new {@link DescriptorChain} each time.
 * For hot paths (a network device's receive and transmit queues).
 *
 * It holds the same validated copy of the guest's descriptors as a `DescriptorChain`
 * (same checks, same totals), in parallel typed arrays read through
 * {@link ReusableChain.addrAt}, {@link ReusableChain.lenAt} and {@link ReusableChain.writableAt}.
 * Its contents stay valid until the next pop into it: a device that holds several chains at
 * once (a frame over several receive buffers) needs one object per chain. After a pop into it
 * throws, it is empty (`length` 0).
 *
 * Not thread-safe; the typed arrays grow on demand (to the longest chain popped into it) and
 * are never shrunk.
 */
export class ReusableChain {
  /** Split: index of the head descriptor. Packed: the buffer id. Pass it to `addUsed`. */
  head = 0;
  /** How many buffers the chain has. */
  length = 0;
  /** How many leading buffers are device-readable. */
  readableCount = 0;
  /** Total bytes of the readable buffers. */
  readableLength = 0;
  /** Total bytes of the writable buffers. */
  writableLength = 0;
  /** Whether the chain went through an indirect table. */
  indirect = false;
  /** What error messages call the chain: "chain" (split) or "buffer" (packed). */
  #noun = "chain";
  #addr: Float64Array;
  #len: Uint32Array;

  /** An empty chain, ready for `Queue.popDescriptorChainInto`. */
  constructor() {
    this.#addr = new Float64Array(INITIAL_CAPACITY);
    this.#len = new Uint32Array(INITIAL_CAPACITY);
  }

  /** Guest physical address of buffer `i` (`0 <= i < length`; below 2^52). */
  addrAt(i: number): GuestAddress {
    return this.#addr[i] as number;
  }

  /** Length in bytes of buffer `i` (a u32). */
  lenAt(i: number): number {
    return this.#len[i] as number;
  }

  /** Whether buffer `i` is device-writable (the buffers from `readableCount` on are). */
  writableAt(i: number): boolean {
    return i >= this.readableCount;
  }

  /**
   * Starts a new chain (the walkers' sink).
   * @internal
   */
  begin(head: number, noun = "chain"): void {
    this.head = head;
    this.#noun = noun;
    this.length = 0;
    this.readableCount = 0;
    this.readableLength = 0;
    this.writableLength = 0;
    this.indirect = false;
  }

  /**
   * Appends a buffer with the ordering and length checks every pop makes.
   * @internal
   * @throws {@link VirtqueueError} `"WritableBeforeReadable"`, `"LengthOverflow"` (with `head`).
   */
  add(addr: number, len: number, writable: boolean): void {
    const n = this.length;
    if (writable) {
      this.writableLength += len;
    } else {
      if (this.readableCount !== n) {
        throw new VirtqueueError(
          "WritableBeforeReadable",
          `${this.#noun} ${this.head}: a device-readable descriptor follows a device-writable one`,
          { head: this.head },
        );
      }
      this.readableLength += len;
      this.readableCount++;
    }
    if (n === this.#addr.length) this.#grow();
    this.#addr[n] = addr;
    this.#len[n] = len;
    this.length = n + 1;
    if (this.readableLength + this.writableLength > MAX_CHAIN_LENGTH) {
      throw new VirtqueueError("LengthOverflow", `${this.#noun} ${this.head}: lengths add up past 2^32 - 1`, { head: this.head });
    }
  }

  #grow(): void {
    const addr = new Float64Array(this.#addr.length * 2);
    addr.set(this.#addr);
    const len = new Uint32Array(this.#len.length * 2);
    len.set(this.#len);
    this.#addr = addr;
    this.#len = len;
  }

  /**
   * Empties the chain (after a failed pop).
   * @internal
   */
  clear(): void {
    this.begin(0);
  }

  /** A {@link DescriptorChain} with the same buffers and totals (a new object). */
  toDescriptorChain(): DescriptorChain {
    const n = this.length;
    const addr = this.#addr;
    const len = this.#len;
    const rc = this.readableCount;
    let descs: Descriptor[];
    if (n === 1) {
      descs = [{ addr: addr[0] as number, len: len[0] as number, writable: rc === 0 }];
    } else {
      descs = new Array<Descriptor>(n);
      for (let i = 0; i < n; i++) descs[i] = { addr: addr[i] as number, len: len[i] as number, writable: i >= rc };
    }
    return new DescriptorChain(this.head, descs, rc, this.readableLength, this.writableLength, this.indirect);
  }

  /**
   * Copies the readable part, starting `offset` bytes into it, into `dest`, as
   * {@link DescriptorChain.readInto}.
   * @returns the number of bytes copied.
   * @throws {@link VirtqueueError} `"BufferOutOfBounds"`, `"InvalidArgument"`.
   */
  readInto(mem: GuestMemory, dest: Uint8Array, offset = 0): number {
    const want = dest.length;
    if (offset === 0 && this.readableCount !== 0) {
      const l0 = this.#len[0] as number;
      if (want <= l0) {
        const a0 = this.#addr[0] as number;
        try {
          mem.read(a0, dest);
        } catch (e) {
          throw bufferError(e, a0, want, this.head);
        }
        return want;
      }
    }
    return this.#readIntoSlow(mem, dest, offset);
  }

  #readIntoSlow(mem: GuestMemory, dest: Uint8Array, offset: number): number {
    return readIntoAny(this, mem, dest, offset);
  }

  /**
   * Reads the whole readable part into a new array, as {@link DescriptorChain.readAll}.
   * @throws {@link VirtqueueError} `"LimitExceeded"` above `maxLength` (default 16 MiB); `"BufferOutOfBounds"`.
   */
  readAll(mem: GuestMemory, maxLength: number = DEFAULT_READ_LIMIT): Uint8Array {
    return readAllOf(this, mem, maxLength);
  }


  /**
   * Writes `src` into the writable part, starting `offset` bytes into it, all or nothing,
   * as {@link DescriptorChain.writeFrom}.
   * @returns `src.length`.
   * @throws {@link VirtqueueError} `"BufferTooSmall"`, `"BufferOutOfBounds"`, `"InvalidArgument"`.
   */
  writeFrom(mem: GuestMemory, src: Uint8Array, offset = 0): number {
    const total = src.length;
    const first = this.readableCount;
    if (offset === 0 && total !== 0 && first < this.length) {
      const l = this.#len[first] as number;
      if (total <= l) {
        const a = this.#addr[first] as number;
        try {
          mem.write(a, src);
        } catch (e) {
          throw bufferError(e, a, total, this.head);
        }
        return total;
      }
    }
    return this.#writeFromSlow(mem, src, offset);
  }

  #writeFromSlow(mem: GuestMemory, src: Uint8Array, offset: number): number {
    return writeFromAny(this, mem, src, offset);
  }
}
