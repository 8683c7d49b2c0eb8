import { toGuestAddress, type GuestAddress, type GuestMemory } from "@ts-vmm/vm-memory";
import type { DescriptorChain } from "./chain.js";
import { DESCRIPTOR_SIZE, MAX_QUEUE_SIZE } from "./constants.js";
import { VirtqueueError, markConsumed, wrapMemoryError } from "./errors.js";
import {
  PACKED_EVENT_SIZE,
  addUsedPacked,
  disableNotificationPacked,
  enableNotificationPacked,
  needsNotificationPacked,
  popPacked,
} from "./packed-ring.js";
import { QueueCore } from "./queue-core.js";
import type { ReusableChain } from "./reusable-chain.js";
import {
  addUsedSplit,
  disableNotificationSplit,
  enableNotificationSplit,
  needsNotificationSplit,
  popSplit,
  publishUsedSplit,
  splitAvailSize,
  splitUsedSize,
} from "./split-ring.js";
import { applyRuntime, checkStateRuntime, checkStateShape, queueToState, type QueueState } from "./state.js";

const TWO_32 = 2 ** 32;

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

function isU32(n: unknown): n is number {
  return typeof n === "number" && Number.isInteger(n) && n >= 0 && n < TWO_32;
}

/**
 * Checks a queue size for a layout.
 * @internal
 */
export function checkQueueSize(size: number, maxSize: number, packed: boolean): void {
  if (!(Number.isInteger(size) && size >= 1 && size <= MAX_QUEUE_SIZE && size <= maxSize)) {
    throw new VirtqueueError("InvalidQueueSize", `queue size ${String(size)} is not in [1, ${maxSize}]`);
  }
  if (!packed && !isPowerOfTwo(size)) {
    throw new VirtqueueError("InvalidQueueSize", `split queue size ${size} is not a power of two`);
  }
}

type AddressField = "descTable" | "availRing" | "usedRing";

/**
 * A virtqueue as the device sees it: configuration written by the driver
 * through the transport, and the data path over guest memory. One class
 * serves both layouts; {@link Queue.setRingPacked} picks packed once
 * VIRTIO_F_RING_PACKED is negotiated (the transport registers are the same).
 *
 * Guest-driven setters (`setSize`, `set*Address`, `setReady`, `setEventIdx`,
 * `setRingPacked`) never throw: a bad value is recorded in
 * {@link Queue.lastError} and the state is left unchanged. The `trySet*`
 * variants throw, for VMM and restore paths.
 *
 * Assumption: the device calls {@link Queue.isValid} (or `validate`) once the
 * driver sets the queue ready, before the data path; `popDescriptorChain` on a
 * queue whose rings are outside guest memory throws `"RingOutOfBounds"`.
 * Not thread-safe: one thread owns the device side of a queue.
 */
export class Queue {
  readonly #q: QueueCore;
  #lastError: VirtqueueError | undefined;

  /**
   * @param maxSize - the largest size the device offers (a power of two in [1, 32768]);
   *   the size starts there.
   * @throws {@link VirtqueueError} `"InvalidQueueSize"` otherwise.
   */
  constructor(maxSize: number) {
    if (!(Number.isInteger(maxSize) && isPowerOfTwo(maxSize) && maxSize <= MAX_QUEUE_SIZE)) {
      throw new VirtqueueError("InvalidQueueSize", `max queue size ${String(maxSize)} is not a power of two in [1, 32768]`);
    }
    this.#q = new QueueCore(maxSize);
  }

