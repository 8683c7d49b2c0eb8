import { debianKernel, describeWith } from "@ts-vmm/test-utils";
import { expect, it } from "vitest";
import { EARLY_BOOT_CMDLINE, EARLY_BOOT_MARKER, runGuest } from "../src/index.js";

/**
 * On the development machine every guest CPL0 instruction is emulated (~1 M/s),
 * so this takes minutes: the kernel is entered at its PVH entry (vmlinux, no
 * decompressor: the bzImage's zstd decompressor picks BMI2 code from CPUID and
 * the emulator stops on it), and EARLY_BOOT_CMDLINE steers it away from
 * XSAVE, CMPXCHG16B, VEX and MOVBE. Elsewhere it takes well under a second.
 */
const LIMIT_MS = 900_000;

describeWith({ kvm: true, tools: ["qemu-system-x86_64", "apt-get", "dpkg-deb"] }, "Debian 6.12 kernel early boot under QEMU microvm (slow here: emulated CPL0)", () => {
  it(`reaches "${EARLY_BOOT_MARKER}" on the serial console`, async () => {
    const k = await debianKernel();
    let last = "";
    const r = await runGuest({
      vmm: "qemu",
      kernel: k.vmlinux,
      cmdline: EARLY_BOOT_CMDLINE,
      memMiB: 256,
      stopOnSerial: EARLY_BOOT_MARKER,
      timeoutMs: LIMIT_MS - 30_000,
      onSerial: (t) => (last = (last + t).slice(-2000)),
      extraArgs: ["-no-reboot"],
    });
    const marker = r.lines.find((l) => l.text.includes(EARLY_BOOT_MARKER));
    expect(r.stoppedOnSerial, `stopped without the marker; last output:\n${last}\n--- qemu:\n${r.vmmLog}`).toBe(true);
    expect(r.serial).toContain("Linux version 6.12");
    console.log(`[qemu] ${k.version}: "${EARLY_BOOT_MARKER}" after ${((marker?.tMs ?? r.wallMs) / 1000).toFixed(1)} s (first serial byte ${r.firstSerialByteMs?.toFixed(0)} ms)`);
  }, LIMIT_MS);
});
