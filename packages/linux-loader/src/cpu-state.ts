import { LoaderError } from "./error.js";
import type { GuestWrite } from "./guest-writes.js";
import { layout } from "./layout.js";

/**
 * A segment register in the shape of `struct kvm_segment` (linux/kvm.h,
 * x86). Convention for all CPU state here: fields that are `__u64` in the
 * KVM structs are `bigint`; narrower fields are `number`.
 */
export interface Segment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}

/** A descriptor table register in the shape of `struct kvm_dtable`. */
export interface DTable {
  base: bigint;
  limit: number;
}

/** General registers in the shape of `struct kvm_regs`. */
export interface Regs {
  rax: bigint; rbx: bigint; rcx: bigint; rdx: bigint;
  rsi: bigint; rdi: bigint; rsp: bigint; rbp: bigint;
  r8: bigint; r9: bigint; r10: bigint; r11: bigint;
  r12: bigint; r13: bigint; r14: bigint; r15: bigint;
  rip: bigint; rflags: bigint;
}

/**
 * The `struct kvm_sregs` fields a boot sets. `apic_base` and
 * `interrupt_bitmap` are absent on purpose: a VMM reads the vCPU's current
 * sregs (KVM_GET_SREGS), overlays these fields and writes them back.
 */
export interface Sregs {
  cs: Segment; ds: Segment; es: Segment; fs: Segment; gs: Segment; ss: Segment;
  tr: Segment; ldt: Segment;
  gdt: DTable; idt: DTable;
  cr0: bigint; cr2: bigint; cr3: bigint; cr4: bigint; cr8: bigint;
  efer: bigint;
}

/** The state a boot vCPU starts in, plus the guest memory it needs (GDT, IDT, page tables). */
export interface VcpuBootState {
  readonly mode: "long64" | "pvh32";
  readonly regs: Regs;
  readonly sregs: Sregs;
  /** GDT, IDT and (for long mode) page tables to write before the vCPU runs. */
  readonly writes: GuestWrite[];
}

// Control register and EFER bits (Intel SDM vol. 3, 2.5 and 2.2.1).
/** CR0.PE, CR0.ET, CR0.PG; CR4.PAE; EFER.LME, EFER.LMA. */
export const CR0_PE = 1n, CR0_ET = 0x10n, CR0_PG = 0x8000_0000n, CR4_PAE = 0x20n, EFER_LME = 0x100n, EFER_LMA = 0x400n;
/**
 * CR0 in long mode: the kernel's own CR0_STATE (PE | MP | ET | NE | WP | AM | PG,
 * arch/x86/include/uapi/asm/processor-flags.h), which its startup_32 loads
 * before entering startup_64; so our 64-bit entry sees what QEMU's does.
 */
export const CR0_STATE = 0x8005_0033n;
/** Selectors: the Linux boot protocol's __BOOT_CS (0x10) and __BOOT_DS (0x18); the TSS at 0x20. */
export const BOOT_CS = 0x10, BOOT_DS = 0x18, BOOT_TSS = 0x20;

function seg(selector: number, type: number, fields: Partial<Segment>): Segment {
  return { base: 0n, limit: 0xffff_ffff, selector, type, present: 1, dpl: 0, db: 0, s: 1, l: 0, g: 1, avl: 0, unusable: 0, ...fields };
}

/** Encodes a segment as an 8-byte GDT descriptor (Intel SDM vol. 3, 3.4.5). */
export function gdtEntry(s: Segment): bigint {
  const limit = s.g ? s.limit >>> 12 : s.limit;
  const base = s.base;
  return (
    BigInt(limit & 0xffff) |
    ((base & 0xff_ffffn) << 16n) |
    (BigInt(s.type & 0xf) << 40n) |
    (BigInt(s.s & 1) << 44n) |
    (BigInt(s.dpl & 3) << 45n) |
    (BigInt(s.present & 1) << 47n) |
    (BigInt((limit >>> 16) & 0xf) << 48n) |
    (BigInt(s.avl & 1) << 52n) |
    (BigInt(s.l & 1) << 53n) |
    (BigInt(s.db & 1) << 54n) |
    (BigInt(s.g & 1) << 55n) |
    (((base >> 24n) & 0xffn) << 56n)
  );
}

function gdtBytes(code: Segment, data: Segment, tss: Segment): Uint8Array {
  const b = new Uint8Array(40);
  const v = new DataView(b.buffer);
  v.setBigUint64(BOOT_CS, gdtEntry(code), true);
  v.setBigUint64(BOOT_DS, gdtEntry(data), true);
  v.setBigUint64(BOOT_TSS, gdtEntry(tss), true);
  return b;
}

function zeroRegs(): Regs {
  return { rax: 0n, rbx: 0n, rcx: 0n, rdx: 0n, rsi: 0n, rdi: 0n, rsp: 0n, rbp: 0n, r8: 0n, r9: 0n, r10: 0n, r11: 0n, r12: 0n, r13: 0n, r14: 0n, r15: 0n, rip: 0n, rflags: 2n };
}

function checkEntry(v: number, max: number, what: string): void {
  if (!Number.isSafeInteger(v) || v < 0 || v >= max) throw new LoaderError("InvalidArgument", `${what} 0x${v.toString(16)} is out of range`);
}

const TSS = seg(BOOT_TSS, 0xb, { s: 0, g: 0, limit: 0x67 });
const LDT: Segment = { base: 0n, limit: 0xffff, selector: 0, type: 2, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0 };

