import { VirtqueueError } from "./errors.js";
import type { QueueCore } from "./queue-core.js";

/**
 * A queue's state as plain JSON data (raw guest addresses as numbers below
 * 2^52), for snapshots and live migration. `Queue.fromState` re-checks all of it.
 */
export interface QueueState {
  /** Format version of this object. */
  readonly version: 1;
  /** Largest size the device offers. */
  readonly maxSize: number;
  /** Size chosen by the driver. */
  readonly size: number;
  /** Whether the driver set the queue ready. */
  readonly ready: boolean;
  /** Descriptor area address. */
  readonly descTable: number;
  /** Driver area address (split avail ring, packed driver event suppression). */
  readonly availRing: number;
  /** Device area address (split used ring, packed device event suppression). */
  readonly usedRing: number;
  /** VIRTIO_F_EVENT_IDX in use. */
  readonly eventIdx: boolean;
  /** Packed layout in use. */
  readonly packed: boolean;
  /** Indirect descriptors accepted (absent in older states: true). */
  readonly indirectDesc?: boolean;
  /** Split: free-running u16 index. Packed: ring position below `size`. */
  readonly nextAvail: number;
  /** Split: free-running u16 index. Packed: ring position below `size`. */
  readonly nextUsed: number;
  /** Split: used entries added since the last notification check (u16). */
  readonly numAdded: number;
  /**
   * Split: used entries written with `Queue.addUsedDeferred` and not yet published
   * (`nextUsed` counts them; the ring's used `idx` is `nextUsed` minus this), in
   * [0, size]. Absent when 0 (and in states from before it existed). A restored queue
   * publishes them with its next `publishUsed`, `addUsed` or `needsNotification`.
   */
  readonly usedUnpublished?: number;
  /** Packed: the device's copy of the driver ring wrap counter. */
  readonly availWrapCounter: boolean;
  /** Packed: the device ring wrap counter. */
  readonly usedWrapCounter: boolean;
  /** Packed: used position in [0, 2*size) at the last notification check. */
  readonly signalledUsed: number;
  /** Packed: `[bufferId, ringSlots]` of every chain popped and not yet returned. */
  readonly inFlight: readonly (readonly [number, number])[];
}

/**
 * Snapshot of a core.
 * @internal
 */
export function queueToState(q: QueueCore): QueueState {
  return {
    version: 1,
    maxSize: q.maxSize,
    size: q.size,
    ready: q.ready,
    descTable: q.descTable,
    availRing: q.availRing,
    usedRing: q.usedRing,
    eventIdx: q.eventIdx,
    packed: q.packed,
    indirectDesc: q.indirectDesc,
    nextAvail: q.nextAvail,
    nextUsed: q.nextUsed,
    numAdded: q.numAdded,
    ...(!q.packed && q.usedPublished !== q.nextUsed ? { usedUnpublished: (q.nextUsed - q.usedPublished) & 0xffff } : {}),
    availWrapCounter: q.availWrap,
    usedWrapCounter: q.usedWrap,
    signalledUsed: q.signalledUsed,
    inFlight: q.inFlight.entries(),
  };
}

function bad(what: string): VirtqueueError {
  return new VirtqueueError("InvalidState", `queue state: ${what}`);
}

function isInt(v: unknown, lo: number, hi: number): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= lo && v <= hi;
}

/**
 * Type checks that come before the `trySet*` checks.
 * @internal
 */
export function checkStateShape(s: QueueState): void {
  if (typeof s !== "object" || s === null) throw bad("not an object");
  if (s.version !== 1) throw bad(`unknown version ${String(s.version)}`);
  for (const k of ["ready", "eventIdx", "packed", "availWrapCounter", "usedWrapCounter"] as const) {
    if (typeof s[k] !== "boolean") throw bad(`${k} is not a boolean`);
  }
  for (const k of ["maxSize", "size"] as const) {
    if (!isInt(s[k], 0, Number.MAX_SAFE_INTEGER)) throw bad(`${k} is not a non-negative integer`);
  }
  // Addresses: any non-negative integer here; the address setters reject ≥ 2^52.
  for (const k of ["descTable", "availRing", "usedRing"] as const) {
    if (!isInt(s[k], 0, Infinity)) throw bad(`${k} is not a non-negative integer`);
  }
  if (s.indirectDesc !== undefined && typeof s.indirectDesc !== "boolean") throw bad("indirectDesc is not a boolean");
  if (!Array.isArray(s.inFlight)) throw bad("inFlight is not an array");
}

