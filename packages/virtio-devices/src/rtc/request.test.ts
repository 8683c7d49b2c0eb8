import { describe, expect, it } from "vitest";
import { bringUp } from "../../test/driver.js";
import { FakeRtcClock, request, rtcRig, send, withClock } from "../../test/rtc-driver.js";
import {
  STATUS_DEVICE_NEEDS_RESET,
  TAI_MINUS_UTC_SECONDS,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_RTC_F_ALARM,
  VIRTIO_RTC_CLOCK_MONOTONIC,
  VIRTIO_RTC_CLOCK_TAI,
  VIRTIO_RTC_CLOCK_UTC,
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
  handleRtcRequest,
} from "../index.js";

const cfg = (): Uint8Array => request(VIRTIO_RTC_REQ_CFG, 8);
const read = (clock: number): Uint8Array => withClock(VIRTIO_RTC_REQ_READ, clock);
const setAlarm = (clock: number, time: bigint, flags: number): Uint8Array =>
  request(VIRTIO_RTC_REQ_SET_ALARM, 24, (dv) => {
    dv.setBigUint64(8, time, true);
    dv.setUint16(16, clock, true);
    dv.setUint8(18, flags);
  });

/** Every byte after the status is 0 (reserved fields and, on errors, undefined fields the device zeroes). */
const restZero = (b: Uint8Array, from = 1): boolean => b.subarray(from).every((x) => x === 0);

