import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { VirtioBlock, VirtioConsole, VirtioRng, VirtioRtc, type VirtioDevice } from "@ts-vmm/virtio-devices";
import { afterAll, describe, expect, it } from "vitest";
import type { VirtioDeviceSlot } from "../devices/virtio-manager.js";
import { deviceMetrics } from "./devices.js";

const dir = mkdtempSync(join(tmpdir(), "ts-vmm-devmetrics-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const slot = (name: string, kind: VirtioDeviceSlot["kind"], device: VirtioDevice): VirtioDeviceSlot =>
  ({ name, kind, base: 0xd0001000, gsi: 5, device, notifications: 7, interrupts: 3, violations: 1 });

describe("deviceMetrics", () => {
  it("maps each kind's own counters onto requests, bytes, errors, dropped and copies them", () => {
    const img = join(dir, "d.img");
    const fd = openSync(img, "w");
    ftruncateSync(fd, 1 << 20);
    closeSync(fd);
    const blk = VirtioBlock.open(img);
    Object.assign(blk.stats, { ok: 10, ioerr: 2, unsupp: 1, needsReset: 1, readBytes: 4096, writeBytes: 512 });
    const rng = new VirtioRng();
    rng.requestsServed = 4;
    rng.bytesServed = 256;
    const con = new VirtioConsole({ input: new PassThrough(), output: new PassThrough() });
    Object.assign(con.stats, { txBytes: 5, rxBytes: 6, txDropped: 9, txChains: 2, rxChains: 1 });
    const rtc = new VirtioRtc();
    Object.assign(rtc.metrics, { requests: 8, einval: 1, enodev: 2 });
    try {
      const m = deviceMetrics([slot("blk0", "blk", blk), slot("rng0", "rng", rng), slot("console0", "console", con), slot("rtc0", "rtc", rtc)]);
      expect(m["blk0"]).toMatchObject({ kind: "blk", mmioBase: "0xd0001000", gsi: 5, requests: 13, bytes: 4608, errors: 4, dropped: 0, notifications: 7, interrupts: 3, violations: 1 });
      expect(m["blk0"]!.counters).toEqual({ ...blk.stats });
      expect(m["rng0"]).toMatchObject({ requests: 4, bytes: 256, errors: 0 });
      expect(m["console0"]).toMatchObject({ requests: 3, bytes: 11, dropped: 9 });
      expect(m["rtc0"]).toMatchObject({ requests: 8, bytes: 0, errors: 3 });
      // A copy: later changes to the device do not show in an earlier snapshot.
      blk.stats.ok++;
      expect(m["blk0"]!.counters["ok"]).toBe(10);
      expect(JSON.parse(JSON.stringify(m))).toEqual(m);
    } finally {
      blk.close();
      rtc.reset();
    }
  });
});