/**
 * Checks of the ring positions, once the size is known to be valid.
 * @internal
 */
export function checkStateRuntime(s: QueueState): void {
  if (!isInt(s.numAdded, 0, 0xffff)) throw bad("numAdded is not a u16");
  if (s.usedUnpublished !== undefined) {
    if (!isInt(s.usedUnpublished, 0, s.size)) throw bad("usedUnpublished is not in [0, size]");
    if (s.packed && s.usedUnpublished !== 0) throw bad("a packed queue has no unpublished used entries");
  }
  // Checked for both layouts: a split queue does not use it, but would carry it into state().
  if (!isInt(s.signalledUsed, 0, 2 * s.size - 1)) throw bad("signalledUsed is out of range");
  if (s.packed) {
    if (!isInt(s.nextAvail, 0, s.size - 1)) throw bad("nextAvail is not a ring position");
    if (!isInt(s.nextUsed, 0, s.size - 1)) throw bad("nextUsed is not a ring position");
    let slots = 0;
    const seen = new Set<number>();
    for (const e of s.inFlight) {
      if (!Array.isArray(e) || e.length !== 2 || !isInt(e[0], 0, 0xffff) || !isInt(e[1], 1, s.size)) {
        throw bad("inFlight entry is not [u16 id, slots]");
      }
      if (seen.has(e[0])) throw bad(`buffer id ${e[0]} is in flight twice`);
      seen.add(e[0]);
      slots += e[1];
    }
    if (slots > s.size) throw bad("in-flight chains take more slots than the ring has");
    // The device's avail position is ahead of its used position by exactly the slots in
    // flight (positions in [0, 2*size) with the wrap counters): otherwise used
    // descriptors would later overwrite slots the device has not read.
    const span = 2 * s.size;
    const availPos = s.nextAvail + (s.availWrapCounter ? 0 : s.size);
    const usedPos = s.nextUsed + (s.usedWrapCounter ? 0 : s.size);
    if ((availPos - usedPos + span) % span !== slots) {
      throw bad(`nextAvail/nextUsed (with wraps) are ${(availPos - usedPos + span) % span} slots apart, but ${slots} are in flight`);
    }
  } else {
    if (!isInt(s.nextAvail, 0, 0xffff)) throw bad("nextAvail is not a u16");
    if (!isInt(s.nextUsed, 0, 0xffff)) throw bad("nextUsed is not a u16");
    if (s.inFlight.length !== 0) throw bad("a split queue has no inFlight entries");
  }
}

/**
 * Copies checked ring positions into a core.
 * @internal
 */
export function applyRuntime(q: QueueCore, s: QueueState): void {
  q.nextAvail = s.nextAvail;
  q.availIdxCache = s.nextAvail;
  q.nextUsed = s.nextUsed;
  q.numAdded = s.numAdded;
  q.usedPublished = (s.nextUsed - (s.usedUnpublished ?? 0)) & 0xffff;
  q.availWrap = s.availWrapCounter;
  q.usedWrap = s.usedWrapCounter;
  q.signalledUsed = s.signalledUsed;
  // Not saved (the format is unchanged): the distance from signalledUsed to the used
  // position. It under-counts only if 2*size slots were used since the last check
  // before the snapshot; the first check after restore then misses that event.
  const span = 2 * s.size;
  q.usedSinceSignal = s.packed ? (s.nextUsed + (s.usedWrapCounter ? 0 : s.size) - s.signalledUsed + span) % span : 0;
  q.inFlight.clear();
  for (const [id, slots] of s.inFlight) q.inFlight.set(id, slots);
}
