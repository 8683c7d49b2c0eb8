/**
 * virtio-net counters (plain numbers; `toJSON()` gives a copy). Every frame
 * the device drops and every chain it returns unused is counted in exactly
 * one of the `*Dropped*` / `*Malformed*` / `*Error*` fields.
 */
export class NetMetrics {
  /** Frames delivered to the guest. */
  rxFrames = 0;
  /** Bytes delivered to the guest (frames, without the vnet header). */
  rxBytes = 0;
  /** Of `rxFrames`, those read from the backend straight into the guest's buffer (readv, no copy). */
  rxZeroCopy = 0;
  /** Of `rxZeroCopy`, those read through the device's IovTable (guest memory in SharedArrayBuffers, each buffer inside one region): no view made per frame. */
  rxTable = 0;
  /** Frames from the tap dropped because they were larger than any buffer the guest posted (one chain without MRG_RXBUF, the whole ring with it). */
  rxDroppedTooLarge = 0;
  /** Frames from the tap dropped because they were truncated (longer than 64 KiB + 14) or shorter than the vnet header. */
  rxDroppedBadFrame = 0;
  /** A frame read from the tap and not yet delivered when the driver reset the device (dropped). */
  rxDroppedReset = 0;
  /** Receive chains returned unused (length 0): device-readable parts, writable part under 12 bytes, or buffers outside guest memory. */
  rxMalformedChains = 0;
  /** Valid receive chains returned empty because a malformed one came after them while gathering a frame. */
  rxReturnedEmpty = 0;
  /** Times a frame waited because the guest had not posted enough receive buffers (the tap is not read meanwhile). */
  rxNoBuffers = 0;
  /** Times the receive rate limiter made a frame wait. */
  rxThrottled = 0;
  /** Tap read errors other than "no frame". */
  rxTapErrors = 0;
  /** Frames sent to the tap. */
  txFrames = 0;
  /** Bytes sent to the tap (frames, without the vnet header). */
  txBytes = 0;
  /** Of `txFrames`, those written through the device's IovTable (guest memory in SharedArrayBuffers, the chain in one region): no view made per piece. */
  txTable = 0;
  /** Transmit chains dropped as malformed: shorter than header + 14, device-writable parts, buffers outside guest memory, a header with flags or GSO the driver did not negotiate. */
  txMalformed = 0;
  /** Transmit chains dropped because they were larger than 12 + 64 KiB + 14 bytes. */
  txOversize = 0;
  /** Frames of a transmit batch the tap had no room for that could not go back to the ring (a malformed chain popped after them ended the queue's memory of them): returned unsent. */
  txDroppedNoRoom = 0;
  /** Frames the tap refused (EINVAL for a bad vnet header, EIO, ...): dropped. */
  txTapErrors = 0;
  /** Times the tap was full (EAGAIN): the chain went back to the ring until the tap is writable. */
  txTapFull = 0;
  /** Times the transmit rate limiter made a chain wait. */
  txThrottled = 0;
  /** Times the device set DEVICE_NEEDS_RESET (a broken ring). */
  needsReset = 0;
  /** Turns of the event loop that stopped at the work bound and went on after a yield. */
  yields = 0;

  /** A copy of the counters. */
  toJSON(): Record<string, number> {
    return Object.fromEntries(Object.entries(this)) as Record<string, number>;
  }
}
