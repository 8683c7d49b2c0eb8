import type { GuestAddress } from "@ts-vmm/vm-memory";
import { ReusableChain } from "./reusable-chain.js";
import { UndoLog } from "./undo-log.js";

/**
 * The mutable state of a queue, shared by `Queue` (configuration) and the ring
 * engines in split-ring.ts and packed-ring.ts. Not exported from the package.
 * @internal
 */
export class QueueCore {
  /** Largest size the device offers. */
  readonly maxSize: number;
  size: number;
  ready = false;
  /** Descriptor area (table or ring). */
  descTable: GuestAddress = 0;
  /** Driver area (split avail ring or packed driver event suppression). */
  availRing: GuestAddress = 0;
  /** Device area (split used ring or packed device event suppression). */
  usedRing: GuestAddress = 0;
  eventIdx = false;
  packed = false;
  /** Whether indirect descriptors are accepted (VIRTIO_F_INDIRECT_DESC negotiated). */
  indirectDesc = true;
  /** Split: free-running u16 avail index. Packed: ring position in [0, size). */
  nextAvail = 0;
  /** Split: free-running u16 used index. Packed: ring position in [0, size). */
  nextUsed = 0;
  /** Split: used entries added since the last `needsNotification`. */
  numAdded = 0;
  /**
   * Split: the used `idx` last stored in the ring (free-running u16). Behind `nextUsed` by the
   * entries `addUsedDeferred` wrote and no publish has made visible yet (at most `size`).
   */
  usedPublished = 0;
  /** Split: last avail `idx` read from the ring (a cache; never saved). */
  availIdxCache = 0;
  /** Packed: the device's copy of the driver ring wrap counter. */
  availWrap = true;
  /** Packed: the device ring wrap counter. */
  usedWrap = true;
  /** Packed: used position (0..2*size) at the last `needsNotification`. */
  signalledUsed = 0;
  /**
   * Device-set cap on the descriptors of one chain, direct and indirect together;
   * 0 means the queue size (the spec's bound). Kept across reset.
   */
  maxChainLength = 0;
  /** Packed: used ring slots advanced since the last `needsNotification` (capped at 2*size). */
  usedSinceSignal = 0;
  /** Packed: buffer id -> ring slots of chains popped and not yet returned. */
  readonly inFlight = new InFlight();
  /** Packed: scratch list of the flags of the list being popped (valid up to the list's length). */
  readonly flagScratch: number[] = [];
  /** Where `Queue.popDescriptorChain` walks a chain before copying it into a `DescriptorChain`. */
  readonly scratch = new ReusableChain();
  /** Pops that `Queue.undoPop` can still give back. */
  readonly undo = new UndoLog();
  /**
   * Chains given back with `Queue.undoPop` and not popped again: split, chains
   * (avail entries); packed, ring slots. The driver has made them available
   * already, so a notification request asks for what comes after them.
   */
  unpopped = 0;

  constructor(maxSize: number) {
    this.maxSize = maxSize;
    this.size = maxSize;
  }

  /** The descriptors one chain may have: {@link QueueCore.maxChainLength}, or the size. */
  chainLimit(): number {
    return this.maxChainLength === 0 ? this.size : Math.min(this.maxChainLength, 0x10000);
  }

  /** Back to the power-on state (the transport's queue reset). */
  reset(): void {
    this.size = this.maxSize;
    this.ready = false;
    this.descTable = 0;
    this.availRing = 0;
    this.usedRing = 0;
    this.eventIdx = false;
    this.packed = false;
    this.indirectDesc = true;
    this.resetRuntime();
  }

  /** Ring positions back to zero (on reset and when the layout changes). */
  resetRuntime(): void {
    this.nextAvail = 0;
    this.nextUsed = 0;
    this.numAdded = 0;
    this.usedPublished = 0;
    this.availIdxCache = 0;
    this.availWrap = true;
    this.usedWrap = true;
    this.signalledUsed = 0;
    this.usedSinceSignal = 0;
    this.inFlight.clear();
    this.undo.clear();
    this.unpopped = 0;
  }
}

/**
 * Packed in-flight buffers: ring slots taken by each buffer id (0 = not in
 * flight), in a 128 KiB table allocated on first use.
 * @internal
 */
export class InFlight {
  private slots: Uint16Array | undefined;
  private count = 0;
  /** Sum of the ring slots of every buffer in flight. */
  private total = 0;

  /** Ring slots taken by all buffers in flight. */
  get totalSlots(): number {
    return this.total;
  }

  /** Slots of `id`, or undefined if it is not in flight. */
  get(id: number): number | undefined {
    const v = this.slots?.[id];
    return v === undefined || v === 0 ? undefined : v;
  }

  has(id: number): boolean {
    return this.get(id) !== undefined;
  }

  /** Records `id` (a u16) as taking `slots` (1..32768) ring slots. */
  set(id: number, slots: number): void {
    const t = (this.slots ??= new Uint16Array(0x10000));
    if (t[id] === 0) this.count++;
    this.total += slots - (t[id] as number);
    t[id] = slots;
  }

  delete(id: number): void {
    const t = this.slots;
    if (t !== undefined && t[id] !== 0) {
      this.total -= t[id] as number;
      t[id] = 0;
      this.count--;
    }
  }

  clear(): void {
    if (this.count > 0) this.slots?.fill(0);
    this.count = 0;
    this.total = 0;
  }

  /** `[id, slots]` pairs in id order. */
  entries(): [number, number][] {
    const out: [number, number][] = [];
    const t = this.slots;
    if (t === undefined || this.count === 0) return out;
    for (let id = 0; id < t.length; id++) if (t[id] !== 0) out.push([id, t[id] as number]);
    return out;
  }
}
