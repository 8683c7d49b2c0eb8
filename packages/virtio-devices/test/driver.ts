// Test helpers: a guest driver that programs an MmioTransport through its
// registers the way Linux's virtio_mmio does, over the virtio-queue mock rings.
import { GuestMemoryArrayBuffer, type GuestMemory } from "@ts-vmm/vm-memory";
import { MockSplitQueue } from "@ts-vmm/virtio-queue/mock";
import {
  MMIO,
  MmioTransport,
  STATUS_ACKNOWLEDGE,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FEATURES_OK,
  VIRTIO_F_VERSION_1,
  type IrqLine,
  type VirtioDevice,
} from "../src/index.js";

/** An IrqLine that counts. */
export class CountingIrq implements IrqLine {
  count = 0;
  trigger(): void {
    this.count++;
  }
}

/** Guest memory of exactly `size` bytes at 0. */
export function makeMemory(size = 0x100_0000): GuestMemoryArrayBuffer {
  return GuestMemoryArrayBuffer.fromRanges([{ start: 0, size }], { shared: false });
}

/**
 * Guest memory (makeMemory's) that counts release stores of a u16 at `watch.addr`, e.g. a used
 * index: set `watch.addr` once the queue is set up, then read `watch.stores`.
 */
export function countingUsedStores(): { mem: GuestMemoryArrayBuffer; watch: { addr: number; stores: number } } {
  const watch = { addr: -1, stores: 0 };
  const base = makeMemory();
  const mem = new Proxy(base, {
    get(target, key) {
      const v = Reflect.get(target, key, target) as unknown;
      if (typeof v !== "function") return v;
      if (key === "storeU16Release") {
        return (addr: number, value: number) => {
          if (addr === watch.addr) watch.stores++;
          return target.storeU16Release(addr, value);
        };
      }
      return (v as (...a: unknown[]) => unknown).bind(target);
    },
  });
  return { mem, watch };
}

export interface Rig<M extends GuestMemory = GuestMemoryArrayBuffer> {
  readonly mem: M;
  readonly irq: CountingIrq;
  readonly t: MmioTransport;
  readonly violations: string[];
}

export function rig(dev: VirtioDevice, memSize = 0x100_0000): Rig {
  const mem = makeMemory(memSize);
  const irq = new CountingIrq();
  const violations: string[] = [];
  const t = new MmioTransport(dev, { mem, irq, onViolation: (r) => violations.push(r) });
  return { mem, irq, t, violations };
}

/** A rig over memory the test made (e.g. memfd-backed GuestMemoryMmap for a device that discards pages). */
export function rigOn<M extends GuestMemory>(dev: VirtioDevice, mem: M): Rig<M> {
  const irq = new CountingIrq();
  const violations: string[] = [];
  const t = new MmioTransport(dev, { mem, irq, onViolation: (r) => violations.push(r) });
  return { mem, irq, t, violations };
}

export function rd(t: MmioTransport, off: number): number {
  return t.readRegister(off);
}
export function wr(t: MmioTransport, off: number, v: number): void {
  t.writeRegister(off, v);
}

/** Status ACK, DRIVER, features, FEATURES_OK. Returns whether FEATURES_OK stuck. */
export function negotiate(t: MmioTransport, features: bigint = VIRTIO_F_VERSION_1): boolean {
  wr(t, MMIO.Status, 0);
  wr(t, MMIO.Status, STATUS_ACKNOWLEDGE);
  wr(t, MMIO.Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
  wr(t, MMIO.DriverFeaturesSel, 0);
  wr(t, MMIO.DriverFeatures, Number(features & 0xffff_ffffn));
  wr(t, MMIO.DriverFeaturesSel, 1);
  wr(t, MMIO.DriverFeatures, Number(features >> 32n));
  wr(t, MMIO.Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
  return (rd(t, MMIO.Status) & STATUS_FEATURES_OK) !== 0;
}

/** Programs queue `index` with the mock's ring addresses; returns QueueReady as read back. */
export function setupQueue(t: MmioTransport, index: number, mock: MockSplitQueue): number {
  wr(t, MMIO.QueueSel, index);
  wr(t, MMIO.QueueNum, mock.size);
  wr(t, MMIO.QueueDescLow, mock.descTable);
  wr(t, MMIO.QueueDescHigh, 0);
  wr(t, MMIO.QueueDriverLow, mock.availRing);
  wr(t, MMIO.QueueDriverHigh, 0);
  wr(t, MMIO.QueueDeviceLow, mock.usedRing);
  wr(t, MMIO.QueueDeviceHigh, 0);
  wr(t, MMIO.QueueReady, 1);
  return rd(t, MMIO.QueueReady);
}

export function driverOk(t: MmioTransport): void {
  wr(t, MMIO.Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
}

/** Full bring-up with one mock queue per device queue; mocks laid out from 0x10000, 64 KiB apart. */
export function bringUp(r: Rig<GuestMemory>, features: bigint = VIRTIO_F_VERSION_1, sizes?: readonly number[]): MockSplitQueue[] {
  if (!negotiate(r.t, features)) throw new Error("FEATURES_OK refused");
  const mocks: MockSplitQueue[] = [];
  const n = r.t.device.queueMaxSizes.length;
  for (let i = 0; i < n; i++) {
    const size = sizes?.[i] ?? Math.min(64, r.t.device.queueMaxSizes[i]!);
    const base = 0x10000 + i * 0x20000;
    const m = new MockSplitQueue(r.mem, size, { base, scratch: [base + 0x10000, base + 0x20000] });
    if (setupQueue(r.t, i, m) !== 1) throw new Error(`queue ${i} not ready`);
    mocks.push(m);
  }
  driverOk(r.t);
  return mocks;
}
