import { describeWith } from "@ts-vmm/test-utils";
import { describe, expect, it } from "vitest";
import { INIT_MARKER, hostHasVirtualizationExtensions, linuxGuest, runGuest } from "../src/index.js";
import { tempDisk } from "./helpers.js";

/*
 * A full boot needs a CPU that runs guest kernel code natively (VMX or SVM).
 * The gate is the CPU itself, not CI: where /proc/cpuinfo lists vmx or svm the
 * test runs (and under CI=true a missing tool fails it, as describeWith does);
 * where it lists neither, as on the nested PVM development machine, it skips
 * with that reason, under CI too.
 */
const NAME = "full Linux boot to the busybox shell (runs only where /proc/cpuinfo has vmx or svm)";

function body(): void {
  it("boots the Debian kernel with the initramfs, loads the virtio modules and reaches /init's shell", async () => {
    const g = await linuxGuest();
    const disk = tempDisk(16);
    try {
      const r = await runGuest({
        vmm: "qemu",
        kernel: g.bzImage,
        initrd: g.initramfs,
        cmdline: "console=ttyS0 rdinit=/init panic=-1",
        memMiB: 256,
        devices: [{ kind: "blk", path: disk.path }, { kind: "rng" }, { kind: "net" }],
        stopOnSerial: `${INIT_MARKER}-SHELL`,
        timeoutMs: 120_000,
        extraArgs: ["-no-reboot"],
      });
      expect(r.stoppedOnSerial, r.serial.slice(-3000)).toBe(true);
      const line = r.lines.find((l) => l.text.startsWith(INIT_MARKER))?.text ?? "";
      expect(line).toContain(`kernel=${g.version}`);
      expect(Number(/virtio=(\d+)/.exec(line)?.[1])).toBe(3);
    } finally {
      disk.remove();
    }
  }, 180_000);
}

if (hostHasVirtualizationExtensions()) {
  describeWith({ kvm: true, tools: ["qemu-system-x86_64", "apt-get", "dpkg-deb", "cpio", "gzip", "xz"] }, NAME, body);
} else {
  const reason = "this CPU has neither vmx nor svm in /proc/cpuinfo, so guest kernel code would only run through KVM's emulator";
  console.warn(`[skipped] ${NAME}: ${reason}`);
  describe.skip(`${NAME} (skipped: ${reason})`, body);
}
