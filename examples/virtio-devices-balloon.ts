// packages/virtio-devices/README.md, ts/js code block 4: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { fstatSync } from "node:fs";
import { GuestMemoryMmap } from "@ts-vmm/vm-memory/mmap";
import { MockSplitQueue } from "@ts-vmm/virtio-queue/mock";
import { INT_CONFIG_CHANGE, MMIO, MmioTransport, VirtioBalloon, VIRTIO_F_VERSION_1 } from "@ts-vmm/virtio-devices";

// 64 MiB of memfd-backed guest memory; the guest has touched 8 MiB at 32 MiB.
const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 64 << 20 }]);
mem.write(32 << 20, new Uint8Array(8 << 20).fill(1));
const balloon = new VirtioBalloon({ memory: mem, deflateOnOom: true });
const t = new MmioTransport(balloon, { mem, irq: { trigger: () => {} } });

// The driver's bring-up: no balloon features, the inflate queue only.
const w = (off: number, v: number) => t.writeRegister(off, v);
w(MMIO.Status, 1 | 2);
w(MMIO.DriverFeaturesSel, 1);
w(MMIO.DriverFeatures, Number(VIRTIO_F_VERSION_1 >> 32n));
w(MMIO.Status, 1 | 2 | 8);
const inflate = new MockSplitQueue(mem, 64, { base: 0x10000 });
w(MMIO.QueueSel, 0);
w(MMIO.QueueNum, 64);
w(MMIO.QueueDescLow, inflate.descTable);
w(MMIO.QueueDriverLow, inflate.availRing);
w(MMIO.QueueDeviceLow, inflate.usedRing);
w(MMIO.QueueReady, 1);
w(MMIO.Status, 1 | 2 | 8 | 4);

// The host asks for 8 MiB (2048 pages): the driver gets a configuration-change interrupt.
balloon.setTarget(2048);
console.log("config change:", (t.readRegister(MMIO.InterruptStatus) & INT_CONFIG_CHANGE) !== 0); // true

// The driver inflates: an array of 2048 PFNs (4 KiB page numbers) on the inflate queue.
const pfns = new Uint8Array(4 * 2048);
for (let i = 0; i < 2048; i++) new DataView(pfns.buffer).setUint32(4 * i, (32 << 8) + i, true);
mem.write(0x20_0000, pfns);
const blocks = () => fstatSync(mem.regions[0]!.fd!).blocks * 512;
const before = blocks();
inflate.addChain([{ addr: 0x20_0000, len: pfns.length }]);
t.notify(0);
console.log(inflate.takeUsed(), "freed", before - blocks(), "bytes; reads", mem.readU8(32 << 20));
// -> [ { id: 0, len: 0 } ] freed 8388608 bytes; reads 0
console.log(balloon.metrics.inflatedPages); // 2048
mem.close();