/** Number of GiB the boot page tables identity-map (2 MiB pages). */
export const IDENTITY_MAP_GIB = 4;

/**
 * Initial state for the Linux 64-bit boot protocol (Documentation/arch/x86/boot.rst,
 * "64-bit Boot Protocol"): long mode with paging, the first 4 GiB identity
 * mapped with 2 MiB pages (PML4 at 0x9000, PDPT at 0xa000, PDs at 0xb000..0xefff),
 * a GDT at 0x500 with a flat 64-bit `__BOOT_CS` (0x10) and flat `__BOOT_DS`
 * (0x18), CR0 = CR0_STATE, CR4 = PAE, EFER = LME | LMA, interrupts off, RSI = zero page, RIP = the 64-bit entry
 * (`load address + 0x200` for a bzImage, `e_entry` for a vmlinux).
 *
 * @throws LoaderError `InvalidArgument` when `entry` or `zeroPage` is not
 * inside the identity-mapped 4 GiB.
 */
export function longModeState(entry: number, zeroPage: number = layout.zeroPage): VcpuBootState {
  checkEntry(entry, IDENTITY_MAP_GIB * 2 ** 30, "64-bit entry point");
  checkEntry(zeroPage, IDENTITY_MAP_GIB * 2 ** 30, "zero page address");
  const code = seg(BOOT_CS, 0xb, { l: 1 });
  const data = seg(BOOT_DS, 0x3, { db: 1 });
  const pml4 = new Uint8Array(4096);
  const pdpt = new Uint8Array(4096);
  const pd = new Uint8Array(4096 * IDENTITY_MAP_GIB);
  const v4 = new DataView(pml4.buffer), vp = new DataView(pdpt.buffer), vd = new DataView(pd.buffer);
  v4.setBigUint64(0, BigInt(layout.pdpt) | 0x3n, true); // present | writable
  for (let g = 0; g < IDENTITY_MAP_GIB; g++) {
    vp.setBigUint64(g * 8, BigInt(layout.pd + g * 4096) | 0x3n, true);
    for (let i = 0; i < 512; i++) {
      vd.setBigUint64((g * 512 + i) * 8, (BigInt(g * 512 + i) << 21n) | 0x83n, true); // present | writable | 2 MiB page
    }
  }
  const regs = zeroRegs();
  regs.rip = BigInt(entry);
  regs.rsi = BigInt(zeroPage);
  regs.rsp = BigInt(layout.stackPointer);
  regs.rbp = BigInt(layout.stackPointer);
  return {
    mode: "long64",
    regs,
    sregs: {
      cs: code, ds: data, es: data, fs: data, gs: data, ss: data, tr: TSS, ldt: LDT,
      gdt: { base: BigInt(layout.gdt), limit: 39 },
      idt: { base: BigInt(layout.idt), limit: 7 },
      cr0: CR0_STATE,
      cr2: 0n,
      cr3: BigInt(layout.pml4),
      cr4: CR4_PAE,
      cr8: 0n,
      efer: EFER_LME | EFER_LMA,
    },
    writes: [
      { addr: layout.gdt, data: gdtBytes(code, data, TSS), what: "boot GDT" },
      { addr: layout.idt, data: new Uint8Array(8), what: "boot IDT" },
      { addr: layout.pml4, data: pml4, what: "boot PML4" },
      { addr: layout.pdpt, data: pdpt, what: "boot PDPT" },
      { addr: layout.pd, data: pd, what: "boot page directories" },
    ],
  };
}

/**
 * Initial state for a PVH entry (xen/include/public/arch-x86/hvm/start_info.h,
 * "x86/HVM direct boot ABI"): 32-bit protected mode without paging, flat
 * 4 GiB code (0x10) and data (0x18) segments, TR a 32-bit busy TSS with limit
 * 0x67, CR0 = PE (ET reads as 1), CR4 = 0, EFER = 0, EFLAGS = 0x2, EBX =
 * address of `hvm_start_info`, EIP = the PVH entry.
 *
 * @throws LoaderError `InvalidArgument` when `entry` or `startInfo` is not below 4 GiB.
 */
export function pvhState(entry: number, startInfo: number = layout.pvhStartInfo): VcpuBootState {
  checkEntry(entry, 2 ** 32, "PVH entry point");
  checkEntry(startInfo, 2 ** 32, "start_info address");
  const code = seg(BOOT_CS, 0xb, { db: 1 });
  const data = seg(BOOT_DS, 0x3, { db: 1 });
  const regs = zeroRegs();
  regs.rip = BigInt(entry);
  regs.rbx = BigInt(startInfo);
  return {
    mode: "pvh32",
    regs,
    sregs: {
      cs: code, ds: data, es: data, fs: data, gs: data, ss: data, tr: TSS, ldt: LDT,
      gdt: { base: BigInt(layout.gdt), limit: 39 },
      idt: { base: BigInt(layout.idt), limit: 7 },
      cr0: CR0_PE | CR0_ET,
      cr2: 0n, cr3: 0n, cr4: 0n, cr8: 0n,
      efer: 0n,
    },
    writes: [
      { addr: layout.gdt, data: gdtBytes(code, data, TSS), what: "boot GDT" },
      { addr: layout.idt, data: new Uint8Array(8), what: "boot IDT" },
    ],
  };
}
