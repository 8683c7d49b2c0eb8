/**
 * The boot state on real KVM: the loader lays out a boot in memfd-backed guest
 * memory, the vCPU gets our regs/sregs (overlaid on KVM's, as a VMM does),
 * and a few instructions at the entry point read the zero page through RSI
 * (or start_info through EBX) over our page tables and GDT and report by
 * port I/O. KVM accepting the state and the values coming out prove the state
 * is usable, not just well-formed. (CPL0 code runs through KVM's instruction
 * emulator on this machine: fine for a handful of instructions.)
 */
import { describeKvm } from "@ts-vmm/test-utils";
import { Kvm, type VcpuExit, type VcpuFd, type VmFd } from "@ts-vmm/kvm-ioctls";
import { GuestMemoryMmap } from "@ts-vmm/vm-memory/mmap";
import { afterEach, expect, it } from "vitest";
import { loadLinux, ramRegions, type LinuxBootOptions, type VcpuBootState } from "../src/index.js";
import { makeBzImage, makeElf, pvhNote } from "./fixtures.js";

const MB = 1 << 20;
const PORT = 0x3f8;

// 64-bit code at the bzImage's startup_64 (load address + 0x200).
const CODE64 = [
  0x8b, 0x86, 0x02, 0x02, 0x00, 0x00, // mov eax, [rsi + 0x202]   ; "HdrS" in the zero page
  0x66, 0xba, PORT & 0xff, PORT >> 8, // mov dx, 0x3f8
  0xef, //                               out dx, eax
  0x8b, 0x86, 0x28, 0x02, 0x00, 0x00, // mov eax, [rsi + 0x228]   ; cmd_line_ptr
  0x8a, 0x00, //                         mov al, [rax]            ; first byte of the command line
  0xee, //                               out dx, al
  0x48, 0x8b, 0x04, 0x25, 0xf0, 0xff, 0xff, 0x01, // mov rax, [0x1fffff0]  ; last page of RAM, via the identity map
  0xef, //                               out dx, eax
  0xf4, //                               hlt
];
// 32-bit code at the PVH entry.
const CODE32 = [
  0x8b, 0x03, //                         mov eax, [ebx]           ; start_info magic
  0x66, 0xba, PORT & 0xff, PORT >> 8, // mov dx, 0x3f8
  0xef, //                               out dx, eax
  0x8b, 0x43, 0x18, //                   mov eax, [ebx + 24]      ; cmdline_paddr
  0x8a, 0x00, //                         mov al, [eax]
  0xee, //                               out dx, al
  0xf4, //                               hlt
];

let cleanup: (() => void)[] = [];
afterEach(() => {
  for (const f of cleanup.reverse()) f();
  cleanup = [];
});

function boot(opts: LinuxBootOptions): { vcpu: VcpuFd; state: VcpuBootState; mem: GuestMemoryMmap } {
  const mem = GuestMemoryMmap.fromRanges(ramRegions(32 * MB));
  cleanup.push(() => mem.close());
  const kvm = new Kvm();
  const vm: VmFd = kvm.createVm();
  cleanup.push(() => (vm.close(), kvm.close()));
  mem.regions.forEach((r, slot) => vm.setUserMemoryRegion({ slot, guestPhysAddr: r.start, memory: { address: r.hostAddress!, size: r.size } }));
  mem.writeU32(32 * MB - 16, 0x5a5a1234);
  const b = loadLinux(mem, opts);
  const vcpu = vm.createVcpu(0);
  cleanup.push(() => vcpu.close());
  vcpu.setSregs({ ...vcpu.getSregs(), ...b.cpu.sregs });
  vcpu.setRegs(b.cpu.regs);
  return { vcpu, state: b.cpu, mem };
}

function outputs(vcpu: VcpuFd, max = 8): { values: number[]; last: VcpuExit["kind"] } {
  const values: number[] = [];
  for (let i = 0; i < max; i++) {
    const exit = vcpu.run();
    if (exit.kind === "IoOut" && exit.port === PORT) {
      const d = new DataView(exit.data.buffer, exit.data.byteOffset, exit.data.byteLength);
      values.push(exit.size === 4 ? d.getUint32(0, true) : exit.size === 2 ? d.getUint16(0, true) : d.getUint8(0));
      continue;
    }
    return { values, last: exit.kind };
  }
  return { values, last: "Unknown" };
}

describeKvm("boot state on KVM", () => {
  it("64-bit protocol: KVM takes our sregs; code at startup_64 reads the zero page via RSI", () => {
    const kernel = makeBzImage({ kernelSize: 0x1000, initSize: 0x100000 });
    kernel.set(CODE64, 5 * 512 + 0x200);
    const { vcpu, state } = boot({ kernel, cmdline: "Zconsole=ttyS0" });
    const s = vcpu.getSregs();
    expect(s.cr0).toBe(state.sregs.cr0);
    expect(s.cr3).toBe(state.sregs.cr3);
    expect(s.efer & 0x500n).toBe(0x500n);
    expect(s.cs).toMatchObject({ selector: 0x10, l: 1 });
    const { values, last } = outputs(vcpu);
    expect(values).toEqual([0x53726448, "Z".charCodeAt(0), 0x5a5a1234]);
    expect(last).toBe("Hlt");
    expect(vcpu.getRegs().rip).toBe(0x100200n + BigInt(CODE64.length));
  });

  it("PVH: code at the PVH entry reads start_info via EBX in 32-bit protected mode", () => {
    const code = Uint8Array.from(CODE32);
    const kernel = makeElf({ segments: [{ paddr: 0x200000n, filesz: BigInt(code.length), memsz: 0x1000n, data: code }], notes: [pvhNote(0x200000)] });
    const { vcpu } = boot({ kernel, cmdline: "Pvh" });
    const { values, last } = outputs(vcpu);
    expect(values).toEqual([0x336ec578, "P".charCodeAt(0)]);
    expect(last).toBe("Hlt");
    const s = vcpu.getSregs();
    expect(s.efer).toBe(0n);
    expect(s.cs).toMatchObject({ db: 1, l: 0, selector: 0x10 });
  });
});
