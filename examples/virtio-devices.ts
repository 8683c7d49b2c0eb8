// packages/virtio-devices/README.md, ts/js code block 1: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { writeFileSync } from "node:fs";
import { GuestMemoryArrayBuffer } from "@ts-vmm/vm-memory";
import { MockSplitQueue } from "@ts-vmm/virtio-queue/mock";
import { MMIO, MmioTransport, VirtioBlock, VIRTIO_BLK_T_IN, VIRTIO_F_VERSION_1 } from "@ts-vmm/virtio-devices";

writeFileSync("/tmp/example.img", Buffer.alloc(1 << 20, 0x5a)); // a 1 MiB raw image
const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x100_0000 }]);
let interrupts = 0;
const t = new MmioTransport(VirtioBlock.open("/tmp/example.img"), { mem, irq: { trigger: () => void interrupts++ } });

// The guest driver's bring-up, register by register (virtio 1.2 §3.1.1).
const w = (off: number, v: number) => t.writeRegister(off, v);
w(MMIO.Status, 1); // ACKNOWLEDGE
w(MMIO.Status, 1 | 2); // DRIVER
w(MMIO.DriverFeaturesSel, 1);
w(MMIO.DriverFeatures, Number(VIRTIO_F_VERSION_1 >> 32n));
w(MMIO.Status, 1 | 2 | 8); // FEATURES_OK
const q = new MockSplitQueue(mem, 64, { base: 0x10000 });
w(MMIO.QueueSel, 0);
w(MMIO.QueueNum, 64);
w(MMIO.QueueDescLow, q.descTable);
w(MMIO.QueueDriverLow, q.availRing);
w(MMIO.QueueDeviceLow, q.usedRing);
w(MMIO.QueueReady, 1);
w(MMIO.Status, 1 | 2 | 8 | 4); // DRIVER_OK

// Read sector 0: header, 512-byte data buffer, status byte.
mem.writeU32(0x80000, VIRTIO_BLK_T_IN);
mem.writeU64(0x80008, 0n);
q.addChain([
  { addr: 0x80000, len: 16 },
  { addr: 0x81000, len: 512, writable: true },
  { addr: 0x82000, len: 1, writable: true },
]);
t.notify(0); // what the queue's ioeventfd handler does
console.log(q.takeUsed(), "status", mem.readU8(0x82000), "first byte", mem.readU8(0x81000).toString(16), "interrupts", interrupts);
// -> [ { id: 0, len: 513 } ] status 0 first byte 5a interrupts 1
