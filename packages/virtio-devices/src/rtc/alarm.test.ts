import { describe, expect, it } from "vitest";
import { FakeRtcClock, postAlarmBuffers, request, rtcRig, send, takeNotifications, withClock, type RtcRig } from "../../test/rtc-driver.js";
import { bringUp } from "../../test/driver.js";
import {
  RTC_ALARM_RECHECK_MS,
  STATUS_DEVICE_NEEDS_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_RTC_F_ALARM,
  VIRTIO_RTC_FLAG_ALARM_ENABLED,
  VIRTIO_RTC_NOTIF_ALARM,
  VIRTIO_RTC_REQ_READ,
  VIRTIO_RTC_REQ_READ_ALARM,
  VIRTIO_RTC_REQ_SET_ALARM,
  VIRTIO_RTC_REQ_SET_ALARM_ENABLED,
  VIRTIO_RTC_S_OK,
} from "../index.js";

const MS = 1_000_000n;
const UTC = 0;
const TAI = 1;
const MONO = 2;

function setAlarm(r: RtcRig, clock: number, time: bigint, enabled: boolean): void {
  const s = send(
    r,
    request(VIRTIO_RTC_REQ_SET_ALARM, 24, (dv) => {
      dv.setBigUint64(8, time, true);
      dv.setUint16(16, clock, true);
      dv.setUint8(18, enabled ? VIRTIO_RTC_FLAG_ALARM_ENABLED : 0);
    }),
    8,
  );
  expect([s.used[0]?.len, s.dv.getUint8(0)]).toEqual([8, VIRTIO_RTC_S_OK]);
}
function setEnabled(r: RtcRig, clock: number, enabled: boolean): void {
  const s = send(r, withClock(VIRTIO_RTC_REQ_SET_ALARM_ENABLED, clock, 16, (dv) => dv.setUint8(10, enabled ? 1 : 0)), 8);
  expect([s.used[0]?.len, s.dv.getUint8(0)]).toEqual([8, VIRTIO_RTC_S_OK]);
}
function readClock(r: RtcRig, clock: number): bigint {
  return send(r, withClock(VIRTIO_RTC_REQ_READ, clock), 16).dv.getBigUint64(8, true);
}
const alarmNotif = (clock: number) => ({ type: VIRTIO_RTC_NOTIF_ALARM, clock, len: 16 });

