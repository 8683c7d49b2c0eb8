import { execFileSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { describeWith } from "@ts-vmm/test-utils";
import { expect, it } from "vitest";
import { DISK_FILE, LINUX_GUEST_MODULES, dataDisk, linuxGuest } from "../src/index.js";

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

describeWith({ tools: ["mke2fs", "debugfs"] }, "dataDisk (the ext2 disk /init mounts from virtio-blk)", () => {
  it("holds the file with the text at the root, and remove() deletes it", async () => {
    const d = await dataDisk("hello from the host\n", 8);
    try {
      const out = execFileSync("debugfs", ["-R", `cat /${DISK_FILE}`, d.path], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
      expect(out).toBe("hello from the host\n");
      expect(statSync(d.path).size).toBe(8 << 20);
    } finally {
      d.remove();
    }
    expect(existsSync(d.path)).toBe(false);
  });
  it("refuses a size out of range before running anything", async () => {
    await expect(dataDisk("x", 0)).rejects.toMatchObject({ code: "InvalidArgument" });
  });
});
