// packages/linux-loader/README.md, ts/js code block 1: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { readFileSync } from "node:fs";
import { GuestMemoryArrayBuffer } from "@ts-vmm/vm-memory";
import { Cmdline, LoaderError, loadLinux, ramRegions } from "@ts-vmm/linux-loader";

const kernelPath = process.argv[2] ?? "/boot/vmlinuz";
// Guest RAM from 0 to the 3 GiB MMIO hole, the rest above 4 GiB.
const mem = GuestMemoryArrayBuffer.fromRanges(ramRegions(256 << 20));

const cmdline = Cmdline.parse("console=ttyS0 panic=-1", 2047).set("root", "/dev/vda");
try {
  const boot = loadLinux(mem, {
    kernel: readFileSync(kernelPath),
    cmdline,
    cpus: 2,
    // Described in the DSDT as LNRO0005 devices; add virtioMmioOnCmdline: true for
    // kernels built with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES and without ACPI.
    virtioMmio: [{ addr: 0xd000_0000, irq: 5 }],
  });
  console.log(boot.protocol, "entry", boot.entry.toString(16), "cmdline", boot.cmdline);
  console.log("e820", boot.e820);
  // A VMM now applies the vCPU state: KVM_GET_SREGS, overlay boot.cpu.sregs, KVM_SET_SREGS,
  // then KVM_SET_REGS with boot.cpu.regs (64-bit fields are bigint).
  console.log("rip", boot.cpu.regs.rip, "cr3", boot.cpu.sregs.cr3);
} catch (e) {
  if (e instanceof LoaderError) console.error(e.code, e.message);
  else throw e;
}
