// Small, pure helpers over a CPUID table (the entries of struct kvm_cpuid2).
import type { CpuidEntry } from "@ts-vmm/kvm-ioctls";

/** A CPUID output register. */
export type CpuidRegister = "eax" | "ebx" | "ecx" | "edx";

/** Where a feature bit lives: CPUID.(function).(index):register[bit]. */
export interface CpuidBit {
  /** The leaf (EAX input). */
  readonly function: number;
  /** The subleaf (ECX input); 0 for leaves without subleaves. */
  readonly index: number;
  /** The output register. */
  readonly register: CpuidRegister;
  /** Bit number, 0 to 31. */
  readonly bit: number;
}

/** The CPU vendor named by CPUID leaf 0, as far as the policy cares. */
export type CpuVendor = "intel" | "amd" | "other";

/** The entry for `fn`/`index`, if the table has it. */
export function findEntry(entries: readonly CpuidEntry[], fn: number, index = 0): CpuidEntry | undefined {
  return entries.find((e) => e.function === fn && e.index === index)
    // A leaf without the significant-index flag answers every subleaf.
    ?? entries.find((e) => e.function === fn && (e.flags & 1) === 0);
}

/** Whether the bit is set (false when the table lacks the leaf). */
export function hasBit(entries: readonly CpuidEntry[], b: CpuidBit): boolean {
  const e = findEntry(entries, b.function, b.index);
  return e !== undefined && ((e[b.register] >>> b.bit) & 1) === 1;
}

/**
 * A copy of `entries` with the bit set or cleared. Setting a bit in a leaf the
 * table lacks adds nothing and returns false in `changed`: the caller decides
 * whether that is a refusal.
 */
export function withBit(entries: readonly CpuidEntry[], b: CpuidBit, on: boolean): { entries: CpuidEntry[]; changed: boolean } {
  let changed = false;
  const out = entries.map((e) => {
    if (e.function !== b.function || e.index !== b.index) return { ...e };
    const mask = (1 << b.bit) >>> 0;
    const v = on ? (e[b.register] | mask) >>> 0 : (e[b.register] & ~mask) >>> 0;
    if (v !== e[b.register]) changed = true;
    return { ...e, [b.register]: v };
  });
  return { entries: out, changed };
}

/** A copy of `entries` where register `reg` of `fn`/`index` is ANDed with `mask`. */
export function maskRegister(entries: readonly CpuidEntry[], fn: number, index: number, reg: CpuidRegister, mask: number): CpuidEntry[] {
  return entries.map((e) => (e.function === fn && e.index === index ? { ...e, [reg]: (e[reg] & mask) >>> 0 } : { ...e }));
}

/** The vendor from leaf 0's EBX/EDX/ECX signature ("GenuineIntel", "AuthenticAMD"; Hygon counts as AMD). */
export function vendorOf(entries: readonly CpuidEntry[]): CpuVendor {
  const e = findEntry(entries, 0);
  if (!e) return "other";
  const s = [e.ebx, e.edx, e.ecx].map((r) => String.fromCharCode(r & 0xff, (r >>> 8) & 0xff, (r >>> 16) & 0xff, r >>> 24)).join("");
  if (s === "GenuineIntel") return "intel";
  if (s === "AuthenticAMD" || s === "HygonGenuine") return "amd";
  return "other";
}

/** "CPUID.7.0:ECX[7]", the notation of the SDM and the APM. */
export function bitName(b: CpuidBit): string {
  const fn = b.function >= 0x10 ? `0x${b.function.toString(16)}` : String(b.function);
  return `CPUID.${fn}.${b.index}:${b.register.toUpperCase()}[${b.bit}]`;
}
