// packages/kvm-ioctls/README.md, ts/js code block 6: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { readFileSync } from "node:fs";
import { Kvm } from "@ts-vmm/kvm-ioctls";
import { GuestMemoryMmap } from "@ts-vmm/vm-memory/mmap";
import { loadLinux, ramRegions } from "@ts-vmm/linux-loader";
import { DebugExit, DEBUG_EXIT_PORT, PioBus, Serial16550, serialState } from "@ts-vmm/virtio-devices/legacy";

// Compose a VMM from the parts: KVM (kvm-ioctls), guest RAM (vm-memory), the boot protocol
// (linux-loader: PVH for an ELF, the bzImage protocol for a Linux kernel) and two port-I/O
// devices (a 16550A UART on COM1 and QEMU's debug-exit port), then run one vCPU to the end.
const kernelPath = process.argv[2] ?? "guest.elf";
const kvm = new Kvm();
const vm = kvm.createVm();
vm.setTssAddress(0xfffb_d000);
vm.createIrqchip();                                  // the in-kernel LAPIC, IOAPIC and PIC

// 64 MiB of memfd-backed RAM, laid out as a PC (below the 3 GiB MMIO hole), each region a slot.
const mem = GuestMemoryMmap.fromRanges(ramRegions(64 << 20));
mem.regions.forEach((r, slot) => {
  vm.setUserMemoryRegion({ slot, guestPhysAddr: r.start, memory: { address: r.hostAddress!, size: r.size, buffer: r.bytes.buffer } });
});

// Load the kernel: page tables, boot parameters, e820 and the vCPU's initial state.
const boot = loadLinux(mem, { kernel: readFileSync(kernelPath), cmdline: "console=ttyS0 mode=hello", cpus: 1 });

// The devices, on a port I/O bus.
let serialOut = "";
let exitValue: number | undefined;
const bus = new PioBus();
const serial = new Serial16550(serialState(), {
  out: (byte) => { serialOut += String.fromCharCode(byte); process.stdout.write(String.fromCharCode(byte)); },
  irq: (level) => vm.setIrqLine(4, level),              // COM1 is ISA IRQ 4
});
bus.insert(0x3f8, 8, serial);
bus.insert(DEBUG_EXIT_PORT, 4, new DebugExit((v) => { exitValue = v; }));

// One vCPU: the host's supported CPUID (long mode needs it), then the loader's registers.
const vcpu = vm.createVcpu(0);
vcpu.setCpuid2(kvm.getSupportedCpuid());
vcpu.setSregs({ ...vcpu.getSregs(), ...boot.cpu.sregs });
vcpu.setRegs(boot.cpu.regs);

for (let exits = 0; exitValue === undefined; exits++) {
  if (exits > 1_000_000) throw new Error("the guest did not finish");
  const exit = vcpu.run();
  if (exit.kind === "IoOut" || exit.kind === "IoIn") {
    for (let i = 0; i < exit.count; i++) {
      const data = exit.data.subarray(i * exit.size, (i + 1) * exit.size);
      if (exit.kind === "IoOut") bus.write(exit.port, data);
      else bus.read(exit.port, data);
    }
  } else if (exit.kind !== "Intr") {
    throw new Error(`unexpected vCPU exit ${exit.kind}`);
  }
}
vcpu.close(); vm.close(); kvm.close(); mem.close();

// The micro-guest says hello, then writes its status (0: success) to the debug-exit port.
if (!serialOut.includes("hello from the ts-vmm micro-guest") || exitValue !== 0) {
  console.error(`\nthe guest did not say hello (debug-exit ${exitValue})`);
  process.exit(1);
}
console.log(`guest exited with status ${exitValue}`);
