// Property: whatever the guest writes to the registers, the rings and the
// requests, the transport and devices never throw, keep their registers in
// range, and the disk image keeps its size.
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { bringUp, rig } from "../test/driver.js";
import { MMIO, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VirtioBlock, VirtioConsole, VirtioRng, type VirtioDevice } from "./index.js";

const dir = mkdtempSync(join(tmpdir(), "vprop-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Op =
  | { readonly k: "w"; readonly off: number; readonly v: number; readonly width: number }
  | { readonly k: "r"; readonly off: number; readonly width: number }
  | { readonly k: "notify"; readonly q: number }
  | { readonly k: "mem"; readonly at: number; readonly bytes: Uint8Array }
  | { readonly k: "kick"; readonly idx: number };

const REGS = Object.values(MMIO);
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ k: fc.constant("w" as const), off: fc.oneof(fc.constantFrom(...REGS), fc.integer({ min: 0, max: 0x1ff })), v: fc.oneof(fc.integer({ min: 0, max: 15 }), fc.nat({ max: 0xffff_ffff })), width: fc.constantFrom(4, 4, 4, 1, 2, 8) }),
  fc.record({ k: fc.constant("r" as const), off: fc.oneof(fc.constantFrom(...REGS), fc.integer({ min: 0, max: 0x1ff })), width: fc.constantFrom(4, 1, 2, 8) }),
  fc.record({ k: fc.constant("notify" as const), q: fc.integer({ min: -1, max: 3 }) }),
  // Rings of the bring-up live at 0x10000..0x50000; requests point anywhere below 16 MiB or far outside.
  fc.record({ k: fc.constant("mem" as const), at: fc.integer({ min: 0x10000, max: 0x4fff0 }), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
  // Queue 0's avail idx (split layout of the bring-up: ring at 0x10400 for 64 entries), then a notify.
  fc.record({ k: fc.constant("kick" as const), idx: fc.integer({ min: 0, max: 0xffff }) }),
);

/** How many runs reached the data path's error handling (so the property is not vacuous). */
const reached = { needsReset: 0 };

function runOps(dev: VirtioDevice, features: bigint | undefined, ops: readonly Op[]): void {
  const r = rig(dev);
  if (features !== undefined) bringUp(r, features);
  for (const o of ops) {
    if (o.k === "w") {
      const d = new Uint8Array(8);
      new DataView(d.buffer).setUint32(0, o.v >>> 0, true);
      r.t.write(o.off, d.subarray(0, o.width));
    } else if (o.k === "r") {
      r.t.read(o.off, new Uint8Array(o.width));
    } else if (o.k === "notify") {
      r.t.notify(o.q);
    } else if (o.k === "kick") {
      r.mem.writeU16(0x10402, o.idx);
      r.t.notify(0);
    } else {
      r.mem.write(o.at, o.bytes);
    }
    expect(r.t.status & ~0xcf).toBe(0);
    expect(r.t.interruptStatus & ~3).toBe(0);
  }
  if (r.t.status & 0x40) reached.needsReset++;
  // Whatever happened, a reset brings the device back.
  r.t.writeRegister(MMIO.Status, 0);
  expect(r.t.readRegister(MMIO.Status)).toBe(0);
}

const featureSets = fc.constantFrom<bigint | undefined>(
  undefined,
  VIRTIO_F_VERSION_1,
  VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1 | VIRTIO_F_RING_PACKED,
);

describe("hostile register and ring writes (property)", () => {
  it("virtio-blk never throws and keeps the image size", () => {
    const path = join(dir, "p.img");
    writeFileSync(path, new Uint8Array(64 * 512));
    const blk = VirtioBlock.open(path);
    fc.assert(
      fc.property(featureSets, fc.array(op, { maxLength: 120 }), (f, ops) => {
        runOps(blk, f, ops);
        expect(statSync(path).size).toBe(64 * 512);
      }),
      { numRuns: 150 },
    );
    blk.close();
    expect(reached.needsReset).toBeGreaterThan(0);
  });

  it("virtio-rng and virtio-console never throw", () => {
    fc.assert(fc.property(featureSets, fc.array(op, { maxLength: 120 }), (f, ops) => runOps(new VirtioRng(), f, ops)), { numRuns: 100 });
    fc.assert(fc.property(featureSets, fc.array(op, { maxLength: 120 }), (f, ops) => runOps(new VirtioConsole({}), f, ops)), { numRuns: 100 });
  });
});