describe("virtio-rtc requests (mock driver over guest memory)", () => {
  it("CFG: 3 clocks, a 16-byte response, reserved bytes zero", () => {
    const r = rtcRig({ clock: new FakeRtcClock() });
    const s = send(r, cfg(), 16);
    expect(s.used).toHaveLength(1);
    expect(s.used[0]!.len).toBe(16);
    expect(s.dv.getUint8(0)).toBe(VIRTIO_RTC_S_OK);
    expect(s.dv.getUint16(8, true)).toBe(3);
    expect(restZero(s.resp.subarray(0, 8))).toBe(true);
    expect(restZero(s.resp, 10)).toBe(true);
    expect(r.irq.count).toBeGreaterThan(0);
  });

  it("CLOCK_CAP: UTC, TAI, MONOTONIC with the alarm flag when F_ALARM is negotiated, none without", () => {
    const r = rtcRig({ clock: new FakeRtcClock() });
    const types = [0, 1, 2].map((c) => {
      const s = send(r, withClock(VIRTIO_RTC_REQ_CLOCK_CAP, c), 16);
      expect(s.used[0]!.len).toBe(16);
      expect(s.dv.getUint8(0)).toBe(VIRTIO_RTC_S_OK);
      expect(s.dv.getUint8(9)).toBe(0); // smearing: unspecified
      expect(s.dv.getUint8(10)).toBe(VIRTIO_RTC_FLAG_ALARM_CAP);
      expect(restZero(s.resp, 11)).toBe(true);
      return s.dv.getUint8(8);
    });
    expect(types).toEqual([VIRTIO_RTC_CLOCK_UTC, VIRTIO_RTC_CLOCK_TAI, VIRTIO_RTC_CLOCK_MONOTONIC]);
    const plain = rtcRig({ clock: new FakeRtcClock() }, false);
    expect(send(plain, withClock(VIRTIO_RTC_REQ_CLOCK_CAP, 0), 16).dv.getUint8(10)).toBe(0);
    const none = rtcRig({ clock: new FakeRtcClock(), alarm: false });
    expect(none.dev.deviceFeatures).toBe(0n);
    expect(send(none, withClock(VIRTIO_RTC_REQ_CLOCK_CAP, 2), 16).dv.getUint8(10)).toBe(0);
  });

  it("READ: UTC is the host realtime, TAI is UTC + 37 s, MONOTONIC the host monotonic clock", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    const utc = send(r, read(0), 16);
    expect(utc.used[0]!.len).toBe(16);
    expect(utc.dv.getUint8(0)).toBe(VIRTIO_RTC_S_OK);
    expect(restZero(utc.resp.subarray(0, 8))).toBe(true);
    expect(utc.dv.getBigUint64(8, true)).toBe(clock.real);
    expect(send(r, read(1), 16).dv.getBigUint64(8, true)).toBe(clock.real + BigInt(TAI_MINUS_UTC_SECONDS) * 1_000_000_000n);
    expect(send(r, read(2), 16).dv.getBigUint64(8, true)).toBe(clock.mono);
    const r2 = rtcRig({ clock, taiOffsetSeconds: 38 });
    expect(send(r2, read(1), 16).dv.getBigUint64(8, true) - clock.real).toBe(38_000_000_000n);
  });

  it("READ on the host clocks: UTC within 50 ms of Date.now(), MONOTONIC never decreases, TAI − UTC ≈ 37 s", () => {
    const r = rtcRig();
    const before = BigInt(Date.now()) * 1_000_000n;
    const utc = send(r, read(0), 16).dv.getBigUint64(8, true);
    const after = BigInt(Date.now()) * 1_000_000n + 1_000_000n;
    expect(utc >= before && utc <= after).toBe(true);
    const tai = send(r, read(1), 16).dv.getBigUint64(8, true);
    expect(tai - utc >= 37_000_000_000n && tai - utc < 37_050_000_000n).toBe(true);
    let last = 0n;
    for (let i = 0; i < 50; i++) {
      const m = send(r, read(2), 16).dv.getBigUint64(8, true);
      expect(m >= last).toBe(true);
      last = m;
    }
    // UTC readings increase within a millisecond too (the sub-millisecond part is interpolated).
    const a = send(r, read(0), 16).dv.getBigUint64(8, true);
    const b = send(r, read(0), 16).dv.getBigUint64(8, true);
    expect(b >= a).toBe(true);
  });

  it("a host clock outside u64 (before 1970) reads as EIO, not as a wrapped value", () => {
    const clock = new FakeRtcClock();
    clock.real = -5n;
    const r = rtcRig({ clock });
    const s = send(r, read(0), 16);
    expect(s.used[0]!.len).toBe(16);
    expect(s.dv.getUint8(0)).toBe(VIRTIO_RTC_S_EIO);
    expect(restZero(s.resp)).toBe(true);
    expect(r.dev.metrics.eio).toBe(1);
  });

  it("READ_CROSS is EOPNOTSUPP (no cross-timestamps on x86), ENODEV for a bad clock; the response is 24 bytes", () => {
    const r = rtcRig({ clock: new FakeRtcClock() });
    for (const counter of [0, 1]) {
      const s = send(r, withClock(VIRTIO_RTC_REQ_READ_CROSS, 0, 16, (dv) => dv.setUint8(10, counter)), 24);
      expect(s.used[0]!.len).toBe(24);
      expect(s.dv.getUint8(0)).toBe(VIRTIO_RTC_S_EOPNOTSUPP);
      expect(restZero(s.resp)).toBe(true);
    }
    expect(send(r, withClock(VIRTIO_RTC_REQ_READ_CROSS, 3, 16, (dv) => dv.setUint8(10, 1)), 24).dv.getUint8(0)).toBe(VIRTIO_RTC_S_ENODEV);
  });

  it("CROSS_CAP: OK without the cross flag for the known counters (Linux registers its PTP clock on this), EOPNOTSUPP for unknown ones", () => {
    const r = rtcRig({ clock: new FakeRtcClock() });
    for (const counter of [0, 1]) {
      const s = send(r, withClock(VIRTIO_RTC_REQ_CROSS_CAP, 2, 16, (dv) => dv.setUint8(10, counter)), 16);
      expect(s.used[0]!.len).toBe(16);
      expect(s.dv.getUint8(0)).toBe(VIRTIO_RTC_S_OK);
      expect(restZero(s.resp)).toBe(true); // flags 0: no VIRTIO_RTC_FLAG_CROSS_CAP
    }
    for (const counter of [2, 0xf0, 0xfe, 0xff]) {
      expect(send(r, withClock(VIRTIO_RTC_REQ_CROSS_CAP, 0, 16, (dv) => dv.setUint8(10, counter)), 16).dv.getUint8(0)).toBe(VIRTIO_RTC_S_EOPNOTSUPP);
    }
    expect(send(r, withClock(VIRTIO_RTC_REQ_CROSS_CAP, 9, 16, (dv) => dv.setUint8(10, 1)), 16).dv.getUint8(0)).toBe(VIRTIO_RTC_S_ENODEV);
  });

  it("READ_ALARM / SET_ALARM / SET_ALARM_ENABLED round-trip; SET_ALARM_ENABLED keeps the time", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    const ra = (c: number) => send(r, withClock(VIRTIO_RTC_REQ_READ_ALARM, c), 24);
    const init = ra(1);
    expect(init.used[0]!.len).toBe(24);
    expect(init.dv.getUint8(0)).toBe(VIRTIO_RTC_S_OK);
    expect(init.dv.getBigUint64(8, true)).toBe(0n);
    expect(init.dv.getUint8(16)).toBe(0);
    const far = clock.real + 3600n * 1_000_000_000n;
    const set = send(r, setAlarm(0, far, VIRTIO_RTC_FLAG_ALARM_ENABLED), 8);
    expect(set.used[0]!.len).toBe(8);
    expect(set.dv.getUint8(0)).toBe(VIRTIO_RTC_S_OK);
    expect(restZero(set.resp)).toBe(true);
    const back = ra(0);
    expect(back.dv.getBigUint64(8, true)).toBe(far);
    expect(back.dv.getUint8(16)).toBe(VIRTIO_RTC_FLAG_ALARM_ENABLED);
    expect(restZero(back.resp, 17)).toBe(true);
    const dis = send(r, withClock(VIRTIO_RTC_REQ_SET_ALARM_ENABLED, 0, 16, (dv) => dv.setUint8(10, 0)), 8);
    expect(dis.used[0]!.len).toBe(8);
    expect(dis.dv.getUint8(0)).toBe(VIRTIO_RTC_S_OK);
    expect(ra(0).dv.getBigUint64(8, true)).toBe(far);
    expect(ra(0).dv.getUint8(16)).toBe(0);
    // Other clocks' alarms are untouched, and SET_ALARM accepts any u64.
    expect(send(r, setAlarm(2, 0xffff_ffff_ffff_ffffn, 0), 8).dv.getUint8(0)).toBe(VIRTIO_RTC_S_OK);
    expect(ra(2).dv.getBigUint64(8, true)).toBe(0xffff_ffff_ffff_ffffn);
    expect(ra(1).dv.getBigUint64(8, true)).toBe(0n);
  });

  it("alarm requests without VIRTIO_RTC_F_ALARM negotiated (or offered) are ENODEV, with the full response length", () => {
    for (const r of [rtcRig({ clock: new FakeRtcClock() }, false), rtcRig({ clock: new FakeRtcClock(), alarm: false })]) {
      const a = send(r, withClock(VIRTIO_RTC_REQ_READ_ALARM, 0), 24);
      expect([a.used[0]!.len, a.dv.getUint8(0)]).toEqual([24, VIRTIO_RTC_S_ENODEV]);
      const b = send(r, setAlarm(0, 1n, VIRTIO_RTC_FLAG_ALARM_ENABLED), 8);
      expect([b.used[0]!.len, b.dv.getUint8(0)]).toEqual([8, VIRTIO_RTC_S_ENODEV]);
      const c = send(r, withClock(VIRTIO_RTC_REQ_SET_ALARM_ENABLED, 0, 16, (dv) => dv.setUint8(10, 1)), 8);
      expect([c.used[0]!.len, c.dv.getUint8(0)]).toEqual([8, VIRTIO_RTC_S_ENODEV]);
      expect(r.dev.alarmTimers).toBe(0);
    }
  });

  it("a bad clock id is ENODEV for every clock request (3, 0xffff)", () => {
    const r = rtcRig({ clock: new FakeRtcClock() });
    for (const clock of [3, 0xffff]) {
      expect(send(r, read(clock), 16).dv.getUint8(0)).toBe(VIRTIO_RTC_S_ENODEV);
      expect(send(r, withClock(VIRTIO_RTC_REQ_CLOCK_CAP, clock), 16).dv.getUint8(0)).toBe(VIRTIO_RTC_S_ENODEV);
      expect(send(r, withClock(VIRTIO_RTC_REQ_READ_ALARM, clock), 24).dv.getUint8(0)).toBe(VIRTIO_RTC_S_ENODEV);
      expect(send(r, setAlarm(clock, 1n, 1), 8).dv.getUint8(0)).toBe(VIRTIO_RTC_S_ENODEV);
      const s = send(r, withClock(VIRTIO_RTC_REQ_SET_ALARM_ENABLED, clock, 16, (dv) => dv.setUint8(10, 1)), 8);
      expect(s.dv.getUint8(0)).toBe(VIRTIO_RTC_S_ENODEV);
    }
    expect(r.dev.metrics.enodev).toBe(10);
    expect(r.dev.alarmTimers).toBe(0);
  });

  it("an unknown message type is EOPNOTSUPP in an 8-byte response header", () => {
    const r = rtcRig({ clock: new FakeRtcClock() });
    for (const type of [0, 0x0003, 0x1006, 0x2000, 0xffff]) {
      const s = send(r, withClock(type, 0), 32);
      expect(s.used[0]!.len).toBe(8);
      expect(s.dv.getUint8(0)).toBe(VIRTIO_RTC_S_EOPNOTSUPP);
      expect(restZero(s.resp)).toBe(true);
    }
  });

  it("a request shorter than its header or its message is EINVAL in an 8-byte header", () => {
    const r = rtcRig({ clock: new FakeRtcClock() });
    for (const [req, readable] of [[read(0), 0], [read(0), 1], [read(0), 7], [read(0), 8], [read(0), 15], [setAlarm(0, 1n, 0), 16]] as const) {
      const s = send(r, req, 16, { readableLen: readable });
      expect(s.used, `${readable} readable bytes`).toHaveLength(1);
      expect(s.used[0]!.len).toBe(8);
      expect(s.dv.getUint8(0)).toBe(VIRTIO_RTC_S_EINVAL);
      expect(restZero(s.resp)).toBe(true);
    }
    expect(r.dev.metrics.einval).toBe(6);
  });

  it("a response buffer too small for the message is EINVAL in what fits; no writable byte at all completes with length 0", () => {
    const r = rtcRig({ clock: new FakeRtcClock() });
    const s12 = send(r, read(0), 12);
    expect([s12.used[0]!.len, s12.dv.getUint8(0)]).toEqual([8, VIRTIO_RTC_S_EINVAL]);
    const s4 = send(r, read(0), 4);
    expect(s4.used[0]!.len).toBe(4);
    expect(s4.dv.getUint8(0)).toBe(VIRTIO_RTC_S_EINVAL);
    expect(restZero(s4.resp)).toBe(true);
    const s1 = send(r, withClock(VIRTIO_RTC_REQ_READ_ALARM, 0), 1);
    expect([s1.used[0]!.len, s1.dv.getUint8(0)]).toEqual([1, VIRTIO_RTC_S_EINVAL]);
    const none = send(r, read(0), 0);
    expect(none.used).toEqual([{ id: expect.any(Number), len: 0 }]);
    expect(r.dev.metrics.noStatus).toBe(1);
    expect(r.t.status & STATUS_DEVICE_NEEDS_RESET).toBe(0);
    // The device still answers afterwards.
    expect(send(r, cfg(), 16).dv.getUint16(8, true)).toBe(3);
  });

  it("reserved bytes set in the header or the body, or unknown flags, are EINVAL with the message's response length", () => {
    const r = rtcRig({ clock: new FakeRtcClock() });
    const cases: [Uint8Array, number][] = [
      [request(VIRTIO_RTC_REQ_CFG, 8, (dv) => dv.setUint8(2, 1)), 16],
      [request(VIRTIO_RTC_REQ_CFG, 8, (dv) => dv.setUint8(7, 0x80)), 16],
      [withClock(VIRTIO_RTC_REQ_READ, 0, 16, (dv) => dv.setUint8(15, 1)), 16],
      [withClock(VIRTIO_RTC_REQ_CLOCK_CAP, 0, 16, (dv) => dv.setUint8(10, 1)), 16],
      [withClock(VIRTIO_RTC_REQ_CROSS_CAP, 0, 16, (dv) => { dv.setUint8(10, 1); dv.setUint8(11, 1); }), 16],
      [withClock(VIRTIO_RTC_REQ_READ_ALARM, 0, 16, (dv) => dv.setUint8(12, 1)), 24],
      [request(VIRTIO_RTC_REQ_SET_ALARM, 24, (dv) => dv.setUint8(18, 2)), 8],
      [request(VIRTIO_RTC_REQ_SET_ALARM, 24, (dv) => dv.setUint8(23, 1)), 8],
      [withClock(VIRTIO_RTC_REQ_SET_ALARM_ENABLED, 0, 16, (dv) => dv.setUint8(10, 0x81)), 8],
      [withClock(VIRTIO_RTC_REQ_SET_ALARM_ENABLED, 0, 16, (dv) => dv.setUint8(11, 1)), 8],
    ];
    for (const [req, size] of cases) {
      const s = send(r, req, size);
      expect([s.used[0]!.len, s.dv.getUint8(0)]).toEqual([size, VIRTIO_RTC_S_EINVAL]);
      expect(restZero(s.resp)).toBe(true);
    }
    // Nothing was set by the refused alarm requests.
    const a = send(r, withClock(VIRTIO_RTC_REQ_READ_ALARM, 0), 24);
    expect([a.dv.getBigUint64(8, true), a.dv.getUint8(16)]).toEqual([0n, 0]);
    expect(r.dev.alarmTimers).toBe(0);
  });

  it("bigger buffers than needed: the extra request bytes are ignored, the used length is still exact", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    const big = new Uint8Array(64).fill(0xab);
    big.set(read(2));
    const s = send(r, big, 64);
    expect(s.used[0]!.len).toBe(16);
    expect(s.dv.getBigUint64(8, true)).toBe(clock.mono);
    const after = new Uint8Array(4);
    r.mem.read(0x90000 + 16, after);
    expect([...after]).toEqual([0xee, 0xee, 0xee, 0xee]); // nothing written past the response
  });

  it("requests and responses split over several descriptors", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    const s = send(r, setAlarm(1, 42n, 0), 8, { split: true });
    expect([s.used[0]!.len, s.dv.getUint8(0)]).toEqual([8, VIRTIO_RTC_S_OK]);
    const a = send(r, withClock(VIRTIO_RTC_REQ_READ_ALARM, 1), 24, { split: true });
    expect([a.used[0]!.len, a.dv.getUint8(0), a.dv.getBigUint64(8, true)]).toEqual([24, VIRTIO_RTC_S_OK, 42n]);
  });

  it("a request buffer outside guest memory is EINVAL; a response buffer outside it sets NEEDS_RESET", () => {
    const r = rtcRig({ clock: new FakeRtcClock() });
    r.mem.write(0x90000, new Uint8Array(16).fill(0xee));
    r.requestq.addChain([{ addr: 2 ** 40, len: 16 }, { addr: 0x90000, len: 16, writable: true }]);
    r.t.notify(0);
    expect(r.requestq.takeUsed()).toEqual([{ id: expect.any(Number), len: 8 }]);
    expect(r.mem.readU8(0x90000)).toBe(VIRTIO_RTC_S_EINVAL);
    r.mem.write(0x80000, read(0));
    r.requestq.addChain([{ addr: 0x80000, len: 16 }, { addr: 2 ** 40, len: 16, writable: true }]);
    r.t.notify(0);
    expect(r.requestq.takeUsed()).toEqual([]);
    expect(r.t.status & STATUS_DEVICE_NEEDS_RESET).toBeTruthy();
    expect(r.dev.metrics.needsReset).toBe(1);
    // Stopped until reset: a valid request is not answered.
    r.mem.write(0x80000, cfg());
    r.requestq.addChain([{ addr: 0x80000, len: 8 }, { addr: 0x90000, len: 16, writable: true }]);
    r.t.notify(0);
    expect(r.requestq.takeUsed()).toEqual([]);
  });

  it("a broken requestq (head out of the table) sets NEEDS_RESET; after a reset the device answers again", () => {
    const r = rtcRig({ clock: new FakeRtcClock() });
    r.requestq.publish(500);
    r.t.notify(0);
    expect(r.t.status & STATUS_DEVICE_NEEDS_RESET).toBeTruthy();
    r.t.reset();
    const [q] = bringUp(r, VIRTIO_F_VERSION_1 | VIRTIO_RTC_F_ALARM);
    r.mem.write(0x80000, cfg());
    q!.addChain([{ addr: 0x80000, len: 8 }, { addr: 0x90000, len: 16, writable: true }]);
    r.t.notify(0);
    expect(q!.takeUsed()).toEqual([{ id: expect.any(Number), len: 16 }]);
    expect(r.mem.readU16(0x90008)).toBe(3);
  });

  it("a full ring of (indirect) requests is answered in order, one used entry each", () => {
    const r = rtcRig({ clock: new FakeRtcClock() }, true, VIRTIO_F_INDIRECT_DESC);
    for (let i = 0; i < 64; i++) {
      r.mem.write(0x100000 + 32 * i, read(i % 4));
      r.requestq.addChain([{ addr: 0x100000 + 32 * i, len: 16 }, { addr: 0x200000 + 32 * i, len: 16, writable: true }], { indirect: true });
    }
    r.t.notify(0);
    const used = r.requestq.takeUsed();
    expect(used).toHaveLength(64);
    expect(used.every((u) => u.len === 16)).toBe(true);
    const statuses = Array.from({ length: 64 }, (_, i) => r.mem.readU8(0x200000 + 32 * i));
    expect(statuses).toEqual(Array.from({ length: 64 }, (_, i) => (i % 4 === 3 ? VIRTIO_RTC_S_ENODEV : VIRTIO_RTC_S_OK)));
    expect(r.dev.metrics).toMatchObject({ requests: 64, ok: 48, enodev: 16 });
  });

  it("handleRtcRequest on its own: undefined (unreadable) request and every size boundary of every type", () => {
    const ctx = {
      clocks: [{ type: 0, alarm: true }],
      alarmNegotiated: true,
      read: () => 1n,
      readAlarm: () => ({ time: 0n, enabled: false }),
      setAlarm: () => undefined,
      setAlarmEnabled: () => undefined,
    };
    expect(handleRtcRequest(undefined, 16, 16, ctx)).toMatchObject({ msgType: undefined, status: VIRTIO_RTC_S_EINVAL });
    const sizes: [number, number, number][] = [
      [VIRTIO_RTC_REQ_READ, 16, 16], [VIRTIO_RTC_REQ_READ_CROSS, 16, 24], [VIRTIO_RTC_REQ_CFG, 8, 16],
      [VIRTIO_RTC_REQ_CLOCK_CAP, 16, 16], [VIRTIO_RTC_REQ_CROSS_CAP, 16, 16], [VIRTIO_RTC_REQ_READ_ALARM, 16, 24],
      [VIRTIO_RTC_REQ_SET_ALARM, 24, 8], [VIRTIO_RTC_REQ_SET_ALARM_ENABLED, 16, 8],
    ];
    for (const [type, req, resp] of sizes) {
      const good = handleRtcRequest(request(type, req, (dv) => type === VIRTIO_RTC_REQ_CROSS_CAP && dv.setUint8(10, 1)), req, resp, ctx);
      expect(good.bytes.length, `type 0x${type.toString(16)}`).toBe(resp);
      expect(good.status).toBe(type === VIRTIO_RTC_REQ_READ_CROSS ? VIRTIO_RTC_S_EOPNOTSUPP : VIRTIO_RTC_S_OK);
      expect(handleRtcRequest(request(type, req), req - 1, resp, ctx).status).toBe(VIRTIO_RTC_S_EINVAL);
      expect(handleRtcRequest(request(type, req), req, resp - 1, ctx)).toMatchObject({ status: VIRTIO_RTC_S_EINVAL });
    }
  });
});
