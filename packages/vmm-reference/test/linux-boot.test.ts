import { debianKernel, describeWith } from "@ts-vmm/test-utils";
import {
  EARLY_BOOT_CMDLINE,
  EARLY_BOOT_MARKER,
  INIT_MARKER,
  hostHasVirtualizationExtensions,
  linuxGuest,
  runGuest,
} from "@ts-vmm/test-guests";
import { describe, expect, it } from "vitest";
import { oursLauncher } from "./ours-launcher.js";

/*
 * The Debian 6.12 cloud kernel on the reference VMM. On the development and
 * CI machines every guest CPL0 instruction goes through KVM's emulator, so
 * the kernel is entered at its PVH entry (vmlinux: the bzImage decompressor
 * uses BMI2 code the emulator stops on) and gets as far as QEMU does: the
 * FXSAVE line, minutes in, then an instruction the emulator cannot run.
 */
const EARLY_LIMIT_MS = 900_000;

describeWith({ kvm: true, tools: ["apt-get", "dpkg-deb"] }, "Debian 6.12 kernel early boot on the reference VMM (slow here: emulated CPL0)", () => {
  it(`reaches "${EARLY_BOOT_MARKER}" on COM1, as QEMU does`, async () => {
    const k = await debianKernel();
    const r = await runGuest({
      vmm: oursLauncher,
      kernel: k.vmlinux,
      cmdline: EARLY_BOOT_CMDLINE,
      memMiB: 256,
      stopOnSerial: EARLY_BOOT_MARKER,
      timeoutMs: EARLY_LIMIT_MS - 30_000,
    });
    expect(r.stoppedOnSerial, `stopped without the marker; last output:\n${r.serial.slice(-2000)}\n--- vmm:\n${r.vmmLog}`).toBe(true);
    expect(r.serial).toContain("Linux version 6.12");
    // The e820 map the kernel prints is the one linux-loader wrote: RAM below the EBDA, then from 1 MiB up.
    expect(r.serial).toMatch(/BIOS-e820: \[mem 0x0000000000100000-0x000000000fffffff\] usable/);
    const marker = r.lines.find((l) => l.text.includes(EARLY_BOOT_MARKER));
    console.log(`[ours] ${k.version}: "${EARLY_BOOT_MARKER}" after ${((marker?.tMs ?? r.wallMs) / 1000).toFixed(1)} s`);
  }, EARLY_LIMIT_MS);
});

const FULL = "full Linux boot to the busybox shell on the reference VMM (runs only where /proc/cpuinfo has vmx or svm)";

function fullBoot(): void {
  it("boots the Debian bzImage with the initramfs and reaches /init's shell", async () => {
    const g = await linuxGuest();
    const r = await runGuest({
      vmm: oursLauncher,
      kernel: g.bzImage,
      initrd: g.initramfs,
      cmdline: "console=ttyS0 rdinit=/init panic=-1",
      memMiB: 256,
      stopOnSerial: `${INIT_MARKER}-SHELL`,
      timeoutMs: 120_000,
    });
    expect(r.stoppedOnSerial, r.serial.slice(-3000)).toBe(true);
    const line = r.lines.find((l) => l.text.startsWith(INIT_MARKER))?.text ?? "";
    expect(line).toContain(`kernel=${g.version}`);
    // No virtio devices in the reference VMM yet.
    expect(Number(/virtio=(\d+)/.exec(line)?.[1])).toBe(0);
  }, 180_000);
}

if (hostHasVirtualizationExtensions()) {
  describeWith({ kvm: true, tools: ["apt-get", "dpkg-deb", "cpio", "gzip", "xz"] }, FULL, fullBoot);
} else {
  const reason = "this CPU has neither vmx nor svm in /proc/cpuinfo, so guest kernel code would only run through KVM's emulator";
  console.warn(`[skipped] ${FULL}: ${reason}`);
  describe.skip(`${FULL} (skipped: ${reason})`, fullBoot);
}
