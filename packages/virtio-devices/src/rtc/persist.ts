// virtio-rtc persist: the device's state as plain JSON and its checks.
import type { DeviceState } from "../device.js";
import { VirtioDeviceError } from "../errors.js";
import type { RtcAlarmState } from "./alarm.js";
import { VIRTIO_ID_RTC } from "./constants.js";

/** virtio-rtc's saved state. */
export interface VirtioRtcState extends DeviceState {
  /** Always 17. */
  readonly deviceType: 17;
  /** The clock types by id (restore refuses a device with other clocks). */
  readonly clocks: readonly number[];
  /** Whether VIRTIO_RTC_F_ALARM was offered. */
  readonly alarmOffered: boolean;
  /** TAI − UTC in seconds the device used. */
  readonly taiOffsetSeconds: number;
  /** Each clock's alarm. */
  readonly alarms: readonly RtcAlarmState[];
  /** Clock ids with an expiration not yet delivered on the alarmq, oldest first. */
  readonly pending: readonly number[];
  /** The MONOTONIC reading when saved (decimal ns): after a restore the clock continues from at least this. */
  readonly monotonicNs: string;
}

const U64_MAX = (1n << 64n) - 1n;

/**
 * Checks a saved state against the device it is restored into: same clocks,
 * alarm feature and TAI offset; one well-formed alarm per clock; pending ids
 * distinct and valid; a u64 MONOTONIC reading.
 * @throws {@link VirtioDeviceError} `"InvalidState"` naming the bad field.
 */
export function checkRtcState(
  state: DeviceState,
  device: { readonly clocks: readonly number[]; readonly alarmOffered: boolean; readonly taiOffsetSeconds: number },
): VirtioRtcState {
  const bad = (what: string): VirtioDeviceError => new VirtioDeviceError("InvalidState", `virtio-rtc state: ${what}`);
  const s = state as Partial<VirtioRtcState>;
  if (s.deviceType !== VIRTIO_ID_RTC) throw bad("not a virtio-rtc state");
  if (!Array.isArray(s.clocks) || s.clocks.length !== device.clocks.length || s.clocks.some((c, i) => c !== device.clocks[i])) {
    throw bad(`clocks ${JSON.stringify(s.clocks)} do not match this device's ${JSON.stringify(device.clocks)}`);
  }
  if (s.alarmOffered !== device.alarmOffered) throw bad("alarmOffered does not match this device");
  if (s.taiOffsetSeconds !== device.taiOffsetSeconds) throw bad("taiOffsetSeconds does not match this device");
  if (!Array.isArray(s.alarms) || s.alarms.length !== device.clocks.length) throw bad("alarms must have one entry per clock");
  for (const [i, a] of s.alarms.entries()) {
    const ok =
      typeof a === "object" && a !== null && typeof a.time === "string" && /^\d{1,20}$/.test(a.time) &&
      BigInt(a.time) <= U64_MAX && typeof a.enabled === "boolean" && typeof a.below === "boolean";
    if (!ok) throw bad(`alarm ${i} is malformed`);
    if (!device.alarmOffered && (a.enabled || a.time !== "0")) throw bad(`alarm ${i} is set on a device without alarms`);
  }
  if (!Array.isArray(s.pending) || s.pending.length > device.clocks.length) throw bad("pending must be a list of clock ids");
  const seen = new Set<number>();
  for (const id of s.pending) {
    if (!Number.isInteger(id) || id < 0 || id >= device.clocks.length || seen.has(id)) throw bad(`pending id ${JSON.stringify(id)}`);
    seen.add(id);
  }
  if (typeof s.monotonicNs !== "string" || !/^\d{1,20}$/.test(s.monotonicNs) || BigInt(s.monotonicNs) > U64_MAX) throw bad("monotonicNs is malformed");
  return s as VirtioRtcState;
}
