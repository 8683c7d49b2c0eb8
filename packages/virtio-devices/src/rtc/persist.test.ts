import { describe, expect, it } from "vitest";
import { FakeRtcClock, postAlarmBuffers, request, rtcRig, send, takeNotifications, withClock, type RtcRig } from "../../test/rtc-driver.js";
import {
  MmioTransport,
  VIRTIO_RTC_REQ_READ,
  VIRTIO_RTC_REQ_READ_ALARM,
  VIRTIO_RTC_REQ_SET_ALARM,
  VirtioDeviceError,
  VirtioRtc,
  type DeviceState,
  type MmioTransportState,
} from "../index.js";

const MS = 1_000_000n;

function setAlarm(r: RtcRig, clock: number, time: bigint): void {
  send(r, request(VIRTIO_RTC_REQ_SET_ALARM, 24, (dv) => {
    dv.setBigUint64(8, time, true);
    dv.setUint16(16, clock, true);
    dv.setUint8(18, 1);
  }), 8);
}

/** A transport restored from `saved` onto a new device, with the rig's memory and mock rings. */
function restored(r: RtcRig, saved: MmioTransportState, dev: VirtioRtc): RtcRig {
  const t = MmioTransport.fromState(saved, dev, { mem: r.mem, irq: r.irq });
  return { ...r, t, dev };
}

