// virtio-rtc request handling: one requestq message in, one response out.
// Pure over a context (clocks and alarms), so every case is testable without
// a queue. The checks follow the spec's order of statuses: what does not fit
// is EINVAL; an unknown message type is EOPNOTSUPP; then ENODEV (clock id,
// alarm not negotiated or not supported), EOPNOTSUPP (hardware counter),
// EINVAL (reserved bytes or flags set), and the request is executed.
import {
  RTC_MESSAGE_SIZES,
  RTC_REQ_HEAD_SIZE,
  RTC_RESP_HEAD_SIZE,
  VIRTIO_RTC_COUNTER_ARM_VCT,
  VIRTIO_RTC_COUNTER_X86_TSC,
  VIRTIO_RTC_FLAG_ALARM_CAP,
  VIRTIO_RTC_FLAG_ALARM_ENABLED,
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

const U64_LIMIT = 1n << 64n;

/** One clock as the device describes it in CLOCK_CAP. */
export interface RtcClockInfo {
  /** The clock type (VIRTIO_RTC_CLOCK_*). */
  readonly type: number;
  /** Whether the clock has an alarm (reported only when VIRTIO_RTC_F_ALARM was negotiated). */
  readonly alarm: boolean;
}

/** What a request can see and change: the device's clocks and alarms. */
export interface RtcRequestContext {
  /** The clocks; ids are indices. */
  readonly clocks: readonly RtcClockInfo[];
  /** Whether VIRTIO_RTC_F_ALARM was negotiated. */
  readonly alarmNegotiated: boolean;
  /** Reads clock `id` (valid id) in nanoseconds; may be outside u64 if the host clock is (then EIO). */
  read(id: number): bigint;
  /** The alarm of clock `id` (a valid id of a clock with an alarm). */
  readAlarm(id: number): { readonly time: bigint; readonly enabled: boolean };
  /** Sets the alarm time and enabled flag of clock `id`. */
  setAlarm(id: number, time: bigint, enabled: boolean): void;
  /** Enables or disables the alarm of clock `id`, keeping its time. */
  setAlarmEnabled(id: number, enabled: boolean): void;
}

/** The outcome of one request. */
export interface RtcResponse {
  /** The request's message type, or undefined if the header did not fit or could not be read. */
  readonly msgType: number | undefined;
  /** The status written, or undefined if not even the status byte fit (nothing written). */
  readonly status: number | undefined;
  /** The bytes to write at the start of the writable part; their length is the used length. */
  readonly bytes: Uint8Array;
}

/** Where each request type keeps its fields (offsets into the request). */
interface Layout {
  readonly clockAt?: number;
  readonly counterAt?: number;
  readonly flagsAt?: number;
  readonly alarm?: boolean;
  /** Reserved ranges past the header, `[from, to)`. */
  readonly reserved: readonly (readonly [number, number])[];
}

const LAYOUTS: ReadonlyMap<number, Layout> = new Map<number, Layout>([
  [VIRTIO_RTC_REQ_READ, { clockAt: 8, reserved: [[10, 16]] }],
  [VIRTIO_RTC_REQ_READ_CROSS, { clockAt: 8, counterAt: 10, reserved: [[11, 16]] }],
  [VIRTIO_RTC_REQ_CFG, { reserved: [] }],
  [VIRTIO_RTC_REQ_CLOCK_CAP, { clockAt: 8, reserved: [[10, 16]] }],
  [VIRTIO_RTC_REQ_CROSS_CAP, { clockAt: 8, counterAt: 10, reserved: [[11, 16]] }],
  [VIRTIO_RTC_REQ_READ_ALARM, { clockAt: 8, alarm: true, reserved: [[10, 16]] }],
  [VIRTIO_RTC_REQ_SET_ALARM, { clockAt: 16, flagsAt: 18, alarm: true, reserved: [[19, 24]] }],
  [VIRTIO_RTC_REQ_SET_ALARM_ENABLED, { clockAt: 8, flagsAt: 10, alarm: true, reserved: [[11, 16]] }],
]);

/** A response of `size` bytes (cut to what is writable) that carries only `status`. */
function statusOnly(msgType: number | undefined, status: number, size: number, writable: number): RtcResponse {
  const n = Math.min(size, writable);
  const bytes = new Uint8Array(n);
  if (n === 0) return { msgType, status: undefined, bytes };
  bytes[0] = status;
  return { msgType, status, bytes };
}

function zeroIn(req: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (req[i] !== 0) return false;
  return true;
}

/**
 * Handles one requestq message.
 *
 * @param req - the first bytes of the chain's device-readable part (at most
 *   `RTC_MAX_REQUEST_SIZE`), or undefined if they could not be read from guest memory.
 * @param readableLength - total bytes of the readable part.
 * @param writableLength - total bytes of the writable part.
 * @param ctx - the device's clocks and alarms.
 * @returns the response: status plus fields, `bytes.length` long. A success
 *   response and an error response to a request whose buffers fit are exactly
 *   the message's response size; a buffer too small for the request or the
 *   response gets EINVAL in as much of the 8-byte response header as fits;
 *   an unknown type gets EOPNOTSUPP in the response header.
 */
export function handleRtcRequest(
  req: Uint8Array | undefined,
  readableLength: number,
  writableLength: number,
  ctx: RtcRequestContext,
): RtcResponse {
  if (req === undefined || readableLength < RTC_REQ_HEAD_SIZE || req.length < RTC_REQ_HEAD_SIZE) {
    return statusOnly(undefined, VIRTIO_RTC_S_EINVAL, RTC_RESP_HEAD_SIZE, writableLength);
  }
  const dv = new DataView(req.buffer, req.byteOffset, req.byteLength);
  const msgType = dv.getUint16(0, true);
  const sizes = RTC_MESSAGE_SIZES.get(msgType);
  const layout = LAYOUTS.get(msgType);
  if (sizes === undefined || layout === undefined) return statusOnly(msgType, VIRTIO_RTC_S_EOPNOTSUPP, RTC_RESP_HEAD_SIZE, writableLength);
  if (readableLength < sizes.request || req.length < sizes.request || writableLength < sizes.response) {
    return statusOnly(msgType, VIRTIO_RTC_S_EINVAL, RTC_RESP_HEAD_SIZE, writableLength);
  }
  const fail = (status: number): RtcResponse => statusOnly(msgType, status, sizes.response, writableLength);

  let clock = -1;
  if (layout.alarm && !ctx.alarmNegotiated) return fail(VIRTIO_RTC_S_ENODEV);
  if (layout.clockAt !== undefined) {
    clock = dv.getUint16(layout.clockAt, true);
    const info = ctx.clocks[clock];
    if (info === undefined) return fail(VIRTIO_RTC_S_ENODEV);
    if (layout.alarm && !info.alarm) return fail(VIRTIO_RTC_S_ENODEV);
  }
  if (layout.counterAt !== undefined) {
    const counter = dv.getUint8(layout.counterAt);
    // Counters this device knows are ARM_VCT and X86_TSC; any other value is unknown to it.
    if (counter !== VIRTIO_RTC_COUNTER_ARM_VCT && counter !== VIRTIO_RTC_COUNTER_X86_TSC) return fail(VIRTIO_RTC_S_EOPNOTSUPP);
    // No cross-timestamps (see DESIGN.md): READ_CROSS is an implementation limit.
    if (msgType === VIRTIO_RTC_REQ_READ_CROSS) return fail(VIRTIO_RTC_S_EOPNOTSUPP);
  }
  if (!zeroIn(req, 2, RTC_REQ_HEAD_SIZE)) return fail(VIRTIO_RTC_S_EINVAL);
  for (const [from, to] of layout.reserved) if (!zeroIn(req, from, to)) return fail(VIRTIO_RTC_S_EINVAL);
  let enable = false;
  if (layout.flagsAt !== undefined) {
    const flags = dv.getUint8(layout.flagsAt);
    if ((flags & ~VIRTIO_RTC_FLAG_ALARM_ENABLED) !== 0) return fail(VIRTIO_RTC_S_EINVAL);
    enable = (flags & VIRTIO_RTC_FLAG_ALARM_ENABLED) !== 0;
  }

  const out = new Uint8Array(sizes.response);
  const o = new DataView(out.buffer);
  switch (msgType) {
    case VIRTIO_RTC_REQ_READ: {
      const ns = ctx.read(clock);
      if (ns < 0n || ns >= U64_LIMIT) return fail(VIRTIO_RTC_S_EIO);
      o.setBigUint64(8, ns, true);
      break;
    }
    case VIRTIO_RTC_REQ_CFG:
      o.setUint16(8, ctx.clocks.length, true);
      break;
    case VIRTIO_RTC_REQ_CLOCK_CAP: {
      const info = ctx.clocks[clock]!;
      o.setUint8(8, info.type);
      o.setUint8(9, VIRTIO_RTC_SMEAR_UNSPECIFIED);
      o.setUint8(10, ctx.alarmNegotiated && info.alarm ? VIRTIO_RTC_FLAG_ALARM_CAP : 0);
      break;
    }
    case VIRTIO_RTC_REQ_CROSS_CAP:
      o.setUint8(8, 0); // no VIRTIO_RTC_FLAG_CROSS_CAP for any clock and counter
      break;
    case VIRTIO_RTC_REQ_READ_ALARM: {
      const a = ctx.readAlarm(clock);
      o.setBigUint64(8, a.time, true);
      o.setUint8(16, a.enabled ? VIRTIO_RTC_FLAG_ALARM_ENABLED : 0);
      break;
    }
    case VIRTIO_RTC_REQ_SET_ALARM:
      ctx.setAlarm(clock, dv.getBigUint64(8, true), enable);
      break;
    case VIRTIO_RTC_REQ_SET_ALARM_ENABLED:
      ctx.setAlarmEnabled(clock, enable);
      break;
    default:
      return fail(VIRTIO_RTC_S_EOPNOTSUPP); // READ_CROSS never gets here
  }
  out[0] = VIRTIO_RTC_S_OK;
  return { msgType, status: VIRTIO_RTC_S_OK, bytes: out };
}
