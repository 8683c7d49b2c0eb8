import { describe, expect, it } from "vitest";
import { MockSplitQueue } from "@ts-vmm/virtio-queue/mock";
import { bringUp, driverOk, negotiate, rd, rig, setupQueue, wr } from "../test/driver.js";
import {
  INT_CONFIG_CHANGE,
  INT_USED_BUFFER,
  MMIO,
  MMIO_MAGIC,
  MmioTransport,
  REGISTER_CELL_BYTES,
  serveInterruptRegister,
  STATUS_ACKNOWLEDGE,
  STATUS_DEVICE_NEEDS_RESET,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FEATURES_OK,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VirtioDeviceError,
  VirtioRng,
  type ActivateContext,
  type DeviceState,
  type VirtioDevice,
} from "./index.js";

/** A device with a config space that records calls. */
class ProbeDevice implements VirtioDevice {
  readonly deviceType = 42;
  readonly queueMaxSizes = [16, 8];
  readonly deviceFeatures = 1n << 3n;
  readonly configSize = 8;
  readonly cfg = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
  activations: ActivateContext[] = [];
  notifies: number[] = [];
  resets = 0;
  inflight = false;
  readConfig(o: number, d: Uint8Array): void {
    d.set(this.cfg.subarray(o, o + d.length));
  }
  writeConfig(o: number, d: Uint8Array): void {
    this.cfg.set(d, o);
  }
  activate(ctx: ActivateContext): void {
    this.activations.push(ctx);
  }
  queueNotify(i: number): void {
    this.notifies.push(i);
  }
  reset(): void {
    this.resets++;
  }
  busy(): boolean {
    return this.inflight;
  }
  state(): DeviceState {
    return { deviceType: 42, cfg: [...this.cfg] };
  }
  restoreState(s: DeviceState): void {
    this.cfg.set(s.cfg as number[]);
  }
}

function read(t: MmioTransport, off: number, len: number): Uint8Array {
  const d = new Uint8Array(len);
  t.read(off, d);
  return d;
}

