import { GuestMemoryError } from "@ts-vmm/vm-memory";

/**
 * The conditions a virtqueue operation can fail on. Each names what was wrong,
 * so a device can decide between returning the chain with a zero length,
 * setting DEVICE_NEEDS_RESET, or logging a VMM bug.
 *
 * Configuration (transport or restore):
 * - `"InvalidArgument"`: the VMM passed a malformed number (a half that is not
 *   a u32, a used length that is not a u32, a non-boolean...).
 * - `"InvalidQueueSize"`: zero, above 32768, above the device maximum, or not a
 *   power of two for a split queue.
 * - `"Unaligned"`: a ring area is not at the alignment the spec requires
 *   (descriptors 16; split avail 2, used 4; packed event areas 4).
 * - `"AddressTooLarge"`: a guest-written 64-bit address is ≥ 2^52.
 * - `"QueueReady"`: the configuration was changed while the queue was ready.
 * - `"NotReady"`: the data path was used on a queue that is not ready.
 * - `"RingOutOfBounds"`: a ring area is not inside guest memory.
 * - `"InvalidState"`: a saved {@link QueueState} is malformed.
 *
 * Guest-written rings and chains (data path):
 * - `"AvailIndexAhead"`: the split avail index is more than the queue size ahead
 *   of the device, or a packed list is made available over ring slots still in
 *   flight (nothing is consumed; the queue is broken).
 * - `"InvalidDescriptorIndex"`: a head or `next` index outside its table (or a
 *   head given to `addUsed` that is not below the queue size).
 * - `"ChainTooLong"`: a chain longer than the queue size (or than its indirect
 *   table): a loop.
 * - `"NestedIndirect"`: an indirect descriptor inside an indirect table (split).
 * - `"IndirectWithNext"`: an indirect descriptor that also has NEXT set (split),
 *   or that is part of a NEXT-linked list (packed).
 * - `"InvalidIndirectLength"`: an indirect table length that is zero, not a
 *   multiple of 16, or above 32768 entries.
 * - `"IndirectTableOutOfBounds"`: an indirect table not inside guest memory.
 * - `"IndirectNotNegotiated"`: an indirect descriptor on a queue whose
 *   transport turned indirect descriptors off (VIRTIO_F_INDIRECT_DESC not
 *   negotiated; see `Queue.setIndirectDesc`).
 * - `"LengthOverflow"`: the chain's lengths add up past 2^32 - 1.
 * - `"WritableBeforeReadable"`: a device-readable descriptor after a
 *   device-writable one.
 * - `"BufferIdInUse"`: a packed chain reuses a buffer id still in flight.
 * - `"UnknownBufferId"`: `addUsed` on a packed queue with an id not in flight.
 *
 * Buffers (checked when accessed):
 * - `"BufferOutOfBounds"`: a descriptor's buffer is not inside guest memory.
 * - `"BufferTooSmall"`: more bytes were written than the writable part holds
 *   (`writeFrom`; a `readInto` past the readable part returns 0 instead).
 * - `"LimitExceeded"`: the readable part is larger than the caller's limit.
 *
 * Mock driver only:
 * - `"QueueFull"`: the mock has no free descriptors, ids or scratch memory left.
 */
export type VirtqueueErrorCode =
  | "InvalidArgument"
  | "InvalidQueueSize"
  | "Unaligned"
  | "AddressTooLarge"
  | "QueueReady"
  | "NotReady"
  | "RingOutOfBounds"
  | "InvalidState"
  | "AvailIndexAhead"
  | "InvalidDescriptorIndex"
  | "ChainTooLong"
  | "NestedIndirect"
  | "IndirectWithNext"
  | "InvalidIndirectLength"
  | "IndirectTableOutOfBounds"
  | "IndirectNotNegotiated"
  | "LengthOverflow"
  | "WritableBeforeReadable"
  | "BufferIdInUse"
  | "UnknownBufferId"
  | "BufferOutOfBounds"
  | "BufferTooSmall"
  | "LimitExceeded"
  | "QueueFull";

/** Details attached to a {@link VirtqueueError}. */
export interface VirtqueueErrorDetails {
  /**
   * The head index (split) or buffer id (packed) of a chain that was consumed
   * from the ring although it is malformed. When set, the device may hand it
   * back with `addUsed(mem, head, 0)`; when unset, nothing can be returned.
   */
  readonly head?: number;
  /** The guest address involved, when there is one. */
  readonly addr?: number;
  /** The lower-level error (typically a `GuestMemoryError`). */
  readonly cause?: unknown;
  /** See {@link VirtqueueError.consumed}. */
  readonly consumed?: boolean;
}

/**
 * The one error class of `@ts-vmm/virtio-queue`. The queue and chain APIs throw
 * nothing else for anything a guest wrote; a `GuestMemoryError` from
 * vm-memory is wrapped and kept as `cause`.
 */
export class VirtqueueError extends Error {
  /** What went wrong; see {@link VirtqueueErrorCode}. */
  readonly code: VirtqueueErrorCode;
  /**
   * Head index (split) or buffer id (packed) of a malformed chain that was
   * consumed from the ring; see {@link VirtqueueErrorDetails.head}.
   */
  readonly head?: number;
  /** The guest address involved, when there is one. */
  readonly addr?: number;
  /**
   * From `popDescriptorChain`: whether the device's position moved past the entry
   * (split avail entry or packed list) although the chain is malformed. When true and
   * `head` is set, return the chain with `addUsed(mem, head, 0)`; when true without
   * `head`, nothing can be returned; when false the queue is as it was (the ring is
   * broken: set DEVICE_NEEDS_RESET). False on errors of other calls.
   */
  readonly consumed: boolean;

  /**
   * @param code - the condition.
   * @param message - a human-readable description.
   * @param details - the consumed head, the address and a lower-level cause.
   */
  constructor(code: VirtqueueErrorCode, message: string, details: VirtqueueErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "VirtqueueError";
    this.code = code;
    if (details.head !== undefined) this.head = details.head;
    if (details.addr !== undefined) this.addr = details.addr;
    this.consumed = details.consumed === true;
  }
}

/**
 * Sets {@link VirtqueueError.consumed} on an error from a pop.
 * @internal
 */
export function markConsumed(e: VirtqueueError, consumed: boolean): void {
  (e as { consumed: boolean }).consumed = consumed;
}

/**
 * Whether `e` is a `GuestMemoryError` from vm-memory.
 * @internal
 */
export function isGuestMemoryError(e: unknown): e is GuestMemoryError {
  return e instanceof GuestMemoryError;
}

/**
 * Turns a `GuestMemoryError` into a {@link VirtqueueError} with `code`;
 * anything else (a bug) is rethrown unchanged.
 * @internal
 */
export function wrapMemoryError(
  e: unknown,
  code: VirtqueueErrorCode,
  message: string,
  details: VirtqueueErrorDetails = {},
): VirtqueueError {
  if (e instanceof VirtqueueError) return e;
  if (!isGuestMemoryError(e)) throw e;
  return new VirtqueueError(code, `${message}: ${e.message}`, { ...details, cause: e });
}
