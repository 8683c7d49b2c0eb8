// Hand-built long-mode micro-guests for the KVM tests (machine code as bytes).
// Layout of guest memory (identity mapped with 2 MiB pages):
//   0x1000 code, 0x8000 stack top, 0x9000 PML4, 0xa000 PDPT, 0xb000 PD (0-2 MiB),
//   0xc000 PD for 3-4 GiB mapping 0xd0000000 (MMIO, no memory behind it).
// CPL3 guests run natively on this machine; CPL0 code goes through KVM's emulator.
import { MmapRegion } from "@ts-vmm/vmm-sys-util";
import { Kvm, type Regs, type Segment, type Sregs, type VcpuFd, type VmFd } from "../src/index.js";

export const CODE = 0x1000;
export const MMIO_BASE = 0xd0000000;
export const MEM_SIZE = 0x200000;

export interface TestVm {
  readonly kvm: Kvm;
  readonly vm: VmFd;
  readonly vcpu: VcpuFd;
  readonly mem: MmapRegion;
  readonly bytes: Uint8Array;
  close(): void;
}

/** Writes page tables for the layout above into guest memory. */
export function writePageTables(bytes: Uint8Array): void {
  const dv = new DataView(bytes.buffer, bytes.byteOffset);
  const q = (addr: number, v: bigint) => dv.setBigUint64(addr, v, true);
  q(0x9000, 0xa000n | 7n); // PML4[0] -> PDPT, present, rw, user
  q(0xa000, 0xb000n | 7n); // PDPT[0] -> PD
  q(0xb000, 0x87n); // PD[0]: 2 MiB page at 0, present, rw, user, PS
  q(0xa000 + 3 * 8, 0xc000n | 7n); // PDPT[3] -> PD for 3-4 GiB
  q(0xc000 + 0x80 * 8, BigInt(MMIO_BASE) | 0x87n | 0x18n); // 0xd0000000, PCD|PWT
}

function seg(selector: number, type: number, dpl: number, code: boolean): Segment {
  return { base: 0n, limit: 0xffffffff, selector, type, present: 1, dpl, db: code ? 0 : 1, s: 1, l: code ? 1 : 0, g: 1, avl: 0, unusable: 0 };
}

/** Puts the vCPU in 64-bit mode at `cpl` (0 or 3), rip = CODE, IOPL 3. */
export function enterLongMode(vcpu: VcpuFd, cpl: 0 | 3, rip = CODE): void {
  const s: Sregs = vcpu.getSregs();
  s.cr3 = 0x9000n;
  s.cr4 = 1n << 5n; // PAE
  s.cr0 = 0x80050033n; // PG WP AM NE ET MP PE
  s.efer = 0x500n; // LME LMA
  const cs = cpl === 3 ? seg(0x2b, 11, 3, true) : seg(0x08, 11, 0, true);
  const ds = cpl === 3 ? seg(0x33, 3, 3, false) : seg(0x10, 3, 0, false);
  s.cs = cs;
  s.ds = s.es = s.fs = s.gs = s.ss = ds;
  vcpu.setSregs(s);
  const r: Regs = vcpu.getRegs();
  for (const k of Object.keys(r) as (keyof Regs)[]) r[k] = 0n;
  r.rip = BigInt(rip);
  r.rflags = 2n | (3n << 12n); // IOPL 3 so IN/OUT work at CPL3
  r.rsp = 0x8000n;
  vcpu.setRegs(r);
}

/** A VM with 2 MiB of memory at 0, page tables, one vCPU in long mode at `cpl`, and `code` at CODE. */
export interface MakeVmOptions {
  cpl?: 0 | 3;
  irqchip?: boolean;
  /** Runs before the vCPU is created. */
  setup?: (vm: VmFd, mem: MmapRegion) => void;
  /** Replaces the default single slot 0 covering all memory. */
  slots?: (vm: VmFd, mem: MmapRegion) => void;
}

export function makeVm(code: readonly number[], opts: MakeVmOptions = {}): TestVm {
  const kvm = new Kvm();
  const vm = kvm.createVm();
  const mem = MmapRegion.anonymous(MEM_SIZE);
  const bytes = new Uint8Array(mem.buffer);
  writePageTables(bytes);
  bytes.set(code, CODE);
  if (opts.slots) opts.slots(vm, mem);
  else vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem });
  if (opts.irqchip) vm.createIrqChip();
  opts.setup?.(vm, mem);
  const vcpu = vm.createVcpu(0);
  enterLongMode(vcpu, opts.cpl ?? 3);
  return {
    kvm, vm, vcpu, mem, bytes,
    close() {
      vcpu.close();
      vm.close();
      kvm.close();
      mem.close();
    },
  };
}

// A few encodings used by the guests.
export const asm = {
  movDx: (port: number) => [0x66, 0xba, port & 0xff, port >> 8],
  movAl: (v: number) => [0xb0, v],
  movEax: (v: number) => [0xb8, ...le32(v)],
  movEcx: (v: number) => [0xb9, ...le32(v)],
  movRdi: (v: number) => [0x48, 0xbf, ...le64(v)],
  outDxAl: [0xee],
  outDxEax: [0xef],
  inAlDx: [0xec],
  inEaxDx: [0xed],
  /** mov dword [rdi], eax */
  movMemRdiEax: [0x89, 0x07],
  /** mov eax, dword [rdi] */
  movEaxMemRdi: [0x8b, 0x07],
  /** mov byte [rdi], al */
  movMemRdiAl: [0x88, 0x07],
  decEcx: [0xff, 0xc9],
  /** jnz back to `target` given the current length `at` of the code. */
  jnz: (at: number, target: number) => [0x75, (target - (at + 2)) & 0xff],
  jmpSelf: [0xeb, 0xfe],
  hlt: [0xf4],
  ud2: [0x0f, 0x0b],
};

function le32(v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
}

function le64(v: number): number[] {
  return [...le32(v % 2 ** 32), ...le32(Math.floor(v / 2 ** 32))];
}
