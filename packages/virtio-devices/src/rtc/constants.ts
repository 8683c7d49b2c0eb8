// Numbers of the virtio RTC device (virtio 1.4, "RTC Device"; the same values
// as Linux 6.16's include/uapi/linux/virtio_rtc.h). Facts only.

/** Device id of the RTC device. */
export const VIRTIO_ID_RTC = 17;

/** Feature bit: the device supports alarms and the alarmq (bit 0). */
export const VIRTIO_RTC_F_ALARM = 1n << 0n;

/** Queue indices. */
export const RTC_REQUESTQ = 0;
/** The alarmq (device-to-driver notifications; present with VIRTIO_RTC_F_ALARM). */
export const RTC_ALARMQ = 1;

/** Read requests. */
export const VIRTIO_RTC_REQ_READ = 0x0001;
/** Cross-timestamp read (answered EOPNOTSUPP here). */
export const VIRTIO_RTC_REQ_READ_CROSS = 0x0002;
/** Control request: number of clocks. */
export const VIRTIO_RTC_REQ_CFG = 0x1000;
/** Control request: a clock's type, smearing variant and flags. */
export const VIRTIO_RTC_REQ_CLOCK_CAP = 0x1001;
/** Control request: whether a clock supports cross-timestamping with a hardware counter. */
export const VIRTIO_RTC_REQ_CROSS_CAP = 0x1002;
/** Alarm request: read a clock's alarm. */
export const VIRTIO_RTC_REQ_READ_ALARM = 0x1003;
/** Alarm request: set a clock's alarm time and enabled flag. */
export const VIRTIO_RTC_REQ_SET_ALARM = 0x1004;
/** Alarm request: enable or disable a clock's alarm, keeping its time. */
export const VIRTIO_RTC_REQ_SET_ALARM_ENABLED = 0x1005;
/** alarmq notification: an alarm expired. */
export const VIRTIO_RTC_NOTIF_ALARM = 0x2000;

/** Response status: done. */
export const VIRTIO_RTC_S_OK = 0;
/** Not supported by this device (unknown message type, hardware counter, or an implementation limit). */
export const VIRTIO_RTC_S_EOPNOTSUPP = 2;
/** The clock id names no clock (or, for alarm requests, no clock with an alarm). */
export const VIRTIO_RTC_S_ENODEV = 3;
/** The request is malformed, or a buffer is too small for the request or the response. */
export const VIRTIO_RTC_S_EINVAL = 4;
/** A device-side error not caused by the driver. */
export const VIRTIO_RTC_S_EIO = 5;

/** Clock types. */
export const VIRTIO_RTC_CLOCK_UTC = 0;
/** International Atomic Time, epoch 1970-01-01 00:00 TAI. */
export const VIRTIO_RTC_CLOCK_TAI = 1;
/** Monotonic physical time since an epoch before device reset. */
export const VIRTIO_RTC_CLOCK_MONOTONIC = 2;
/** UTC that smears leap seconds (not offered here; see [DESIGN.md](../../DESIGN.md)). */
export const VIRTIO_RTC_CLOCK_UTC_SMEARED = 3;
/** UTC that may or may not smear leap seconds (not offered here). */
export const VIRTIO_RTC_CLOCK_UTC_MAYBE_SMEARED = 4;

/** Smearing variant for every clock that is not UTC_SMEARED. */
export const VIRTIO_RTC_SMEAR_UNSPECIFIED = 0;

/** Hardware counters of READ_CROSS / CROSS_CAP. */
export const VIRTIO_RTC_COUNTER_ARM_VCT = 0;
/** The x86 time-stamp counter. */
export const VIRTIO_RTC_COUNTER_X86_TSC = 1;

/** CLOCK_CAP flags: the clock has an alarm. */
export const VIRTIO_RTC_FLAG_ALARM_CAP = 1;
/** READ_ALARM / SET_ALARM / SET_ALARM_ENABLED flags: the alarm is enabled. */
export const VIRTIO_RTC_FLAG_ALARM_ENABLED = 1;

/** Size of the common request header (`le16 msg_type; u8 reserved[6]`). */
export const RTC_REQ_HEAD_SIZE = 8;
/** Size of the common response header (`u8 status; u8 reserved[7]`). */
export const RTC_RESP_HEAD_SIZE = 8;
/** Size of an alarm notification (`virtio_rtc_notif_alarm`). */
export const RTC_NOTIF_ALARM_SIZE = 16;

/** Request and response sizes of each message type, in bytes (what Linux 6.16 sends and expects exactly). */
export const RTC_MESSAGE_SIZES: ReadonlyMap<number, { readonly request: number; readonly response: number }> = new Map([
  [VIRTIO_RTC_REQ_READ, { request: 16, response: 16 }],
  [VIRTIO_RTC_REQ_READ_CROSS, { request: 16, response: 24 }],
  [VIRTIO_RTC_REQ_CFG, { request: 8, response: 16 }],
  [VIRTIO_RTC_REQ_CLOCK_CAP, { request: 16, response: 16 }],
  [VIRTIO_RTC_REQ_CROSS_CAP, { request: 16, response: 16 }],
  [VIRTIO_RTC_REQ_READ_ALARM, { request: 16, response: 24 }],
  [VIRTIO_RTC_REQ_SET_ALARM, { request: 24, response: 8 }],
  [VIRTIO_RTC_REQ_SET_ALARM_ENABLED, { request: 16, response: 8 }],
]);

/** The largest request of any known type (SET_ALARM): the device reads at most this much. */
export const RTC_MAX_REQUEST_SIZE = 24;