describe("virtio-rtc persist", () => {
  it("state() is plain JSON; a restored device keeps its alarms, delivers pending expirations and re-arms timers", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    setAlarm(r, 0, clock.real + 10n * MS); // armed
    setAlarm(r, 2, clock.mono - 1n); // expired, no buffers yet: pending
    expect(r.dev.pendingAlarms).toEqual([2]);
    const saved = JSON.parse(JSON.stringify(r.t.state())) as MmioTransportState;
    expect(saved.device).toMatchObject({ deviceType: 17, clocks: [0, 1, 2], alarmOffered: true, taiOffsetSeconds: 37, pending: [2] });
    r.t.reset(); // the old device is gone
    const r2 = restored(r, saved, new VirtioRtc({ clock }));
    expect(r2.dev.pendingAlarms).toEqual([2]);
    expect(r2.dev.alarmTimers).toBe(1);
    postAlarmBuffers(r2, 4);
    expect(takeNotifications(r2).map((n) => n.clock)).toEqual([2]);
    clock.advance(10n * MS);
    expect(takeNotifications(r2).map((n) => n.clock)).toEqual([0]);
    const a = send(r2, withClock(VIRTIO_RTC_REQ_READ_ALARM, 0), 24);
    expect(a.dv.getBigUint64(8, true)).toBe(clock.real); // set 10 ms ahead, 10 ms ago
  });

  it("MONOTONIC never goes back across a restore onto a host whose CLOCK_MONOTONIC is behind", () => {
    const clock = new FakeRtcClock();
    clock.mono = 900_000_000_000n;
    const r = rtcRig({ clock });
    const before = send(r, withClock(VIRTIO_RTC_REQ_READ, 2), 16).dv.getBigUint64(8, true);
    const saved = JSON.parse(JSON.stringify(r.t.state())) as MmioTransportState;
    const other = new FakeRtcClock();
    other.mono = 1_000_000_000n; // another host, booted recently
    const r2 = restored(r, saved, new VirtioRtc({ clock: other }));
    const after = send(r2, withClock(VIRTIO_RTC_REQ_READ, 2), 16).dv.getBigUint64(8, true);
    expect(after >= before).toBe(true);
    other.advance(5n * MS);
    expect(send(r2, withClock(VIRTIO_RTC_REQ_READ, 2), 16).dv.getBigUint64(8, true)).toBe(before + 5n * MS);
  });

  it("restoreState refuses another device, another configuration, and malformed fields", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    const good = r.dev.state();
    const dev = new VirtioRtc({ clock });
    expect(() => dev.restoreState(good)).not.toThrow();
    const bad: DeviceState[] = [
      { deviceType: 4 },
      { ...good, clocks: [0, 1] },
      { ...good, alarmOffered: false },
      { ...good, taiOffsetSeconds: 36 },
      { ...good, alarms: good.alarms.slice(1) },
      { ...good, alarms: [{ time: "-1", enabled: true, below: false }, ...good.alarms.slice(1)] },
      { ...good, alarms: [{ time: "18446744073709551616", enabled: true, below: false }, ...good.alarms.slice(1)] },
      { ...good, alarms: [{ time: "1", enabled: "yes", below: false }, ...good.alarms.slice(1)] },
      { ...good, pending: [3] },
      { ...good, pending: [1, 1] },
      { ...good, pending: [0.5] },
      { ...good, monotonicNs: undefined },
      { ...good, monotonicNs: "0x10" },
    ];
    for (const s of bad) {
      expect(() => new VirtioRtc({ clock }).restoreState(s), JSON.stringify(s)).toThrow(expect.objectContaining({ code: "InvalidState" }));
    }
    expect(() => new VirtioRtc({ clock, alarm: false }).restoreState(good)).toThrow(VirtioDeviceError);
    // A device without alarms refuses a state with an alarm set.
    const plain = new VirtioRtc({ clock, alarm: false });
    const plainState = plain.state();
    expect(() => new VirtioRtc({ clock, alarm: false }).restoreState(plainState)).not.toThrow();
    const withAlarm = { ...plainState, alarms: [{ time: "5", enabled: true, below: false }, ...plainState.alarms.slice(1)] };
    expect(() => new VirtioRtc({ clock, alarm: false }).restoreState(withAlarm)).toThrow(VirtioDeviceError);
  });

  it("constructor options are checked", () => {
    expect(() => new VirtioRtc({ taiOffsetSeconds: -1 })).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    expect(() => new VirtioRtc({ taiOffsetSeconds: 37.5 })).toThrow(VirtioDeviceError);
    expect(() => new VirtioRtc({ alarm: "yes" as unknown as boolean })).toThrow(VirtioDeviceError);
    expect(new VirtioRtc({ taiOffsetSeconds: 0 }).taiOffsetSeconds).toBe(0);
  });

  it("pause cancels the alarm timers and holds requests and notifications; resume re-arms from the clock and delivers an alarm that came due meanwhile", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    postAlarmBuffers(r, 4);
    setAlarm(r, 2, clock.mono + 10n * MS);
    expect(r.dev.alarmTimers).toBe(1);
    r.t.pause();
    expect(r.dev.paused).toBe(true);
    expect(r.dev.alarmTimers).toBe(0);
    expect(clock.live).toBe(0); // no host timer left either
    clock.advance(20n * MS); // past the alarm time while paused
    expect(takeNotifications(r)).toEqual([]);
    // A request while paused waits in the ring (the transport holds the notification).
    r.mem.write(0x9_0000, request(VIRTIO_RTC_REQ_READ, 16, (dv) => dv.setUint16(8, 2, true)));
    r.requestq.addChain([{ addr: 0x9_0000, len: 16 }, { addr: 0x9_1000, len: 16, writable: true }]);
    r.t.notify(0);
    expect(r.requestq.takeUsed()).toEqual([]);
    const irqs = r.irq.count;
    r.t.resume();
    expect(r.requestq.takeUsed()).toEqual([{ id: expect.any(Number), len: 16 }]);
    expect(takeNotifications(r).map((n) => n.clock)).toEqual([2]);
    expect(r.irq.count).toBeGreaterThan(irqs);
  });

  it("restored paused, a pending alarm is delivered and its clock's timer armed only on resume", () => {
    const clock = new FakeRtcClock();
    const r = rtcRig({ clock });
    setAlarm(r, 0, clock.real + 50n * MS); // UTC alarm, armed
    setAlarm(r, 2, clock.mono - 1n); // expired, no buffer: pending
    r.t.pause();
    const saved = JSON.parse(JSON.stringify(r.t.state())) as MmioTransportState;
    r.t.reset();
    const dev = new VirtioRtc({ clock });
    const t = MmioTransport.fromState(saved, dev, { mem: r.mem, irq: r.irq }, { paused: true });
    const r2: RtcRig = { ...r, t, dev };
    postAlarmBuffers(r2, 4);
    expect(dev.pendingAlarms).toEqual([2]);
    expect(dev.alarmTimers).toBe(0);
    expect(takeNotifications(r2)).toEqual([]);
    t.resume();
    expect(takeNotifications(r2).map((n) => n.clock)).toEqual([2]);
    expect(dev.alarmTimers).toBe(1);
    clock.advance(50n * MS);
    expect(takeNotifications(r2).map((n) => n.clock)).toEqual([0]);
  });
});