  /** The largest size the device offers. */
  get maxSize(): number {
    return this.#q.maxSize;
  }
  /** The size the driver chose (starts at `maxSize`). */
  get size(): number {
    return this.#q.size;
  }
  /** Whether the driver set the queue ready. */
  get ready(): boolean {
    return this.#q.ready;
  }
  /** Descriptor area: split descriptor table, or packed descriptor ring. */
  get descTable(): GuestAddress {
    return this.#q.descTable;
  }
  /** Driver area: split avail ring, or packed driver event suppression. */
  get availRing(): GuestAddress {
    return this.#q.availRing;
  }
  /** Device area: split used ring, or packed device event suppression. */
  get usedRing(): GuestAddress {
    return this.#q.usedRing;
  }
  /** Whether VIRTIO_F_EVENT_IDX notification suppression is in use. */
  get eventIdx(): boolean {
    return this.#q.eventIdx;
  }
  /** Whether indirect descriptors are accepted (VIRTIO_F_INDIRECT_DESC negotiated; true until a transport says otherwise). */
  get indirectDesc(): boolean {
    return this.#q.indirectDesc;
  }
  /** Whether the queue uses the packed layout. */
  get packed(): boolean {
    return this.#q.packed;
  }
  /** Split: the device's free-running avail index. Packed: next ring position to read. */
  get nextAvail(): number {
    return this.#q.nextAvail;
  }
  /**
   * Split: the device's free-running used index, counting entries written with
   * {@link Queue.addUsedDeferred} that are not published yet (the driver sees
   * `nextUsed - unpublishedUsed`). Packed: next ring position to write.
   */
  get nextUsed(): number {
    return this.#q.nextUsed;
  }
  /**
   * Split: used entries written by {@link Queue.addUsedDeferred} that the driver cannot see
   * yet (the used `idx` was not stored since); 0 after {@link Queue.publishUsed},
   * `addUsed` or `needsNotification`. Always 0 for a packed queue.
   */
  get unpublishedUsed(): number {
    const q = this.#q;
    return q.packed ? 0 : (q.nextUsed - q.usedPublished) & 0xffff;
  }
  /** The last error a guest-driven setter recorded (cleared by `reset`). */
  get lastError(): VirtqueueError | undefined {
    return this.#lastError;
  }