describe("MmioTransport registers", () => {
  it("identifies itself as a version 2 device of the right type", () => {
    const { t } = rig(new ProbeDevice());
    expect(rd(t, MMIO.MagicValue)).toBe(MMIO_MAGIC);
    expect(rd(t, MMIO.Version)).toBe(2);
    expect(rd(t, MMIO.DeviceId)).toBe(42);
    expect(rd(t, MMIO.ShmLenLow)).toBe(0xffff_ffff);
    wr(t, MMIO.QueueSel, 1);
    expect(rd(t, MMIO.QueueNumMax)).toBe(8);
    wr(t, MMIO.QueueSel, 2);
    expect(rd(t, MMIO.QueueNumMax)).toBe(0);
  });

  it("offers device features, VERSION_1, EVENT_IDX, INDIRECT_DESC and RING_PACKED by selector", () => {
    const { t } = rig(new ProbeDevice());
    wr(t, MMIO.DeviceFeaturesSel, 0);
    const lo = rd(t, MMIO.DeviceFeatures);
    wr(t, MMIO.DeviceFeaturesSel, 1);
    const hi = rd(t, MMIO.DeviceFeatures);
    wr(t, MMIO.DeviceFeaturesSel, 7);
    expect(rd(t, MMIO.DeviceFeatures)).toBe(0);
    const f = (BigInt(hi) << 32n) | BigInt(lo);
    expect(f).toBe((1n << 3n) | VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC | VIRTIO_F_RING_PACKED);
  });

  it("32-bit registers: other widths and misaligned offsets read 0 and writes are ignored", () => {
    const { t, violations } = rig(new ProbeDevice());
    expect([...read(t, MMIO.MagicValue, 2)]).toEqual([0, 0]);
    expect([...read(t, MMIO.MagicValue + 1, 4)]).toEqual([0, 0, 0, 0]);
    t.write(MMIO.Status, new Uint8Array([1, 0]));
    expect(t.status).toBe(0);
    expect(violations.length).toBeGreaterThan(0);
    t.read(-4, new Uint8Array(4));
    t.read(0x1000, new Uint8Array(4));
    t.write(0x2000, new Uint8Array(4));
  });

  it("config space: 1/2/4/8-byte access, bytes past the device config read 0 and writes there are dropped", () => {
    const dev = new ProbeDevice();
    const { t } = rig(dev);
    expect([...read(t, MMIO.Config + 2, 2)]).toEqual([3, 4]);
    expect([...read(t, MMIO.Config, 8)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect([...read(t, MMIO.Config + 6, 4)]).toEqual([7, 8, 0, 0]);
    expect([...read(t, MMIO.Config, 3)]).toEqual([0, 0, 0]);
    t.write(MMIO.Config + 1, new Uint8Array([9]));
    expect(dev.cfg[1]).toBe(9);
    t.write(MMIO.Config + 6, new Uint8Array([1, 1, 1, 1]));
    expect([...dev.cfg.subarray(6)]).toEqual([7, 8]);
  });
});

describe("MmioTransport status and feature negotiation", () => {
  it("accepts a subset of the offered features with VERSION_1 and applies ring features to the queues", () => {
    const { t } = rig(new ProbeDevice());
    expect(negotiate(t, VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_F_RING_PACKED)).toBe(true);
    expect(t.driverFeatures).toBe(VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_F_RING_PACKED);
  });

  it("refuses FEATURES_OK without VERSION_1 or with bits that were not offered", () => {
    const { t } = rig(new ProbeDevice());
    expect(negotiate(t, 0n)).toBe(false);
    expect(negotiate(t, VIRTIO_F_VERSION_1 | (1n << 7n))).toBe(false);
    expect(negotiate(t, VIRTIO_F_VERSION_1 | (1n << 40n))).toBe(false);
    expect(negotiate(t, VIRTIO_F_VERSION_1 | (1n << 3n))).toBe(true);
  });

  it("ignores DriverFeatures writes before DRIVER or after FEATURES_OK", () => {
    const { t } = rig(new ProbeDevice());
    wr(t, MMIO.DriverFeaturesSel, 1);
    wr(t, MMIO.DriverFeatures, 1);
    expect(t.driverFeatures).toBe(0n);
    negotiate(t);
    wr(t, MMIO.DriverFeaturesSel, 0);
    wr(t, MMIO.DriverFeatures, 0xffff_ffff);
    expect(t.driverFeatures).toBe(VIRTIO_F_VERSION_1);
  });

  it("refuses bits out of order; clearing a bit without reset sets DEVICE_NEEDS_RESET", () => {
    const { t } = rig(new ProbeDevice());
    wr(t, MMIO.Status, STATUS_DRIVER);
    expect(t.status).toBe(0);
    wr(t, MMIO.Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK);
    expect(t.status).toBe(0);
    wr(t, MMIO.Status, STATUS_ACKNOWLEDGE);
    wr(t, MMIO.Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    wr(t, MMIO.Status, STATUS_ACKNOWLEDGE);
    expect(t.status & STATUS_DEVICE_NEEDS_RESET).toBe(STATUS_DEVICE_NEEDS_RESET);
    wr(t, MMIO.Status, 0);
    expect(t.status).toBe(0);
  });

  it("a status write with the device-owned NEEDS_RESET bit is refused", () => {
    const { t } = rig(new ProbeDevice());
    wr(t, MMIO.Status, STATUS_ACKNOWLEDGE | STATUS_DEVICE_NEEDS_RESET);
    expect(t.status).toBe(0);
  });
});

describe("MmioTransport queues", () => {
  it("refuses queue configuration before FEATURES_OK", () => {
    const r = rig(new ProbeDevice());
    const m = new MockSplitQueue(r.mem, 16, { base: 0x10000 });
    expect(setupQueue(r.t, 0, m)).toBe(0);
  });

  it("a refused value (size 100, misaligned ring, size above max) keeps QueueReady at 0 until reset", () => {
    for (const bad of [
      (t: MmioTransport) => wr(t, MMIO.QueueNum, 100),
      (t: MmioTransport) => wr(t, MMIO.QueueNum, 32),
      (t: MmioTransport) => wr(t, MMIO.QueueDescLow, 0x10008),
      (t: MmioTransport) => wr(t, MMIO.QueueDeviceHigh, 0x10_0000), // address >= 2^52
    ]) {
      const r = rig(new ProbeDevice());
      negotiate(r.t);
      const m = new MockSplitQueue(r.mem, 16, { base: 0x10000 });
      setupQueue(r.t, 0, m);
      wr(r.t, MMIO.QueueReady, 0);
      bad(r.t);
      wr(r.t, MMIO.QueueReady, 1);
      expect(rd(r.t, MMIO.QueueReady)).toBe(0);
      wr(r.t, MMIO.Status, 0);
      negotiate(r.t);
      expect(setupQueue(r.t, 0, m)).toBe(1);
    }
  });

  it("DRIVER_OK with a ready queue outside guest memory sets DEVICE_NEEDS_RESET and does not activate", () => {
    const dev = new ProbeDevice();
    const r = rig(dev, 0x40000);
    negotiate(r.t);
    wr(r.t, MMIO.QueueSel, 0);
    wr(r.t, MMIO.QueueNum, 16);
    wr(r.t, MMIO.QueueDescLow, 0);
    wr(r.t, MMIO.QueueDescHigh, 0x100); // 2^40
    wr(r.t, MMIO.QueueReady, 1);
    driverOk(r.t);
    expect(r.t.status & STATUS_DEVICE_NEEDS_RESET).toBeTruthy();
    expect(dev.activations).toHaveLength(0);
    expect(r.irq.count).toBe(1);
    expect(rd(r.t, MMIO.InterruptStatus) & INT_CONFIG_CHANGE).toBeTruthy();
  });

  it("re-pointing a queue outside memory on a live device sets DEVICE_NEEDS_RESET", () => {
    const dev = new ProbeDevice();
    const r = rig(dev);
    bringUp(r);
    wr(r.t, MMIO.QueueSel, 0);
    wr(r.t, MMIO.QueueReady, 0);
    wr(r.t, MMIO.QueueDescHigh, 0x100);
    wr(r.t, MMIO.QueueReady, 1);
    expect(rd(r.t, MMIO.QueueReady)).toBe(0);
    expect(r.t.status & STATUS_DEVICE_NEEDS_RESET).toBeTruthy();
    r.t.notify(0);
    expect(dev.notifies).toEqual([]);
  });

  it("notify reaches the device only for a ready queue of an active device", () => {
    const dev = new ProbeDevice();
    const r = rig(dev);
    r.t.notify(0);
    bringUp(r);
    wr(r.t, MMIO.QueueNotify, 1);
    r.t.notify(0);
    r.t.notify(5);
    r.t.notify(-1);
    expect(dev.notifies).toEqual([1, 0]);
    expect(dev.activations).toHaveLength(1);
    expect(dev.activations[0]!.features).toBe(VIRTIO_F_VERSION_1);
  });

  it("reset clears queues, features, interrupt status and waits for device I/O before reading 0", () => {
    const dev = new ProbeDevice();
    const r = rig(dev);
    bringUp(r);
    dev.activations[0]!.interrupt.signalUsedQueue(0);
    expect(rd(r.t, MMIO.InterruptStatus)).toBe(INT_USED_BUFFER);
    dev.inflight = true;
    const resets = dev.resets;
    wr(r.t, MMIO.Status, 0);
    expect(dev.resets).toBe(resets + 1);
    expect(rd(r.t, MMIO.Status)).not.toBe(0);
    dev.inflight = false;
    expect(rd(r.t, MMIO.Status)).toBe(0);
    expect(rd(r.t, MMIO.InterruptStatus)).toBe(0);
    wr(r.t, MMIO.QueueSel, 0);
    expect(rd(r.t, MMIO.QueueReady)).toBe(0);
    expect(r.t.driverFeatures).toBe(0n);
    // An interrupt from the old activation is dropped.
    const before = r.irq.count;
    dev.activations[0]!.interrupt.signalUsedQueue(0);
    expect(r.irq.count).toBe(before);
  });

  it("interrupt status is acknowledged bit by bit; a config change bumps the generation", () => {
    const dev = new ProbeDevice();
    const r = rig(dev);
    bringUp(r);
    const i = dev.activations[0]!.interrupt;
    const g = rd(r.t, MMIO.ConfigGeneration);
    i.signalUsedQueue(0);
    i.signalConfigChange();
    expect(rd(r.t, MMIO.ConfigGeneration)).toBe(g + 1);
    expect(rd(r.t, MMIO.InterruptStatus)).toBe(3);
    wr(r.t, MMIO.InterruptAck, INT_USED_BUFFER);
    expect(rd(r.t, MMIO.InterruptStatus)).toBe(INT_CONFIG_CHANGE);
    expect(r.irq.count).toBe(2);
  });

  it("indirect descriptors: refused (NEEDS_RESET) unless INDIRECT_DESC was negotiated", () => {
    for (const negotiated of [false, true]) {
      const r = rig(new VirtioRng());
      const [m] = bringUp(r, VIRTIO_F_VERSION_1 | (negotiated ? VIRTIO_F_INDIRECT_DESC : 0n));
      m!.addChain([{ addr: 0x80000, len: 32, writable: true }], { indirect: true });
      r.t.notify(0);
      if (negotiated) {
        expect(m!.takeUsed()).toEqual([{ id: expect.any(Number), len: 32 }]);
        expect(r.t.status & STATUS_DEVICE_NEEDS_RESET).toBe(0);
      } else {
        expect(m!.takeUsed()).toEqual([]);
        expect(r.t.status & STATUS_DEVICE_NEEDS_RESET).toBeTruthy();
      }
    }
  });
});

describe("MmioTransport InterruptStatus cell (served on other threads)", () => {
  it("another view of interruptState reads what the transport raised and its ACK clears only the acked bits", () => {
    const dev = new ProbeDevice();
    const r = rig(dev, 0x40000);
    negotiate(r.t);
    wr(r.t, MMIO.QueueSel, 0);
    wr(r.t, MMIO.QueueNum, 16);
    wr(r.t, MMIO.QueueDescHigh, 0x100); // outside memory: DRIVER_OK raises a config change
    wr(r.t, MMIO.QueueReady, 1);
    driverOk(r.t);
    const cell = new Int32Array(r.t.interruptState); // what a vCPU worker holds
    const four = new Uint8Array(4);
    expect(serveInterruptRegister(cell, MMIO.InterruptStatus, false, four)).toBe(true);
    expect(four[0]).toBe(INT_CONFIG_CHANGE);
    Atomics.or(cell, 0, INT_USED_BUFFER); // as the transport's #raise would, concurrently
    expect(serveInterruptRegister(cell, MMIO.InterruptAck, true, Uint8Array.of(INT_CONFIG_CHANGE, 0, 0, 0))).toBe(true);
    expect(r.t.interruptStatus).toBe(INT_USED_BUFFER);
    expect(rd(r.t, MMIO.InterruptStatus)).toBe(INT_USED_BUFFER);
    // Everything else (other registers, other widths, a write to InterruptStatus) goes to the transport.
    expect(serveInterruptRegister(cell, MMIO.InterruptStatus, false, new Uint8Array(2))).toBe(false);
    expect(serveInterruptRegister(cell, MMIO.InterruptStatus, true, four)).toBe(false);
    expect(serveInterruptRegister(cell, MMIO.Status, false, four)).toBe(false);
    expect(serveInterruptRegister(cell, MMIO.InterruptAck, false, four)).toBe(false);
    // Reset clears the cell too.
    wr(r.t, MMIO.Status, 0);
    expect(Atomics.load(cell, 0)).toBe(0);
  });

  it("ConfigGeneration, DeviceID and the constant ID registers are served from the cells with the transport's own values", () => {
    const dev = new ProbeDevice();
    const r = rig(dev);
    bringUp(r);
    expect(r.t.interruptState.byteLength).toBe(REGISTER_CELL_BYTES);
    const cell = new Int32Array(r.t.interruptState);
    const served = (offset: number): number | null => {
      const d = new Uint8Array(4);
      return serveInterruptRegister(cell, offset, false, d) ? new DataView(d.buffer).getUint32(0, true) : null;
    };
    for (const reg of [MMIO.MagicValue, MMIO.Version, MMIO.DeviceId, MMIO.VendorId, MMIO.ConfigGeneration]) expect(served(reg), `register 0x${reg.toString(16)}`).toBe(rd(r.t, reg));
    expect(served(MMIO.DeviceId)).toBe(42);
    // A config change bumps the generation in the cell in the same turn, before the interrupt.
    const g = served(MMIO.ConfigGeneration)!;
    let inIrq: number | null = null;
    const trigger = r.irq.trigger.bind(r.irq);
    r.irq.trigger = () => { inIrq = served(MMIO.ConfigGeneration); trigger(); };
    dev.activations[0]!.interrupt.signalConfigChange();
    expect(inIrq).toBe(g + 1);
    expect(served(MMIO.ConfigGeneration)).toBe(g + 1);
    expect(rd(r.t, MMIO.ConfigGeneration)).toBe(g + 1);
    // Its saved state carries the generation, and a restored transport's cells have it.
    const t2 = MmioTransport.fromState(JSON.parse(JSON.stringify(r.t.state())) as ReturnType<typeof r.t.state>, new ProbeDevice(), { mem: r.mem, irq: r.irq });
    const cell2 = new Int32Array(t2.interruptState);
    const d = new Uint8Array(4);
    expect(serveInterruptRegister(cell2, MMIO.ConfigGeneration, false, d)).toBe(true);
    expect(new DataView(d.buffer).getUint32(0, true)).toBe(g + 1);
    expect(serveInterruptRegister(cell2, MMIO.DeviceId, false, d)).toBe(true);
    expect(d[0]).toBe(42);
    // Registers that depend on the transport's state, device config, writes to read-only
    // registers and other widths still go to the transport; so do the generation and the
    // device ID for a 4-byte cell (InterruptStatus only, as older transports had).
    for (const reg of [MMIO.Status, MMIO.DeviceFeatures, MMIO.QueueNumMax, MMIO.QueueReady, MMIO.Config]) expect(served(reg)).toBeNull();
    expect(serveInterruptRegister(cell, MMIO.ConfigGeneration, true, new Uint8Array(4))).toBe(false);
    expect(serveInterruptRegister(cell, MMIO.MagicValue, false, new Uint8Array(2))).toBe(false);
    const old = new Int32Array(new SharedArrayBuffer(4));
    expect(serveInterruptRegister(old, MMIO.ConfigGeneration, false, new Uint8Array(4))).toBe(false);
    expect(serveInterruptRegister(old, MMIO.DeviceId, false, new Uint8Array(4))).toBe(false);
    expect(serveInterruptRegister(old, MMIO.InterruptStatus, false, new Uint8Array(4))).toBe(true);
  });
});

describe("MmioTransport persist", () => {
  it("state/fromState round-trips through JSON mid-flight and the restored device keeps working", () => {
    const r = rig(new VirtioRng());
    const [m] = bringUp(r, VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX);
    m!.addChain([{ addr: 0x80000, len: 16, writable: true }]);
    r.t.notify(0);
    expect(m!.takeUsed()).toHaveLength(1);
    const saved = JSON.parse(JSON.stringify(r.t.state())) as ReturnType<MmioTransport["state"]>;
    const t2 = MmioTransport.fromState(saved, new VirtioRng(), { mem: r.mem, irq: r.irq });
    expect(t2.state()).toEqual(saved);
    expect(t2.activated).toBe(true);
    m!.addChain([{ addr: 0x80000, len: 16, writable: true }]);
    t2.notify(0);
    expect(m!.takeUsed()).toEqual([{ id: expect.any(Number), len: 16 }]);
  });

  it("fromState rejects malformed states and states of another device", () => {
    const r = rig(new VirtioRng());
    bringUp(r);
    const s = r.t.state();
    const bad: unknown[] = [
      { ...s, version: 2 },
      { ...s, status: -1 },
      { ...s, status: 0x1000 },
      { ...s, driverFeatures: "zz" },
      { ...s, driverFeatures: (1n << 50n).toString(16) },
      { ...s, queues: [] },
      { ...s, queues: [{ ...s.queues[0], size: 3 }] },
      { ...s, device: { deviceType: 2 } },
      { ...s, activated: "yes" },
      { ...s, interruptStatus: 8 },
    ];
    for (const b of bad) {
      expect(() => MmioTransport.fromState(b as typeof s, new VirtioRng(), { mem: r.mem, irq: r.irq })).toThrow(VirtioDeviceError);
    }
  });

  it("state() refuses while the device has I/O in flight", () => {
    const dev = new ProbeDevice();
    const r = rig(dev);
    dev.inflight = true;
    expect(() => r.t.state()).toThrow(expect.objectContaining({ code: "Busy" }));
  });
});

describe("MmioTransport with packed rings", () => {
  it("a packed queue negotiated through the registers serves requests", async () => {
    const { MockPackedQueue } = await import("@ts-vmm/virtio-queue/mock");
    const r = rig(new VirtioRng());
    expect(negotiate(r.t, VIRTIO_F_VERSION_1 | VIRTIO_F_RING_PACKED)).toBe(true);
    const m = new MockPackedQueue(r.mem, 16, { base: 0x10000 });
    wr(r.t, MMIO.QueueSel, 0);
    wr(r.t, MMIO.QueueNum, 16);
    wr(r.t, MMIO.QueueDescLow, m.descRing);
    wr(r.t, MMIO.QueueDriverLow, m.driverEvent);
    wr(r.t, MMIO.QueueDeviceLow, m.deviceEvent);
    wr(r.t, MMIO.QueueReady, 1);
    driverOk(r.t);
    expect(r.t.status & STATUS_DRIVER_OK).toBeTruthy();
    m.addChain([{ addr: 0x80000, len: 8, writable: true }]);
    r.t.notify(0);
    expect(m.takeUsed().map((u) => u.len)).toEqual([8]);
    expect(r.t.status & (STATUS_DEVICE_NEEDS_RESET | STATUS_FEATURES_OK)).toBe(STATUS_FEATURES_OK);
  });

  it("pause holds a device without hooks (rng): notifications wait, no interrupt; resume serves them and raises once", () => {
    const r = rig(new VirtioRng());
    const [q] = bringUp(r);
    r.t.pause();
    r.t.pause(); // idempotent
    expect(r.t.paused).toBe(true);
    q!.addChain([{ addr: 0x90000, len: 8, writable: true }]);
    r.t.notify(0);
    r.t.notify(0);
    expect(q!.takeUsed()).toEqual([]);
    expect(r.irq.count).toBe(0);
    r.t.resume();
    expect(q!.takeUsed().map((u) => u.len)).toEqual([8]);
    expect(r.irq.count).toBe(1);
    r.t.resume(); // idempotent
    expect(r.irq.count).toBe(1);
  });

  it("an interrupt due while paused sets InterruptStatus and is raised on resume; a restore with InterruptStatus set raises once (on resume when paused)", () => {
    const r = rig(new VirtioRng());
    const [q] = bringUp(r);
    q!.addChain([{ addr: 0x90000, len: 8, writable: true }]);
    r.t.notify(0);
    expect(r.irq.count).toBe(1);
    r.t.pause();
    const saved = r.t.state();
    expect(saved.interruptStatus).toBe(1); // the driver has not acknowledged it
    const dev2 = new VirtioRng();
    const t2 = MmioTransport.fromState(saved, dev2, { mem: r.mem, irq: r.irq }, { paused: true });
    expect(r.irq.count).toBe(1);
    t2.resume();
    expect(r.irq.count).toBe(2);
    // Not paused: at once.
    MmioTransport.fromState(saved, new VirtioRng(), { mem: r.mem, irq: r.irq });
    expect(r.irq.count).toBe(3);
    // Acknowledged before resume: nothing to raise.
    const t3 = MmioTransport.fromState(saved, new VirtioRng(), { mem: r.mem, irq: r.irq }, { paused: true });
    wr(t3, MMIO.InterruptAck, 1);
    t3.resume();
    expect(r.irq.count).toBe(3);
  });
});
