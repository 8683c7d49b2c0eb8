// Test helpers for virtio-rtc: a clock the test advances by hand, request
// builders, and a driver that sends one request over the mock rings.
import type { MockSplitQueue } from "@ts-vmm/virtio-queue/mock";
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_RTC_F_ALARM,
  VirtioRtc,
  type RtcHostClock,
  type RtcTimer,
  type VirtioRtcOptions,
} from "../src/index.js";
import { bringUp, rig, type Rig } from "./driver.js";

/** A host clock that moves only when the test says so; timers fire in `advance`. */
export class FakeRtcClock implements RtcHostClock {
  real = 1_764_000_000_000_000_000n;
  mono = 7_000_000_000n;
  readonly #timers: { due: bigint; fn: () => void; live: boolean }[] = [];
  /** Every delay asked for, in order. */
  readonly delays: number[] = [];

  realtimeNs(): bigint {
    return this.real;
  }
  monotonicNs(): bigint {
    return this.mono;
  }
  setTimer(delayMs: number, fn: () => void): RtcTimer {
    if (!Number.isInteger(delayMs) || delayMs < 1 || delayMs > 2 ** 31 - 1) throw new Error(`bad timer delay ${delayMs}`);
    this.delays.push(delayMs);
    const t = { due: this.mono + BigInt(delayMs) * 1_000_000n, fn, live: true };
    this.#timers.push(t);
    return { cancel: () => void (t.live = false) };
  }
  /** Live timers. */
  get live(): number {
    return this.#timers.filter((t) => t.live).length;
  }
  /** Both clocks move forward by `ns`; timers that fall due run (in due order, including ones they arm). */
  advance(ns: bigint): void {
    const end = this.mono + ns;
    for (;;) {
      const due = this.#timers.filter((t) => t.live && t.due <= end).sort((a, b) => (a.due < b.due ? -1 : 1))[0];
      if (due === undefined) break;
      this.real += due.due - this.mono;
      this.mono = due.due;
      due.live = false;
      due.fn();
    }
    this.real += end - this.mono;
    this.mono = end;
  }
  /** The realtime clock steps by `ns` (negative: back), as a host clock set or NTP step does. */
  step(ns: bigint): void {
    this.real += ns;
  }
}

/** A request: the 8-byte header with `type`, then `body` (little-endian fields written by the caller). */
export function request(type: number, size: number, fill?: (dv: DataView) => void): Uint8Array {
  const b = new Uint8Array(size);
  const dv = new DataView(b.buffer);
  if (size >= 2) dv.setUint16(0, type, true);
  fill?.(dv);
  return b;
}

/** `clock_id` at 8 (READ, CLOCK_CAP, READ_ALARM, …) in a 16-byte request. */
export function withClock(type: number, clock: number, size = 16, extra?: (dv: DataView) => void): Uint8Array {
  return request(type, size, (dv) => {
    dv.setUint16(8, clock, true);
    extra?.(dv);
  });
}

export interface RtcRig extends Rig {
  readonly dev: VirtioRtc;
  readonly requestq: MockSplitQueue;
  readonly alarmq: MockSplitQueue;
  /** alarmq head → the buffer's address (postAlarmBuffers). */
  readonly alarmBuffers: Map<number, number>;
}

/** A VirtioRtc behind a transport, brought up with VERSION_1, `extraFeatures` and F_ALARM (unless not offered or `negotiateAlarm` is false). */
export function rtcRig(opts: VirtioRtcOptions = {}, negotiateAlarm = true, extraFeatures = 0n): RtcRig {
  const dev = new VirtioRtc(opts);
  const r = rig(dev);
  const features = VIRTIO_F_VERSION_1 | extraFeatures | (negotiateAlarm && (opts.alarm ?? true) ? VIRTIO_RTC_F_ALARM : 0n);
  const [requestq, alarmq] = bringUp(r, features);
  return { ...r, dev, requestq: requestq!, alarmq: alarmq!, alarmBuffers: new Map() };
}

const REQ_AT = 0x80000;
const RESP_AT = 0x90000;

/** The outcome of {@link send}. */
export interface Sent {
  /** Used entries (0 or 1). */
  readonly used: { id: number; len: number }[];
  /** The response bytes the device reported (used length), read back from guest memory. */
  readonly resp: Uint8Array;
  readonly dv: DataView;
}

/**
 * Sends one request on the requestq: `req` in one readable buffer (or as the
 * given pieces), a writable buffer of `respLen` bytes (pre-filled with 0xee so
 * untouched bytes show), notifies and reads the response.
 */
export function send(r: RtcRig, req: Uint8Array, respLen: number, opts: { split?: boolean; readableLen?: number } = {}): Sent {
  r.mem.write(REQ_AT, req);
  r.mem.write(RESP_AT, new Uint8Array(Math.max(respLen, 64)).fill(0xee));
  const readableLen = opts.readableLen ?? req.length;
  const bufs: { addr: number; len: number; writable?: boolean }[] = [];
  if (opts.split && readableLen > 8) {
    bufs.push({ addr: REQ_AT, len: 8 }, { addr: REQ_AT + 8, len: readableLen - 8 });
  } else if (readableLen > 0) bufs.push({ addr: REQ_AT, len: readableLen });
  if (opts.split && respLen > 8) bufs.push({ addr: RESP_AT, len: 8, writable: true }, { addr: RESP_AT + 8, len: respLen - 8, writable: true });
  else if (respLen > 0) bufs.push({ addr: RESP_AT, len: respLen, writable: true });
  r.requestq.addChain(bufs);
  r.t.notify(0);
  const used = r.requestq.takeUsed();
  const n = used[0]?.len ?? 0;
  const resp = new Uint8Array(n);
  r.mem.read(RESP_AT, resp);
  return { used, resp, dv: new DataView(resp.buffer) };
}

/** Posts `n` alarmq buffers of `len` bytes at 0xa0000 + 0x100·i (filled with 0xee) and notifies. */
export function postAlarmBuffers(r: RtcRig, n: number, len = 16, first = 0): void {
  for (let i = first; i < first + n; i++) {
    const addr = 0xa0000 + 0x100 * i;
    r.mem.write(addr, new Uint8Array(32).fill(0xee));
    r.alarmBuffers.set(r.alarmq.addChain([{ addr, len, writable: true }]), addr);
  }
  r.t.notify(1);
}

/** The notifications the device used on the alarmq: message type, clock id and used length per buffer. */
export function takeNotifications(r: RtcRig): { clock: number; type: number; len: number }[] {
  return r.alarmq.takeUsed().map((u) => {
    const at = r.alarmBuffers.get(u.id)!;
    return { type: r.mem.readU16(at), clock: r.mem.readU16(at + 8), len: u.len };
  });
}