describe("virtio-rtc alarms (injected clock)", () => {
  it("a MONOTONIC alarm 10 ms ahead fires when the clock gets there, not before; one notification, one interrupt on the alarmq", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    postAlarmBuffers(r, 4);
    setAlarm(r, MONO, clock.mono + 10n * MS, true);
    expect(r.dev.alarmTimers).toBe(1);
    const irqs = r.irq.count;
    clock.advance(9n * MS);
    expect(takeNotifications(r)).toEqual([]);
    clock.advance(1n * MS);
    expect(takeNotifications(r)).toEqual([alarmNotif(MONO)]);
    expect(r.irq.count).toBe(irqs + 1);
    expect(r.t.interruptStatus & 1).toBe(1);
    // The notification's reserved bytes are zero.
    const at = [...r.alarmBuffers.values()][0]!;
    const raw = new Uint8Array(16);
    r.mem.read(at, raw);
    expect([...raw.subarray(2, 8), ...raw.subarray(10, 16)].every((b) => b === 0)).toBe(true);
    // It stays enabled but does not fire again while the clock keeps going; MONOTONIC needs no more timers.
    clock.advance(5000n * MS);
    expect(takeNotifications(r)).toEqual([]);
    expect(r.dev.alarmTimers).toBe(0);
    expect(r.dev.metrics).toMatchObject({ alarmExpirations: 1, notifications: 1 });
    const a = send(r, withClock(VIRTIO_RTC_REQ_READ_ALARM, MONO), 24);
    expect(a.dv.getUint8(16)).toBe(VIRTIO_RTC_FLAG_ALARM_ENABLED);
  });

  it("UTC and TAI alarms fire on their own clocks (TAI = UTC + 37 s)", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    postAlarmBuffers(r, 4);
    setAlarm(r, UTC, clock.real + 20n * MS, true);
    setAlarm(r, TAI, clock.real + 37_000n * MS + 40n * MS, true);
    clock.advance(25n * MS);
    expect(takeNotifications(r)).toEqual([alarmNotif(UTC)]);
    clock.advance(14n * MS);
    expect(takeNotifications(r)).toEqual([]);
    clock.advance(1n * MS);
    expect(takeNotifications(r)).toEqual([alarmNotif(TAI)]);
  });

  it("setting an enabled alarm in the past, or enabling one whose time passed, expires it at once", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    postAlarmBuffers(r, 4);
    setAlarm(r, UTC, clock.real - 1n, true);
    expect(takeNotifications(r)).toEqual([alarmNotif(UTC)]);
    setAlarm(r, MONO, clock.mono - 5n * MS, false);
    expect(takeNotifications(r)).toEqual([]);
    setEnabled(r, MONO, true);
    expect(takeNotifications(r)).toEqual([alarmNotif(MONO)]);
    // Exactly at the alarm time counts as reached.
    setAlarm(r, TAI, readClock(r, TAI), true);
    expect(takeNotifications(r)).toEqual([alarmNotif(TAI)]);
  });

  it("no alarmq buffers: the expiration waits (one per clock) and is delivered when buffers come", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    setAlarm(r, UTC, clock.real + 1n * MS, true);
    setAlarm(r, MONO, clock.mono + 2n * MS, true);
    clock.advance(3n * MS);
    setEnabled(r, UTC, true); // re-enabling an expired alarm replaces its pending expiration, never duplicates it
    expect(r.dev.pendingAlarms).toEqual([MONO, UTC]);
    postAlarmBuffers(r, 1);
    expect(takeNotifications(r)).toEqual([alarmNotif(MONO)]);
    expect(r.dev.pendingAlarms).toEqual([UTC]);
    postAlarmBuffers(r, 3, 16, 1);
    expect(takeNotifications(r)).toEqual([alarmNotif(UTC)]);
    expect(r.dev.pendingAlarms).toEqual([]);
  });

  it("disabling (SET_ALARM_ENABLED 0 or SET_ALARM without the flag) drops an undelivered expiration before the response", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    setAlarm(r, UTC, clock.real + 1n * MS, true);
    setAlarm(r, MONO, clock.mono + 1n * MS, true);
    clock.advance(2n * MS);
    expect(r.dev.pendingAlarms).toEqual([UTC, MONO]);
    setEnabled(r, UTC, false);
    setAlarm(r, MONO, clock.mono + 100n * MS, false);
    expect(r.dev.pendingAlarms).toEqual([]);
    postAlarmBuffers(r, 4);
    clock.advance(1000n * MS);
    expect(takeNotifications(r)).toEqual([]);
    expect(r.dev.alarmTimers).toBe(0);
  });

  it("an alarmq buffer shorter than a notification is returned empty and the notification takes the next one", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    postAlarmBuffers(r, 1, 8);
    postAlarmBuffers(r, 1, 16, 1);
    setAlarm(r, UTC, 0n, true);
    expect(takeNotifications(r).map((n) => n.len)).toEqual([0, 16]);
    expect(r.dev.metrics.shortAlarmBuffers).toBe(1);
    expect(r.t.status & STATUS_DEVICE_NEEDS_RESET).toBe(0);
  });

  it("an alarmq buffer outside guest memory sets NEEDS_RESET", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    r.alarmq.addChain([{ addr: 2 ** 40, len: 16, writable: true }]);
    r.t.notify(1);
    setAlarm(r, UTC, 0n, true);
    expect(r.t.status & STATUS_DEVICE_NEEDS_RESET).toBeTruthy();
    expect(r.dev.metrics.needsReset).toBe(1);
  });

  it("UTC follows host clock steps: a step forward past the alarm fires within the recheck interval; a step back below re-arms it", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    postAlarmBuffers(r, 4);
    setAlarm(r, UTC, clock.real + 3_600_000n * MS, true); // an hour ahead
    expect(clock.delays.at(-1)).toBe(RTC_ALARM_RECHECK_MS); // a stepping clock is re-read at least every second
    clock.step(3_600_000n * MS); // the host clock is set an hour forward
    clock.advance(BigInt(RTC_ALARM_RECHECK_MS) * MS);
    expect(takeNotifications(r)).toEqual([alarmNotif(UTC)]);
    clock.advance(10_000n * MS);
    expect(takeNotifications(r)).toEqual([]); // no repeat while the clock stays past the alarm
    clock.step(-10_000n * MS - 3_600_000n * MS); // set back before the alarm time
    clock.advance(BigInt(RTC_ALARM_RECHECK_MS) * MS);
    expect(takeNotifications(r)).toEqual([]);
    clock.step(3_600_000n * MS); // and forward again: a new expiration event
    clock.advance(BigInt(RTC_ALARM_RECHECK_MS) * MS);
    expect(takeNotifications(r)).toEqual([alarmNotif(UTC)]);
    expect(r.dev.alarmTimers).toBe(1); // still one timer for the one enabled UTC alarm
  });

  it("a far MONOTONIC alarm uses one timer of at most 2^31 − 1 ms and re-arms until due", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    postAlarmBuffers(r, 1);
    const far = clock.mono + 30n * 86_400_000n * MS; // 30 days
    setAlarm(r, MONO, far, true);
    expect(clock.delays.at(-1)).toBe(2 ** 31 - 1);
    clock.advance(29n * 86_400_000n * MS);
    expect(takeNotifications(r)).toEqual([]);
    expect(clock.live).toBe(1);
    clock.advance(86_400_000n * MS);
    expect(takeNotifications(r)).toEqual([alarmNotif(MONO)]);
    // The largest alarm time (2^64 − 1) arms one capped timer and never fires.
    setAlarm(r, MONO, 0xffff_ffff_ffff_ffffn, true);
    expect(clock.live).toBe(1);
  });

  it("timers stay bounded: one per clock however often the guest sets alarms", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    for (let i = 0; i < 200; i++) setAlarm(r, i % 3, (i % 3 === MONO ? clock.mono : clock.real) + BigInt(1000 + i) * MS, true);
    expect(r.dev.alarmTimers).toBe(3);
    expect(clock.live).toBe(3);
  });

  it("device reset cancels every timer and forgets alarms and undelivered expirations", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    setAlarm(r, UTC, clock.real + 50n * MS, true);
    setAlarm(r, MONO, clock.mono - 1n, true); // expired, undelivered (no buffers)
    expect(r.dev.pendingAlarms).toEqual([MONO]);
    expect(clock.live).toBe(1);
    r.t.reset();
    expect(clock.live).toBe(0);
    expect(r.dev.alarmTimers).toBe(0);
    expect(r.dev.pendingAlarms).toEqual([]);
    clock.advance(100n * MS);
    const [requestq, alarmq] = bringUp(r, VIRTIO_F_VERSION_1 | VIRTIO_RTC_F_ALARM);
    const r2 = { ...r, requestq: requestq!, alarmq: alarmq! };
    postAlarmBuffers(r2, 4);
    expect(takeNotifications(r2)).toEqual([]);
    for (const c of [UTC, TAI, MONO]) {
      const a = send(r2, withClock(VIRTIO_RTC_REQ_READ_ALARM, c), 24);
      expect([a.dv.getBigUint64(8, true), a.dv.getUint8(16)]).toEqual([0n, 0]);
    }
  });
});

