// struct kvm_cpuid2 / kvm_cpuid_entry2, kvm_msrs / kvm_msr_entry, kvm_msr_list,
// kvm_reg_list (arch/x86/include/uapi/asm/kvm.h, include/uapi/linux/kvm.h).
import { setU64, u64, view } from "./bytes.js";

/** One CPUID leaf (struct kvm_cpuid_entry2, 40 bytes). */
export interface CpuidEntry {
  function: number;
  index: number;
  /** KVM_CPUID_FLAG_* */
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}
export const KVM_CPUID2_HEADER = 8;
export const KVM_CPUID_ENTRY2_SIZE = 40;
export const CPUID_ENTRY_OFF = { function: 0, index: 4, flags: 8, eax: 12, ebx: 16, ecx: 20, edx: 24 } as const;

/** A zeroed struct kvm_cpuid2 with room for `nent` entries and nent set. */
export function cpuid2Buffer(nent: number): Uint8Array {
  const buf = new Uint8Array(KVM_CPUID2_HEADER + nent * KVM_CPUID_ENTRY2_SIZE);
  view(buf).setUint32(0, nent, true);
  return buf;
}

export function decodeCpuid2(buf: Uint8Array): CpuidEntry[] {
  const dv = view(buf);
  const n = Math.min(dv.getUint32(0, true), Math.floor((buf.byteLength - KVM_CPUID2_HEADER) / KVM_CPUID_ENTRY2_SIZE));
  const out: CpuidEntry[] = [];
  for (let i = 0; i < n; i++) {
    const o = KVM_CPUID2_HEADER + i * KVM_CPUID_ENTRY2_SIZE;
    out.push({
      function: dv.getUint32(o, true), index: dv.getUint32(o + 4, true), flags: dv.getUint32(o + 8, true),
      eax: dv.getUint32(o + 12, true), ebx: dv.getUint32(o + 16, true), ecx: dv.getUint32(o + 20, true),
      edx: dv.getUint32(o + 24, true),
    });
  }
  return out;
}

export function encodeCpuid2(entries: readonly CpuidEntry[]): Uint8Array {
  const buf = cpuid2Buffer(entries.length);
  const dv = view(buf);
  entries.forEach((e, i) => {
    const o = KVM_CPUID2_HEADER + i * KVM_CPUID_ENTRY2_SIZE;
    dv.setUint32(o, e.function, true); dv.setUint32(o + 4, e.index, true); dv.setUint32(o + 8, e.flags, true);
    dv.setUint32(o + 12, e.eax, true); dv.setUint32(o + 16, e.ebx, true); dv.setUint32(o + 20, e.ecx, true);
    dv.setUint32(o + 24, e.edx, true);
  });
  return buf;
}

/** One MSR (struct kvm_msr_entry, 16 bytes). */
export interface MsrEntry {
  index: number;
  data: bigint;
}
export const KVM_MSRS_HEADER = 8;
export const KVM_MSR_ENTRY_SIZE = 16;

export function encodeMsrs(entries: readonly MsrEntry[]): Uint8Array {
  const buf = new Uint8Array(KVM_MSRS_HEADER + entries.length * KVM_MSR_ENTRY_SIZE);
  const dv = view(buf);
  dv.setUint32(0, entries.length, true);
  entries.forEach((e, i) => {
    dv.setUint32(8 + 16 * i, e.index, true);
    setU64(dv, 16 + 16 * i, e.data);
  });
  return buf;
}

/** The first `count` entries of struct kvm_msrs. */
export function decodeMsrs(buf: Uint8Array, count: number): MsrEntry[] {
  const dv = view(buf);
  const out: MsrEntry[] = [];
  for (let i = 0; i < count; i++) out.push({ index: dv.getUint32(8 + 16 * i, true), data: u64(dv, 16 + 16 * i) });
  return out;
}

export const KVM_MSR_LIST_HEADER = 4;

export function msrListBuffer(n: number): Uint8Array {
  const buf = new Uint8Array(KVM_MSR_LIST_HEADER + 4 * n);
  view(buf).setUint32(0, n, true);
  return buf;
}

export function decodeMsrList(buf: Uint8Array): number[] {
  const dv = view(buf);
  const n = Math.min(dv.getUint32(0, true), (buf.byteLength - 4) / 4);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(dv.getUint32(4 + 4 * i, true));
  return out;
}

export const KVM_REG_LIST_HEADER = 8;

export function regListBuffer(n: number): Uint8Array {
  const buf = new Uint8Array(KVM_REG_LIST_HEADER + 8 * n);
  view(buf).setBigUint64(0, BigInt(n), true);
  return buf;
}

export function decodeRegList(buf: Uint8Array): bigint[] {
  const dv = view(buf);
  const n = Math.min(Number(u64(dv, 0)), (buf.byteLength - 8) / 8);
  const out: bigint[] = [];
  for (let i = 0; i < n; i++) out.push(u64(dv, 8 + 8 * i));
  return out;
}
