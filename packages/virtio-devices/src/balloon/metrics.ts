/**
 * virtio-balloon's counters (as Firecracker's balloon metrics): plain numbers
 * that only grow, readable by the VMM at any time.
 */
export interface BalloonMetrics {
  /** Inflate PFNs whose page was given back to the host. */
  inflatedPages: number;
  /** Deflate PFNs accepted. */
  deflatedPages: number;
  /** PFNs (inflate or deflate) that are not a page of guest memory: skipped. */
  invalidPfns: number;
  /** Bytes of trailing junk in inflate/deflate buffers (not a whole 4-byte PFN): ignored. */
  malformedBytes: number;
  /** Bytes given back to the host (inflate and free page reporting). */
  discardedBytes: number;
  /** Discards the host refused (the error is reported through `onViolation`). */
  discardFailures: number;
  /** Free page reports (chains) completed. */
  reports: number;
  /** Bytes of reported free memory given back (whole 4 KiB pages inside each range). */
  reportedBytes: number;
  /** Reported ranges outside guest memory: skipped. */
  invalidReports: number;
  /** Statistics buffers read. */
  statsUpdates: number;
  /** Statistics entries with unknown tags, trailing bytes, or buffers beyond the one allowed. */
  statsIgnored: number;
  /** Target changes signalled to the driver. */
  targetChanges: number;
  /** Times a broken queue set DEVICE_NEEDS_RESET. */
  needsReset: number;
}

/** Fresh counters. @internal */
export function newBalloonMetrics(): BalloonMetrics {
  return {
    inflatedPages: 0,
    deflatedPages: 0,
    invalidPfns: 0,
    malformedBytes: 0,
    discardedBytes: 0,
    discardFailures: 0,
    reports: 0,
    reportedBytes: 0,
    invalidReports: 0,
    statsUpdates: 0,
    statsIgnored: 0,
    targetChanges: 0,
    needsReset: 0,
  };
}