describe("virtio-rtc alarms (host clock, real delay)", () => {
  it("a MONOTONIC alarm 30 ms ahead is notified after the clock reached it, within a second", async () => {
    const r = rtcRig();
    postAlarmBuffers(r, 2);
    const now = readClock(r, MONO);
    const at = now + 30n * MS;
    setAlarm(r, MONO, at, true);
    expect(takeNotifications(r)).toEqual([]);
    const t0 = Date.now();
    let got: ReturnType<typeof takeNotifications> = [];
    while (got.length === 0 && Date.now() - t0 < 1000) {
      await new Promise((res) => setTimeout(res, 5));
      got = takeNotifications(r);
    }
    expect(got).toEqual([alarmNotif(MONO)]);
    expect(readClock(r, MONO) >= at).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(25);
  });

  it("a UTC alarm 40 ms ahead fires on the host realtime clock", async () => {
    const r = rtcRig();
    postAlarmBuffers(r, 2);
    const at = readClock(r, UTC) + 40n * MS;
    setAlarm(r, UTC, at, true);
    const t0 = Date.now();
    let got: ReturnType<typeof takeNotifications> = [];
    while (got.length === 0 && Date.now() - t0 < 1500) {
      await new Promise((res) => setTimeout(res, 5));
      got = takeNotifications(r);
    }
    expect(got).toEqual([alarmNotif(UTC)]);
    expect(BigInt(Date.now()) * MS + MS >= at).toBe(true);
    r.t.reset(); // cancels the recheck timer
    expect(r.dev.alarmTimers).toBe(0);
  });
});
