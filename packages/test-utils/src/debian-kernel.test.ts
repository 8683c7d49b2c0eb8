import { readFileSync, statSync } from "node:fs";
import { expect, it } from "vitest";
import { debianKernel } from "./debian-kernel.js";
import { describeWith } from "./gate.js";

describeWith({ tools: ["apt-get", "dpkg-deb", "zstd"] }, "debianKernel", () => {
  it("unpacks the cloud kernel and decompresses an ELF vmlinux with the PVH note", async () => {
    const k = await debianKernel();
    expect(k.version).toMatch(/^6\.12\.\d+\+deb\d+-cloud-amd64$/);
    const bz = readFileSync(k.bzImage);
    expect(bz.readUInt32LE(0x202)).toBe(0x53726448); // "HdrS"
    const elf = readFileSync(k.vmlinux);
    expect(elf.subarray(0, 4)).toEqual(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
    expect(elf.byteLength).toBeGreaterThan(bz.byteLength);
    expect(statSync(k.modulesDir).isDirectory()).toBe(true);
    expect(readFileSync(k.config, "utf8")).toContain("CONFIG_PVH=y");
  }, 300_000);

  it("returns the cached copy on the second call", async () => {
    const t = Date.now();
    const a = await debianKernel();
    const b = await debianKernel({ version: a.version });
    expect(b).toEqual(a);
    expect(Date.now() - t).toBeLessThan(2000);
  });
});
