import { describe, expect, it } from "vitest";
import { bringUp, rig } from "../test/driver.js";
import { RNG_MAX_BYTES_PER_REQUEST, STATUS_DEVICE_NEEDS_RESET, VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1, VirtioRng } from "./index.js";

describe("virtio-rng", () => {
  it("fills writable buffers with random bytes straight into guest memory", () => {
    const dev = new VirtioRng();
    const r = rig(dev);
    const [q] = bringUp(r);
    q!.addChain([{ addr: 0x80000, len: 64, writable: true }, { addr: 0x90000, len: 64, writable: true }]);
    q!.addChain([{ addr: 0xa0000, len: 64, writable: true }]);
    r.t.notify(0);
    expect(q!.takeUsed().map((u) => u.len)).toEqual([128, 64]);
    const a = new Uint8Array(64);
    const b = new Uint8Array(64);
    r.mem.read(0x80000, a);
    r.mem.read(0xa0000, b);
    expect(a.some((x) => x !== 0)).toBe(true);
    expect(a).not.toEqual(b);
    expect(dev.bytesServed).toBe(192);
    expect(dev.requestsServed).toBe(2);
  });

  it("caps a huge request and reports the length it filled", () => {
    const r = rig(new VirtioRng(), 0x200_0000);
    const [q] = bringUp(r);
    q!.addChain([{ addr: 0x100_0000, len: 0x80_0000, writable: true }]);
    r.t.notify(0);
    expect(q!.takeUsed().map((u) => u.len)).toEqual([RNG_MAX_BYTES_PER_REQUEST]);
  });

  it("a buffer outside guest memory sets NEEDS_RESET and writes nothing", () => {
    const r = rig(new VirtioRng());
    const [q] = bringUp(r);
    q!.addChain([{ addr: 0x80000, len: 64, writable: true }, { addr: 2 ** 40, len: 64, writable: true }]);
    r.t.notify(0);
    expect(q!.takeUsed()).toEqual([]);
    expect(r.t.status & STATUS_DEVICE_NEEDS_RESET).toBeTruthy();
    const a = new Uint8Array(64);
    r.mem.read(0x80000, a);
    expect(a.every((x) => x === 0)).toBe(true);
  });

  it("with EVENT_IDX, interrupts only when the driver's used_event asks", () => {
    const r = rig(new VirtioRng());
    const [q] = bringUp(r, VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX);
    // bringUp's mocks are created without eventIdx; the device side has it: used_event at 0 → one interrupt for the first chain.
    q!.setUsedEvent(0);
    q!.addChain([{ addr: 0x80000, len: 8, writable: true }]);
    r.t.notify(0);
    expect(r.irq.count).toBe(1);
    q!.setUsedEvent(100);
    q!.addChain([{ addr: 0x80000, len: 8, writable: true }]);
    r.t.notify(0);
    expect(r.irq.count).toBe(1);
  });
});
