// packages/virtio-devices/README.md, ts/js code block 5: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { GuestMemoryArrayBuffer } from "@ts-vmm/vm-memory";
import { MockSplitQueue } from "@ts-vmm/virtio-queue/mock";
import {
  MMIO, MmioTransport, VirtioRtc, VIRTIO_F_VERSION_1, VIRTIO_RTC_F_ALARM, VIRTIO_RTC_REQ_READ, VIRTIO_RTC_REQ_SET_ALARM,
} from "@ts-vmm/virtio-devices";

const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x100_0000 }]);
const rtc = new VirtioRtc(); // clocks 0 UTC, 1 TAI (UTC + 37 s), 2 MONOTONIC; alarms offered
const t = new MmioTransport(rtc, { mem, irq: { trigger: () => {} } });
const w = (off: number, v: number) => t.writeRegister(off, v);
w(MMIO.Status, 1 | 2); // ACKNOWLEDGE, DRIVER
w(MMIO.DriverFeaturesSel, 0);
w(MMIO.DriverFeatures, Number(VIRTIO_RTC_F_ALARM));
w(MMIO.DriverFeaturesSel, 1);
w(MMIO.DriverFeatures, Number(VIRTIO_F_VERSION_1 >> 32n));
w(MMIO.Status, 1 | 2 | 8); // FEATURES_OK
const [requestq, alarmq] = [0, 1].map((i) => {
  const q = new MockSplitQueue(mem, 16, { base: 0x10000 * (i + 1) });
  w(MMIO.QueueSel, i);
  w(MMIO.QueueNum, 16);
  w(MMIO.QueueDescLow, q.descTable);
  w(MMIO.QueueDriverLow, q.availRing);
  w(MMIO.QueueDeviceLow, q.usedRing);
  w(MMIO.QueueReady, 1);
  return q;
}) as [MockSplitQueue, MockSplitQueue];
w(MMIO.Status, 1 | 2 | 8 | 4); // DRIVER_OK

/** READ (16-byte request: type, clock id at 8) -> { status, le64 nanoseconds at 8 }. */
function read(clock: number): bigint {
  mem.write(0x80000, new Uint8Array(16));
  mem.writeU16(0x80000, VIRTIO_RTC_REQ_READ);
  mem.writeU16(0x80008, clock);
  requestq.addChain([{ addr: 0x80000, len: 16 }, { addr: 0x81000, len: 16, writable: true }]);
  t.notify(0); // what the requestq's ioeventfd handler does
  const [used] = requestq.takeUsed();
  if (used?.len !== 16 || mem.readU8(0x81000) !== 0) throw new Error("READ failed");
  return mem.readU64(0x81008);
}
const utc = read(0);
console.log("UTC", new Date(Number(utc / 1_000_000n)).toISOString(), "TAI - UTC", Math.round(Number(read(1) - utc) / 1e9), "s");

// An alarm on MONOTONIC 20 ms from now (SET_ALARM: le64 time at 8, clock id at 16, flags at 18).
alarmq.addChain([{ addr: 0x82000, len: 16, writable: true }]);
t.notify(1);
const at = read(2) + 20_000_000n;
mem.write(0x80000, new Uint8Array(24));
mem.writeU16(0x80000, VIRTIO_RTC_REQ_SET_ALARM);
mem.writeU64(0x80008, at);
mem.writeU16(0x80010, 2);
mem.writeU8(0x80012, 1); // VIRTIO_RTC_FLAG_ALARM_ENABLED
requestq.addChain([{ addr: 0x80000, len: 24 }, { addr: 0x81000, len: 8, writable: true }]);
t.notify(0);
console.log("SET_ALARM", requestq.takeUsed(), "status", mem.readU8(0x81000));
await new Promise((res) => setTimeout(res, 100)); // the device's timers never keep the process alive on their own
console.log("alarmq", alarmq.takeUsed(), "type", mem.readU16(0x82000).toString(16), "clock", mem.readU16(0x82008));
// -> UTC 2026-…Z TAI - UTC 37 s
//    SET_ALARM [ { id: 1, len: 8 } ] status 0
//    alarmq [ { id: 0, len: 16 } ] type 2000 clock 2
