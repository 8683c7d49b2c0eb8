// packages/virtio-devices/README.md, ts/js code block 6: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { createServer } from "node:net";
import { GuestMemoryArrayBuffer } from "@ts-vmm/vm-memory";
import { MockSplitQueue } from "@ts-vmm/virtio-queue/mock";
import { MMIO, MmioTransport, VirtioVsock, VIRTIO_F_VERSION_1, VSOCK_OP_REQUEST, VSOCK_OP_RW, decodeHeader, encodeHeader } from "@ts-vmm/virtio-devices";

const uds = `/tmp/vsock-example-${process.pid}.sock`;
// The host side of guest port 5000: the Unix socket <uds>_5000 (Firecracker's convention).
const host = createServer((s) => s.on("data", (b) => console.log("host got", JSON.stringify(b.toString()))));
await new Promise<void>((res) => host.listen(`${uds}_5000`, res));

const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x100_0000 }]);
const dev = VirtioVsock.open({ cid: 3, udsPath: uds });
const t = new MmioTransport(dev, { mem, irq: { trigger: () => {} } });

// The guest driver's bring-up: features, then rx (0), tx (1) and event (2) queues, DRIVER_OK.
const w = (off: number, v: number) => t.writeRegister(off, v);
w(MMIO.Status, 1); w(MMIO.Status, 1 | 2);
w(MMIO.DriverFeaturesSel, 1); w(MMIO.DriverFeatures, Number(VIRTIO_F_VERSION_1 >> 32n));
w(MMIO.Status, 1 | 2 | 8);
const [rx, tx] = [0, 1, 2].map((i) => {
  const q = new MockSplitQueue(mem, 16, { base: 0x10000 + i * 0x10000 });
  w(MMIO.QueueSel, i); w(MMIO.QueueNum, 16);
  w(MMIO.QueueDescLow, q.descTable); w(MMIO.QueueDriverLow, q.availRing); w(MMIO.QueueDeviceLow, q.usedRing);
  w(MMIO.QueueReady, 1);
  return q;
});
w(MMIO.Status, 1 | 2 | 8 | 4);
rx!.addChain([{ addr: 0x80000, len: 44 + 4096, writable: true }]);
t.notify(0);

// The guest connects from port 1234 to host port 5000 (a 44-byte header, REQUEST), then sends "hi".
const send = (op: number, data = new Uint8Array(0)) => {
  const at = op === VSOCK_OP_REQUEST ? 0x90000 : 0x91000;
  mem.write(at, encodeHeader({ srcCid: 3, dstCid: 2, srcPort: 1234, dstPort: 5000, len: data.length, type: 1, op, flags: 0, bufAlloc: 65536, fwdCnt: 0 }));
  mem.write(at + 44, data);
  tx!.addChain([{ addr: at, len: 44 + data.length }]);
  t.notify(1);
};
send(VSOCK_OP_REQUEST);
while (rx!.usedIdx() === 0) await new Promise((r) => setTimeout(r, 5)); // the device connects <uds>_5000, answers RESPONSE
const reply = new Uint8Array(44);
mem.read(0x80000, reply);
console.log("guest got op", decodeHeader(reply).op, "(2 = RESPONSE)");
send(VSOCK_OP_RW, new TextEncoder().encode("hi"));
await new Promise((r) => setTimeout(r, 50));
console.log("connections", dev.metrics.connsAdded, "bytes to host", dev.metrics.txBytes);
dev.close();
host.close();
// -> guest got op 2 (2 = RESPONSE)
//    host got "hi"
//    connections 1 bytes to host 2
