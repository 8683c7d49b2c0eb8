// struct kvm_segment, kvm_dtable, kvm_sregs, kvm_sregs2 (arch/x86/include/uapi/asm/kvm.h).
import { setU64, u64, view } from "./bytes.js";

/** A segment register (struct kvm_segment, 24 bytes). */
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

/** A descriptor table register (struct kvm_dtable, 16 bytes). */
export interface Dtable {
  base: bigint;
  limit: number;
}

/** Special registers (struct kvm_sregs). */
export interface Sregs {
  cs: Segment; ds: Segment; es: Segment; fs: Segment; gs: Segment; ss: Segment;
  tr: Segment; ldt: Segment;
  gdt: Dtable; idt: Dtable;
  cr0: bigint; cr2: bigint; cr3: bigint; cr4: bigint; cr8: bigint;
  efer: bigint;
  apicBase: bigint;
  /** interrupt_bitmap: 256 bits of pending external interrupts, as 4 u64. */
  interruptBitmap: [bigint, bigint, bigint, bigint];
}

/** Special registers with PAE PDPTRs (struct kvm_sregs2, KVM_CAP_SREGS2). */
export interface Sregs2 extends Omit<Sregs, "interruptBitmap"> {
  /** KVM_SREGS2_FLAGS_PDPTRS_VALID when pdptrs hold the PAE PDPTEs. */
  flags: bigint;
  pdptrs: [bigint, bigint, bigint, bigint];
}

export const KVM_SEGMENT_SIZE = 24;
export const KVM_DTABLE_SIZE = 16;
export const KVM_SREGS_SIZE = 312;
export const KVM_SREGS2_SIZE = 320;
export const SEGMENT_OFF = { base: 0, limit: 8, selector: 12, type: 14, present: 15, dpl: 16, db: 17, s: 18, l: 19, g: 20, avl: 21, unusable: 22 } as const;
const SEG_NAMES = ["cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"] as const;
/** Offsets in struct kvm_sregs / kvm_sregs2 (identical up to apic_base). */
export const SREGS_OFF = {
  cs: 0, ds: 24, es: 48, fs: 72, gs: 96, ss: 120, tr: 144, ldt: 168,
  gdt: 192, idt: 208, cr0: 224, cr2: 232, cr3: 240, cr4: 248, cr8: 256, efer: 264, apicBase: 272,
  /** kvm_sregs only */
  interruptBitmap: 280,
  /** kvm_sregs2 only */
  flags: 280,
  /** kvm_sregs2 only */
  pdptrs: 288,
} as const;

/** Decodes a struct kvm_segment at `off`. */
export function decodeSegment(dv: DataView, off: number): Segment {
  return {
    base: u64(dv, off),
    limit: dv.getUint32(off + 8, true),
    selector: dv.getUint16(off + 12, true),
    type: dv.getUint8(off + 14),
    present: dv.getUint8(off + 15),
    dpl: dv.getUint8(off + 16),
    db: dv.getUint8(off + 17),
    s: dv.getUint8(off + 18),
    l: dv.getUint8(off + 19),
    g: dv.getUint8(off + 20),
    avl: dv.getUint8(off + 21),
    unusable: dv.getUint8(off + 22),
  };
}

/** Encodes a struct kvm_segment at `off`. */
export function encodeSegment(dv: DataView, off: number, s: Segment): void {
  setU64(dv, off, s.base);
  dv.setUint32(off + 8, s.limit, true);
  dv.setUint16(off + 12, s.selector, true);
  dv.setUint8(off + 14, s.type);
  dv.setUint8(off + 15, s.present);
  dv.setUint8(off + 16, s.dpl);
  dv.setUint8(off + 17, s.db);
  dv.setUint8(off + 18, s.s);
  dv.setUint8(off + 19, s.l);
  dv.setUint8(off + 20, s.g);
  dv.setUint8(off + 21, s.avl);
  dv.setUint8(off + 22, s.unusable);
  dv.setUint8(off + 23, 0);
}

function decodeCommon(dv: DataView): Omit<Sregs, "interruptBitmap"> {
  const seg = (n: (typeof SEG_NAMES)[number]) => decodeSegment(dv, SREGS_OFF[n]);
  const dt = (off: number): Dtable => ({ base: u64(dv, off), limit: dv.getUint16(off + 8, true) });
  return {
    cs: seg("cs"), ds: seg("ds"), es: seg("es"), fs: seg("fs"), gs: seg("gs"), ss: seg("ss"),
    tr: seg("tr"), ldt: seg("ldt"),
    gdt: dt(SREGS_OFF.gdt), idt: dt(SREGS_OFF.idt),
    cr0: u64(dv, SREGS_OFF.cr0), cr2: u64(dv, SREGS_OFF.cr2), cr3: u64(dv, SREGS_OFF.cr3),
    cr4: u64(dv, SREGS_OFF.cr4), cr8: u64(dv, SREGS_OFF.cr8), efer: u64(dv, SREGS_OFF.efer),
    apicBase: u64(dv, SREGS_OFF.apicBase),
  };
}

function encodeCommon(dv: DataView, s: Omit<Sregs, "interruptBitmap">): void {
  for (const n of SEG_NAMES) encodeSegment(dv, SREGS_OFF[n], s[n]);
  for (const [n, off] of [["gdt", SREGS_OFF.gdt], ["idt", SREGS_OFF.idt]] as const) {
    setU64(dv, off, s[n].base);
    dv.setUint16(off + 8, s[n].limit, true);
  }
  setU64(dv, SREGS_OFF.cr0, s.cr0);
  setU64(dv, SREGS_OFF.cr2, s.cr2);
  setU64(dv, SREGS_OFF.cr3, s.cr3);
  setU64(dv, SREGS_OFF.cr4, s.cr4);
  setU64(dv, SREGS_OFF.cr8, s.cr8);
  setU64(dv, SREGS_OFF.efer, s.efer);
  setU64(dv, SREGS_OFF.apicBase, s.apicBase);
}

/** Decodes struct kvm_sregs. */
export function decodeSregs(buf: Uint8Array): Sregs {
  const dv = view(buf);
  const o = SREGS_OFF.interruptBitmap;
  return { ...decodeCommon(dv), interruptBitmap: [u64(dv, o), u64(dv, o + 8), u64(dv, o + 16), u64(dv, o + 24)] };
}

/** Encodes struct kvm_sregs. */
export function encodeSregs(s: Sregs): Uint8Array {
  const buf = new Uint8Array(KVM_SREGS_SIZE);
  const dv = view(buf);
  encodeCommon(dv, s);
  s.interruptBitmap.forEach((w, i) => setU64(dv, SREGS_OFF.interruptBitmap + 8 * i, w));
  return buf;
}

/** Decodes struct kvm_sregs2. */
export function decodeSregs2(buf: Uint8Array): Sregs2 {
  const dv = view(buf);
  const o = SREGS_OFF.pdptrs;
  return { ...decodeCommon(dv), flags: u64(dv, SREGS_OFF.flags), pdptrs: [u64(dv, o), u64(dv, o + 8), u64(dv, o + 16), u64(dv, o + 24)] };
}

/** Encodes struct kvm_sregs2. */
export function encodeSregs2(s: Sregs2): Uint8Array {
  const buf = new Uint8Array(KVM_SREGS2_SIZE);
  const dv = view(buf);
  encodeCommon(dv, s);
  setU64(dv, SREGS_OFF.flags, s.flags);
  s.pdptrs.forEach((w, i) => setU64(dv, SREGS_OFF.pdptrs + 8 * i, w));
  return buf;
}
