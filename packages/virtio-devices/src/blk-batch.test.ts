import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { GuestMemory } from "@ts-vmm/vm-memory";
import { afterAll, describe, expect, it } from "vitest";
import { bringUp, countingUsedStores, rigOn } from "../test/driver.js";
import { STATUS_DEVICE_NEEDS_RESET, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1, VirtioBlock } from "./index.js";

// Issue 13: a turn of the request loop that completes several requests stores the used
// index once (the entries are added with addUsedDeferred, published at the turn's end),
// and the guest sees every completion, with one interrupt, as before.

const dir = mkdtempSync(join(tmpdir(), "vblk-batch-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function image(): string {
  const p = join(dir, `img-${Math.random().toString(36).slice(2)}.raw`);
  const b = new Uint8Array(64 * 512);
  b.forEach((_, i) => (b[i] = (i * 13 + 7) & 0xff));
  writeFileSync(p, b);
  return p;
}

/** Queues `n` 512-byte reads of sectors 0..n-1, each with its own header, data and status. */
function queueReads(mem: GuestMemory, q: ReturnType<typeof bringUp>[number], n: number): number[] {
  const status: number[] = [];
  for (let i = 0; i < n; i++) {
    const hdr = 0x200000 + 0x100 * i;
    const st = 0x201000 + i;
    mem.writeU32(hdr, VIRTIO_BLK_T_IN);
    mem.writeU32(hdr + 4, 0);
    mem.writeU64(hdr + 8, BigInt(i));
    mem.writeU8(st, 0xee);
    q.addChain([{ addr: hdr, len: 16 }, { addr: 0x300000 + 0x1000 * i, len: 512, writable: true }, { addr: st, len: 1, writable: true }]);
    status.push(st);
  }
  return status;
}

describe("virtio-blk used-index batching", () => {
  for (const [name, features] of [["without EVENT_IDX", VIRTIO_F_VERSION_1], ["with EVENT_IDX", VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX]] as const) {
    it(`${name}: eight requests in one turn, one used-index store, one interrupt, all eight seen`, () => {
      const { mem, watch } = countingUsedStores();
      const dev = VirtioBlock.open(image());
      const r = rigOn(dev, mem);
      const [q] = bringUp(r, features);
      watch.addr = q!.usedRing + 2;
      if (features & VIRTIO_F_EVENT_IDX) q!.setUsedEvent(0); // interrupt once entry 0 is published
      const status = queueReads(mem, q!, 8);
      const irqs = r.irq.count;
      r.t.notify(0);
      expect(watch.stores).toBe(1);
      expect(r.irq.count - irqs).toBe(1);
      expect(q!.usedIdx()).toBe(8);
      const used = q!.takeUsed();
      expect(used.map((u) => u.len)).toEqual(Array(8).fill(513));
      expect(status.map((s) => mem.readU8(s))).toEqual(Array(8).fill(VIRTIO_BLK_S_OK));
      expect(dev.stats.ok).toBe(8);
      // The next turn publishes its own entries (nothing left over from this one).
      queueReads(mem, q!, 2);
      r.t.notify(0);
      expect(watch.stores).toBe(2);
      expect(q!.usedIdx()).toBe(10);
    });
  }

  it("entries completed before the queue broke in the same turn are still published", () => {
    const { mem, watch } = countingUsedStores();
    const dev = VirtioBlock.open(image());
    const r = rigOn(dev, mem);
    const [q] = bringUp(r, VIRTIO_F_VERSION_1);
    watch.addr = q!.usedRing + 2;
    queueReads(mem, q!, 3);
    // A fourth avail entry naming a head outside the table: the queue breaks after three.
    mem.writeU16(q!.availRing + 4 + 2 * 3, 0xffff);
    q!.setAvailIdx(4);
    r.t.notify(0);
    expect(r.t.status & STATUS_DEVICE_NEEDS_RESET).toBeTruthy();
    expect(q!.usedIdx()).toBe(3);
    expect(q!.takeUsed().map((u) => u.len)).toEqual([513, 513, 513]);
    expect(watch.stores).toBe(1);
  });
});