  #guard<T extends unknown[]>(fn: (...args: T) => void, ...args: T): void {
    try {
      fn(...args);
    } catch (e) {
      if (!(e instanceof VirtqueueError)) throw e;
      this.#lastError = e;
    }
  }

  #checkNotReady(what: string): void {
    if (this.#q.ready) throw new VirtqueueError("QueueReady", `${what} changed while the queue is ready`);
  }

  /**
   * Sets the queue size (guest-driven). Never throws; see {@link Queue.trySetSize}.
   * @returns whether the value was taken.
   */
  setSize(size: number): boolean {
    const before = this.#lastError;
    this.#guard((s: number) => this.trySetSize(s), size);
    return this.#lastError === before;
  }

  /**
   * Sets the queue size. A different size is a new ring: the ring positions
   * restart at zero (packed positions must stay below the size, and a split
   * queue's cached avail index belongs to the old ring).
   * @throws {@link VirtqueueError} `"InvalidQueueSize"` if zero, above `maxSize`
   *   or (split) not a power of two; `"QueueReady"` if the queue is ready.
   */
  trySetSize(size: number): void {
    this.#checkNotReady("size");
    checkQueueSize(size, this.#q.maxSize, this.#q.packed);
    if (size !== this.#q.size) {
      this.#q.size = size;
      this.#q.resetRuntime();
    }
  }

  /** Sets the ready bit (guest-driven; never fails). Clearing it keeps ring positions (a new size resets them). */
  setReady(ready: boolean): void {
    this.#q.ready = ready === true;
  }

  #setAddress(field: AddressField, lo: number | undefined, hi: number | undefined, align: number): void {
    this.#checkNotReady("address");
    const cur = this.#q[field];
    const curLo = cur % TWO_32;
    const curHi = Math.floor(cur / TWO_32);
    const l = lo ?? curLo;
    const h = hi ?? curHi;
    if (!isU32(l) || !isU32(h)) {
      throw new VirtqueueError("InvalidArgument", `address halves must be u32: lo=${String(lo)} hi=${String(hi)}`);
    }
    let addr: number;
    try {
      addr = toGuestAddress(l, h);
    } catch (e) {
      throw wrapMemoryError(e, "AddressTooLarge", "ring address");
    }
    if (addr % align !== 0) {
      throw new VirtqueueError("Unaligned", `ring address 0x${addr.toString(16)} is not ${align}-byte aligned`, { addr });
    }
    this.#q[field] = addr;
  }

  #alignOf(field: AddressField): number {
    if (field === "descTable") return 16;
    if (this.#q.packed) return 4;
    return field === "availRing" ? 2 : 4;
  }

  /**
   * Sets the descriptor area address from the transport's low and/or high
   * register (an omitted half keeps its value). Guest-driven: never throws.
   * @returns whether the value was taken.
   */
  setDescTableAddress(lo?: number, hi?: number): boolean {
    return this.#setGuarded("descTable", lo, hi);
  }
  /** Sets the driver area address (split avail ring). Guest-driven: never throws. @returns whether taken. */
  setAvailRingAddress(lo?: number, hi?: number): boolean {
    return this.#setGuarded("availRing", lo, hi);
  }
  /** Sets the device area address (split used ring). Guest-driven: never throws. @returns whether taken. */
  setUsedRingAddress(lo?: number, hi?: number): boolean {
    return this.#setGuarded("usedRing", lo, hi);
  }

  #setGuarded(field: AddressField, lo: number | undefined, hi: number | undefined): boolean {
    const before = this.#lastError;
    this.#guard(() => this.#setAddress(field, lo, hi, this.#alignOf(field)));
    return this.#lastError === before;
  }

  /**
   * Sets the descriptor area address.
   * @throws {@link VirtqueueError} `"AddressTooLarge"` (≥ 2^52), `"Unaligned"`
   *   (not 16-aligned), `"InvalidArgument"` (a half is not a u32), `"QueueReady"`.
   */
  trySetDescTableAddress(lo?: number, hi?: number): void {
    this.#setAddress("descTable", lo, hi, 16);
  }
  /**
   * Sets the driver area address.
   * @throws {@link VirtqueueError} as {@link Queue.trySetDescTableAddress}; alignment 2 (split) or 4 (packed).
   */
  trySetAvailRingAddress(lo?: number, hi?: number): void {
    this.#setAddress("availRing", lo, hi, this.#alignOf("availRing"));
  }
  /**
   * Sets the device area address.
   * @throws {@link VirtqueueError} as {@link Queue.trySetDescTableAddress}; alignment 4.
   */
  trySetUsedRingAddress(lo?: number, hi?: number): void {
    this.#setAddress("usedRing", lo, hi, 4);
  }

  /**
   * Turns VIRTIO_F_EVENT_IDX suppression on or off (from negotiated features).
   * Guest-driven: never throws; refused while ready. @returns whether taken.
   */
  setEventIdx(enabled: boolean): boolean {
    const before = this.#lastError;
    this.#guard(() => {
      this.#checkNotReady("event index");
      this.#q.eventIdx = enabled === true;
    });
    return this.#lastError === before;
  }

  /**
   * Accepts (true, the power-on default) or refuses (false) indirect
   * descriptors, from whether VIRTIO_F_INDIRECT_DESC was negotiated. When
   * refused, a chain with an indirect descriptor is consumed and fails with
   * `"IndirectNotNegotiated"` (with `head`). Guest-driven: never throws;
   * refused while ready. @returns whether taken.
   */
  setIndirectDesc(enabled: boolean): boolean {
    const before = this.#lastError;
    this.#guard(() => {
      this.#checkNotReady("indirect descriptors");
      this.#q.indirectDesc = enabled === true;
    });
    return this.#lastError === before;
  }

  /**
   * Selects the packed (true) or split (false) layout (from VIRTIO_F_RING_PACKED).
   * Resets ring positions. Guest-driven: never throws; refused while ready.
   * @returns whether taken.
   */
  setRingPacked(packed: boolean): boolean {
    const before = this.#lastError;
    this.#guard(() => {
      this.#checkNotReady("layout");
      // A packed-only size (not a power of two) is refused for split: the queue keeps
      // its layout and size (issue 14 item 12).
      if (packed !== true && this.#q.packed) checkQueueSize(this.#q.size, this.#q.maxSize, false);
      if (this.#q.packed !== (packed === true)) {
        this.#q.packed = packed === true;
        this.#q.resetRuntime();
      }
    });
    return this.#lastError === before;
  }

  /**
   * The most descriptors one chain may have, direct and indirect together
   * (device-set; default: the queue size, the spec's bound). A longer chain is
   * `"ChainTooLong"` (consumed, `head` set); an indirect table is checked against
   * it before any entry is read, so one pop costs at most this many descriptor reads.
   */
  get maxChainLength(): number {
    return this.#q.chainLimit();
  }

  /**
   * Sets the chain limit of {@link Queue.maxChainLength} (a device choice, kept
   * across reset); `0` restores the default (the queue size).
   * @throws {@link VirtqueueError} `"InvalidArgument"` unless `n` is an integer in [0, 65536].
   */
  setMaxChainLength(n: number): void {
    if (!(Number.isInteger(n) && n >= 0 && n <= 0x10000)) {
      throw new VirtqueueError("InvalidArgument", `chain limit ${String(n)} is not an integer in [0, 65536]`);
    }
    this.#q.maxChainLength = n;
  }

  /**
   * Back to the power-on state (device reset): size = maxSize, not ready,
   * addresses 0, positions 0, split layout, no event index, indirect
   * descriptors accepted, no recorded error.
   */
  reset(): void {
    this.#q.reset();
    this.#lastError = undefined;
  }

  /**
   * Checks that the queue is ready, its size fits the layout, and every ring
   * area is aligned and inside guest memory.
   * @throws {@link VirtqueueError} `"NotReady"`, `"InvalidQueueSize"`, `"Unaligned"` or `"RingOutOfBounds"`.
   */
  validate(mem: GuestMemory): void {
    const q = this.#q;
    if (!q.ready) throw new VirtqueueError("NotReady", "the queue is not ready");
    checkQueueSize(q.size, q.maxSize, q.packed);
    const areas: [string, number, number, number][] = q.packed
      ? [
          ["descriptor ring", q.descTable, DESCRIPTOR_SIZE * q.size, 16],
          ["driver event area", q.availRing, PACKED_EVENT_SIZE, 4],
          ["device event area", q.usedRing, PACKED_EVENT_SIZE, 4],
        ]
      : [
          ["descriptor table", q.descTable, DESCRIPTOR_SIZE * q.size, 16],
          ["avail ring", q.availRing, splitAvailSize(q.size), 2],
          ["used ring", q.usedRing, splitUsedSize(q.size), 4],
        ];
    for (const [name, addr, len, align] of areas) {
      if (addr % align !== 0) {
        throw new VirtqueueError("Unaligned", `${name} at 0x${addr.toString(16)} is not ${align}-byte aligned`, { addr });
      }
      if (!mem.checkRange(addr, len)) {
        throw new VirtqueueError(
          "RingOutOfBounds",
          `${name} [0x${addr.toString(16)}, +${len}) is not inside guest memory`,
          { addr },
        );
      }
    }
  }

  /** Whether {@link Queue.validate} passes. Never throws. */
  isValid(mem: GuestMemory): boolean {
    try {
      this.validate(mem);
      return true;
    } catch (e) {
      if (e instanceof VirtqueueError) return false;
      throw e;
    }
  }

  /**
   * Takes the next chain the driver made available, validated (see [DESIGN.md](../DESIGN.md)).
   *
   * @returns the chain, or undefined if none is available or the queue is not ready.
   * @throws {@link VirtqueueError} for a malformed ring or chain. If `head` is
   *   set on the error, the chain was consumed and may be returned with
   *   `addUsed(mem, err.head, 0)`; otherwise (`"AvailIndexAhead"`,
   *   packed `"ChainTooLong"`, `"RingOutOfBounds"` before consuming) the queue is
   *   left as it was and is broken: the device should set DEVICE_NEEDS_RESET.
   */
  popDescriptorChain(mem: GuestMemory): DescriptorChain | undefined {
    const q = this.#q;
    if (!q.ready) return undefined;
    const before = q.nextAvail;
    const wrap = q.availWrap;
    // The same walk as popDescriptorChainInto, then a copy: the two cannot disagree.
    const scratch = q.scratch;
    if (!this.#popInto(mem, scratch, before, wrap)) return undefined;
    const chain = scratch.toDescriptorChain();
    this.#popped(chain, before, wrap);
    return chain;
  }

  /**
   * Takes the next chain like {@link Queue.popDescriptorChain}, with the same checks and
   * errors, but refills `chain`, a {@link ReusableChain} the device owns, instead of
   * making a new {@link DescriptorChain}: no allocation per pop. `chain` may be given
   * back with {@link Queue.undoPop} and is then reusable at once; its contents are those
   * of the newest pop into it, so a device holding several chains at a time (a frame
   * over several receive buffers) uses one object per chain.
   *
   * @returns true if `chain` now holds the next chain; false (and `chain` untouched) if
   *   none is available or the queue is not ready.
   * @throws {@link VirtqueueError} as {@link Queue.popDescriptorChain}; `chain` is then empty.
   */
  popDescriptorChainInto(mem: GuestMemory, chain: ReusableChain): boolean {
    const q = this.#q;
    if (!q.ready) return false;
    const before = q.nextAvail;
    const wrap = q.availWrap;
    if (!this.#popInto(mem, chain, before, wrap)) return false;
    this.#popped(chain, before, wrap);
    return true;
  }

  /**
   * Pops into `out` (split or packed) and keeps the undo record and `unpopped` straight on errors;
   * (`before`, `wrap`) is the avail position the caller read before the pop.
   */
  #popInto(mem: GuestMemory, out: ReusableChain, before: number, wrap: boolean): boolean {
    const q = this.#q;
    try {
      return q.packed ? popPacked(q, mem, out) : popSplit(q, mem, out);
    } catch (e) {
      out.clear();
      if (e instanceof VirtqueueError) {
        const moved = this.#availDistance(before, wrap);
        markConsumed(e, moved !== 0);
        if (moved !== 0) {
          // A consumed bad chain sits between the older pops and the position: none of them can be rewound now.
          q.undo.clear();
          q.unpopped = Math.max(0, q.unpopped - moved);
        }
      }
      throw e;
    }
  }

  /** Records a successful pop for undoPop. */
  #popped(chain: DescriptorChain | ReusableChain, before: number, wrap: boolean): void {
    const q = this.#q;
    q.undo.push(chain, chain.head, before, wrap);
    if (q.unpopped > 0) q.unpopped = Math.max(0, q.unpopped - this.#availDistance(before, wrap));
  }

  /** How far the avail position moved since (`pos`, `wrap`): split entries, packed ring slots. */
  #availDistance(pos: number, wrap: boolean): number {
    const q = this.#q;
    if (!q.packed) return (q.nextAvail - pos) & 0xffff;
    return q.nextAvail - pos + (q.availWrap !== wrap ? q.size : 0);
  }

  /**
   * Gives a popped chain back unused: the avail position moves back to where
   * it was before the chain was popped, so the next pop returns the same
   * driver buffers again (re-read and re-checked). For a device that popped
   * buffers it cannot use yet, for example a network device whose frame needs
   * more receive buffers than the driver has posted (as vhost-net's
   * `vhost_discard_vq_desc`). Several chains are given back newest first.
   *
   * Chains given back count as seen by {@link Queue.enableNotification}: it
   * asks the driver for a notification when it makes buffers available beyond
   * them, and reports only those.
   *
   * Only the newest chain popped and neither returned with `addUsed` nor
   * already given back can be given back, and only while the queue remembers
   * it: at most the last 1024 pops, none from before a chain that
   * `popDescriptorChain` consumed with an error, a `reset` or a size or
   * layout change. Nothing is written to guest memory.
   *
   * @throws {@link VirtqueueError} `"NotReady"`; `"InvalidArgument"` if `chain`
   *   is not that chain (a device bug; the queue is left unchanged). A
   *   {@link ReusableChain} is that chain if its newest pop is.
   */
  undoPop(chain: DescriptorChain | ReusableChain): void {
    const q = this.#q;
    if (!q.ready) throw new VirtqueueError("NotReady", "undoPop on a queue that is not ready", { head: chain.head });
    const top = q.undo.topChain();
    if (top === undefined || top !== chain) {
      throw new VirtqueueError(
        "InvalidArgument",
        `chain ${String(chain?.head)} is not the newest chain popped and still held (give chains back newest first)`,
        { head: chain?.head },
      );
    }
    const head = q.undo.topHead();
    const availBefore = q.undo.topAvailBefore();
    const wrapBefore = q.undo.topWrapBefore();
    q.undo.dropTop();
    const moved = this.#availDistance(availBefore, wrapBefore);
    q.nextAvail = availBefore;
    q.availWrap = wrapBefore;
    if (q.packed) q.inFlight.delete(head);
    q.unpopped = Math.min(q.unpopped + moved, q.packed ? q.size : 0x10000);
  }

  /**
   * Iterates over the available chains, popping each (ends when none is left).
   * @throws {@link VirtqueueError} from the iteration, as {@link Queue.popDescriptorChain}.
   */
  *iter(mem: GuestMemory): Generator<DescriptorChain, void, undefined> {
    for (;;) {
      const c = this.popDescriptorChain(mem);
      if (c === undefined) return;
      yield c;
    }
  }

  /**
   * Returns a chain to the driver with `len` bytes written into it, publishing
   * it with release ordering.
   *
   * @param head - `chain.head`: the split head index or the packed buffer id.
   * @param len - bytes written into the writable part (a u32).
   * @throws {@link VirtqueueError} `"NotReady"`; `"InvalidArgument"` for a bad
   *   `len`; `"InvalidDescriptorIndex"` (split, head ≥ size) or
   *   `"UnknownBufferId"` (packed, id not in flight); `"RingOutOfBounds"`.
   */
  addUsed(mem: GuestMemory, head: number, len: number): void {
    const q = this.#q;
    if (!q.ready) throw new VirtqueueError("NotReady", "addUsed on a queue that is not ready", { head });
    if (!isU32(len)) throw new VirtqueueError("InvalidArgument", `used length ${String(len)} is not a u32`, { head });
    if (q.packed) addUsedPacked(q, mem, head, len);
    else addUsedSplit(q, mem, head, len, true);
    q.undo.returned(head);
  }

  /**
   * Returns a chain like {@link Queue.addUsed}, but (split) without storing the used
   * `idx`: the entry is written to the used ring and the driver sees it only when the
   * index is next published, by {@link Queue.publishUsed}, `needsNotification` (which
   * publishes before deciding) or a later `addUsed`. A device completing several chains
   * in one turn adds them deferred and publishes once: one release store instead of one
   * per chain.
   *
   * The device must publish before it waits for the driver (returns to its event loop,
   * sleeps, stops polling): an entry left unpublished is a buffer the driver never gets
   * back. `state()` saves the count (see {@link QueueState.usedUnpublished}); `reset`
   * drops them with the rest of the ring. At most `size` entries wait: one more (a head
   * returned twice) publishes the others first.
   *
   * Packed queues have no used index: a used descriptor is published by its own flags
   * store, so there this is `addUsed`.
   * @throws {@link VirtqueueError} as {@link Queue.addUsed}.
   */
  addUsedDeferred(mem: GuestMemory, head: number, len: number): void {
    const q = this.#q;
    if (!q.ready) throw new VirtqueueError("NotReady", "addUsedDeferred on a queue that is not ready", { head });
    if (!isU32(len)) throw new VirtqueueError("InvalidArgument", `used length ${String(len)} is not a u32`, { head });
    if (q.packed) addUsedPacked(q, mem, head, len);
    else addUsedSplit(q, mem, head, len, false);
    q.undo.returned(head);
  }

  /**
   * Publishes the entries {@link Queue.addUsedDeferred} wrote (split: one release store
   * of the used `idx`; nothing when none wait, and nothing for a packed queue). Does not
   * notify: call {@link Queue.needsNotification} for that (it publishes too).
   * @throws {@link VirtqueueError} `"NotReady"`, `"RingOutOfBounds"`.
   */
  publishUsed(mem: GuestMemory): void {
    const q = this.#q;
    if (!q.ready) throw new VirtqueueError("NotReady", "publishUsed on a queue that is not ready");
    if (!q.packed) publishUsedSplit(q, mem);
  }

  /**
   * Whether the driver should get a used-buffer notification (an interrupt)
   * for the chains returned since the last call, per `flags` or `used_event`
   * (split) or the driver event suppression area (packed). Split: entries added
   * with {@link Queue.addUsedDeferred} are published first, so the decision (and
   * EVENT_IDX's `used_event` test) is about the index the driver can see.
   * @throws {@link VirtqueueError} `"NotReady"`, `"RingOutOfBounds"`.
   */
  needsNotification(mem: GuestMemory): boolean {
    const q = this.#q;
    if (!q.ready) throw new VirtqueueError("NotReady", "needsNotification on a queue that is not ready");
    return q.packed ? needsNotificationPacked(q, mem) : needsNotificationSplit(q, mem);
  }

  /**
   * Asks the driver to notify on new buffers (`avail_event` = next index with
   * EVENT_IDX). Call it before sleeping, then pop again if it returns true.
   * Chains given back with {@link Queue.undoPop} count as seen: the request is
   * for buffers after them (split `avail_event`, packed event offset), and
   * they are not reported.
   * @returns whether chains are already available (beyond those given back).
   * @throws {@link VirtqueueError} `"NotReady"`, `"RingOutOfBounds"`.
   */
  enableNotification(mem: GuestMemory): boolean {
    const q = this.#q;
    if (!q.ready) throw new VirtqueueError("NotReady", "enableNotification on a queue that is not ready");
    return q.packed ? enableNotificationPacked(q, mem) : enableNotificationSplit(q, mem);
  }

  /**
   * Asks the driver not to notify on new buffers (while the device is polling).
   * @throws {@link VirtqueueError} `"NotReady"`, `"RingOutOfBounds"`.
   */
  disableNotification(mem: GuestMemory): void {
    const q = this.#q;
    if (!q.ready) throw new VirtqueueError("NotReady", "disableNotification on a queue that is not ready");
    if (q.packed) disableNotificationPacked(q, mem);
    else disableNotificationSplit(q, mem);
  }

  /** The queue's state as plain JSON data, for snapshots. */
  state(): QueueState {
    return queueToState(this.#q);
  }

  /**
   * Rebuilds a queue from {@link Queue.state} output, re-running every `trySet*` check.
   * @throws {@link VirtqueueError} `"InvalidState"` for a malformed state, or the
   *   code of the failed check (`"InvalidQueueSize"`, `"Unaligned"`, `"AddressTooLarge"`).
   */
  static fromState(state: QueueState): Queue {
    checkStateShape(state);
    const queue = new Queue(state.maxSize);
    queue.#q.packed = state.packed;
    queue.#q.eventIdx = state.eventIdx;
    queue.#q.indirectDesc = state.indirectDesc ?? true;
    queue.trySetSize(state.size);
    const half = (a: number): [number, number] => [a % TWO_32, Math.floor(a / TWO_32)];
    queue.trySetDescTableAddress(...half(state.descTable));
    queue.trySetAvailRingAddress(...half(state.availRing));
    queue.trySetUsedRingAddress(...half(state.usedRing));
    checkStateRuntime(state);
    applyRuntime(queue.#q, state);
    queue.#q.ready = state.ready;
    return queue;
  }
}
