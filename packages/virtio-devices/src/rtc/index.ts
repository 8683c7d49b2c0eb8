export { VirtioRtc } from "./device.js";
export type { VirtioRtcOptions } from "./device.js";
export { systemRtcClock, TAI_MINUS_UTC_SECONDS } from "./clock.js";
export type { RtcHostClock, RtcTimer } from "./clock.js";
export { RTC_ALARM_RECHECK_MS } from "./alarm.js";
export type { RtcAlarmState } from "./alarm.js";
export { handleRtcRequest } from "./request.js";
export type { RtcClockInfo, RtcRequestContext, RtcResponse } from "./request.js";
export type { RtcMetrics } from "./metrics.js";
export type { VirtioRtcState } from "./persist.js";
export {
  RTC_ALARMQ,
  RTC_MESSAGE_SIZES,
  RTC_NOTIF_ALARM_SIZE,
  RTC_REQUESTQ,
  RTC_REQ_HEAD_SIZE,
  RTC_RESP_HEAD_SIZE,
  RTC_MAX_REQUEST_SIZE,
  VIRTIO_ID_RTC,
  VIRTIO_RTC_CLOCK_MONOTONIC,
  VIRTIO_RTC_CLOCK_TAI,
  VIRTIO_RTC_CLOCK_UTC,
  VIRTIO_RTC_CLOCK_UTC_MAYBE_SMEARED,
  VIRTIO_RTC_CLOCK_UTC_SMEARED,
  VIRTIO_RTC_COUNTER_ARM_VCT,
  VIRTIO_RTC_COUNTER_X86_TSC,
  VIRTIO_RTC_F_ALARM,
  VIRTIO_RTC_FLAG_ALARM_CAP,
  VIRTIO_RTC_FLAG_ALARM_ENABLED,
  VIRTIO_RTC_NOTIF_ALARM,
  VIRTIO_RTC_REQ_CFG,
  VIRTIO_RTC_REQ_CLOCK_CAP,
  VIRTIO_RTC_REQ_CROSS_CAP,
  VIRTIO_RTC_REQ_READ,
  VIRTIO_RTC_REQ_READ_ALARM,
  VIRTIO_RTC_REQ_READ_CROSS,
  VIRTIO_RTC_REQ_SET_ALARM,
  VIRTIO_RTC_REQ_SET_ALARM_ENABLED,
  VIRTIO_RTC_S_EINVAL,
  VIRTIO_RTC_S_EIO,
  VIRTIO_RTC_S_ENODEV,
  VIRTIO_RTC_S_EOPNOTSUPP,
  VIRTIO_RTC_S_OK,
  VIRTIO_RTC_SMEAR_UNSPECIFIED,
} from "./constants.js";
