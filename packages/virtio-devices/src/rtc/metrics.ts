// virtio-rtc counters (Firecracker's metrics room): plain numbers, never reset.

/** What a {@link VirtioRtc} has done since it was created. */
export interface RtcMetrics {
  /** requestq chains completed (with or without a status). */
  requests: number;
  /** Responses by status. */
  ok: number;
  /** Status EOPNOTSUPP (unknown type or counter, READ_CROSS). */
  eopnotsupp: number;
  /** Status ENODEV (bad clock id, alarm not negotiated or not supported). */
  enodev: number;
  /** Status EINVAL (short request or response buffer, reserved bytes or flags set). */
  einval: number;
  /** Status EIO (the host clock was outside the u64 range). */
  eio: number;
  /** Chains completed without a status: not one device-writable byte. */
  noStatus: number;
  /** Alarm expirations (each queues at most one notification per clock). */
  alarmExpirations: number;
  /** Alarm notifications written to the alarmq. */
  notifications: number;
  /** alarmq buffers shorter than a notification, returned with length 0. */
  shortAlarmBuffers: number;
  /** Times the device asked for a reset (broken ring, buffer outside guest memory). */
  needsReset: number;
}

/** A zeroed {@link RtcMetrics}. */
export function rtcMetrics(): RtcMetrics {
  return {
    requests: 0, ok: 0, eopnotsupp: 0, enodev: 0, einval: 0, eio: 0, noStatus: 0,
    alarmExpirations: 0, notifications: 0, shortAlarmBuffers: 0, needsReset: 0,
  };
}
