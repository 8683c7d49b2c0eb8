// packages/virtio-devices/README.md, ts/js code block 3: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { GuestMemoryArrayBuffer } from "@ts-vmm/vm-memory";
import { MockSplitQueue } from "@ts-vmm/virtio-queue/mock";
import { MMIO, MmioTransport, VirtioNet, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF, type NetBackend } from "@ts-vmm/virtio-devices";

// A host side that sends every frame back (a tap would be TapBackend.open({ name: "tap0" })).
const queued: Uint8Array[] = [];
let wake: (() => void) | undefined;
const loopback: NetBackend = {
  name: "loopback",
  offloads: 0,
  setOffload() {},
  read(buf) {
    const f = queued.shift();
    if (f === undefined) return "again";
    buf.set(f);
    return f.length;
  },
  write(pieces) {
    queued.push(Buffer.concat(pieces));
    setImmediate(() => wake?.()); // "readable": a level-triggered watch would fire now
    return queued.at(-1)!.length;
  },
  watch(events, cb) {
    wake = events.readable ? () => cb({ readable: true, writable: false }) : undefined;
  },
  close() {},
};

// At most 2 frames a second from the guest, after a one-time burst of 1.
const dev = new VirtioNet({ backend: loopback, mac: "52:54:00:12:34:56", txRateLimiter: { ops: { size: 2, refillTimeMs: 1000, oneTimeBurst: 1 } } });
const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x100_0000 }]);
const t = new MmioTransport(dev, { mem, irq: { trigger() {} } });
const w = (off: number, v: number) => t.writeRegister(off, v);
w(MMIO.Status, 1);
w(MMIO.Status, 1 | 2);
w(MMIO.DriverFeatures, Number(VIRTIO_NET_F_MRG_RXBUF));
w(MMIO.DriverFeaturesSel, 1);
w(MMIO.DriverFeatures, Number(VIRTIO_F_VERSION_1 >> 32n));
w(MMIO.Status, 1 | 2 | 8);
const rx = new MockSplitQueue(mem, 64, { base: 0x10000 });
const tx = new MockSplitQueue(mem, 64, { base: 0x20000 });
for (const [i, q] of [rx, tx].entries()) {
  w(MMIO.QueueSel, i);
  w(MMIO.QueueNum, 64);
  w(MMIO.QueueDescLow, q.descTable);
  w(MMIO.QueueDriverLow, q.availRing);
  w(MMIO.QueueDeviceLow, q.usedRing);
  w(MMIO.QueueReady, 1);
}
w(MMIO.Status, 1 | 2 | 8 | 4);

// The guest posts four 32-byte receive buffers and sends 4 frames of 12-byte header + 60 bytes.
for (let i = 0; i < 4; i++) rx.addChain([{ addr: 0x80000 + i * 0x100, len: 32, writable: true }]);
t.notify(0);
for (let i = 0; i < 4; i++) {
  mem.write(0x90000 + i * 0x100 + 12, new Uint8Array(60).fill(0xa0 + i));
  tx.addChain([{ addr: 0x90000 + i * 0x100, len: 72 }]);
}
t.notify(1);
console.log("sent at once:", dev.metrics.txFrames, "throttled:", dev.metrics.txThrottled); // 3 (burst 1 + bucket 2), 1
await new Promise((r) => setTimeout(r, 600)); // the limiter's timer sends the 4th
console.log("sent:", dev.metrics.txFrames, "received:", dev.metrics.rxFrames, "waiting for buffers:", dev.metrics.rxNoBuffers > 0);
// Frame 1 took 3 merged buffers (num_buffers = 3 in its header), frame 2 waits on the host for more.
console.log(rx.takeUsed().map((u) => u.len), "num_buffers", mem.readU16(0x80000 + 10));
// -> sent at once: 3 throttled: 1 / sent: 4 received: 1 waiting for buffers: true / [ 32, 32, 8 ] num_buffers 3
