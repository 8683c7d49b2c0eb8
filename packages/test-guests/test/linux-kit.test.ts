import { execFileSync } from "node:child_process";
import { describeWith } from "@ts-vmm/test-utils";
import { expect, it } from "vitest";
import { LINUX_GUEST_MODULES, linuxGuest } from "../src/index.js";

describeWith({ tools: ["apt-get", "dpkg-deb", "cpio", "gzip", "xz", "busybox"] }, "Linux guest kit (Debian 6.12 cloud kernel + busybox initramfs)", () => {
  it("builds a cached initramfs with busybox, /init and the virtio modules the kernel lacks built in", async () => {
    const g = await linuxGuest();
    expect(g.version).toMatch(/^6\.12\.\d+\+deb\d+-cloud-amd64$/);
    const list = execFileSync("sh", ["-c", `gzip -dc "$1" | cpio -t --quiet`, "sh", g.initramfs], { encoding: "utf8" }).split("\n");
    expect(list).toEqual(expect.arrayContaining(["init", "bin/busybox", "etc/modules-load"]));
    // virtio_mmio and virtio_blk are modules (=m) in Debian's cloud config: they must be in the image.
    for (const m of ["virtio_mmio", "virtio_blk", "virtio_net"]) expect(list).toContain(`lib/modules/${m}.ko`);
    for (const f of list.filter((l) => l.startsWith("lib/modules/"))) {
      expect(LINUX_GUEST_MODULES).toContain(f.slice("lib/modules/".length, -".ko".length));
    }
    console.log(`[linux-kit] ${JSON.stringify(g, null, 2)}`);
    const again = await linuxGuest();
    expect(again.initramfs).toBe(g.initramfs);
  }, 300_000);
});
