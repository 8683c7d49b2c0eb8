// Whether this host's KVM can give a restored guest the CPU it was saved
// with: the same vendor, and every feature bit of the saved CPUID in the
// feature leaves within KVM_GET_SUPPORTED_CPUID. A guest that saw AVX-512 or
// CET must not wake up on a host without them (it would fault, or lose state
// the host cannot hold). Bits the VMM or the guest's own state set rather
// than the host (OSXSAVE, OSPKE, TSC-deadline, the hypervisor bit, and the
// topology bits HTT and CmpLegacy that normalizeCpuid sets for several vCPUs)
// are not compared.
import type { CpuidEntry } from "@ts-vmm/kvm-ioctls";

interface FeatureWord {
  readonly fn: number;
  readonly index: number;
  readonly reg: "eax" | "ebx" | "ecx" | "edx";
  readonly name: string;
  /** Bits not compared. */
  readonly ignore: number;
}

const WORDS: readonly FeatureWord[] = [
  { fn: 1, index: 0, reg: "ecx", name: "CPUID.1:ECX", ignore: (1 << 24) | (1 << 27) | (1 << 31) },
  { fn: 1, index: 0, reg: "edx", name: "CPUID.1:EDX", ignore: 1 << 28 },
  { fn: 7, index: 0, reg: "ebx", name: "CPUID.7.0:EBX", ignore: 0 },
  { fn: 7, index: 0, reg: "ecx", name: "CPUID.7.0:ECX", ignore: 1 << 4 },
  { fn: 7, index: 0, reg: "edx", name: "CPUID.7.0:EDX", ignore: 0 },
  { fn: 7, index: 1, reg: "eax", name: "CPUID.7.1:EAX", ignore: 0 },
  { fn: 0xd, index: 1, reg: "eax", name: "CPUID.0xD.1:EAX", ignore: 0 },
  { fn: 0x8000_0001, index: 0, reg: "ecx", name: "CPUID.0x80000001:ECX", ignore: 1 << 1 },
  { fn: 0x8000_0001, index: 0, reg: "edx", name: "CPUID.0x80000001:EDX", ignore: 0 },
];

const find = (t: readonly CpuidEntry[], fn: number, index: number): CpuidEntry | undefined =>
  t.find((e) => e.function === fn && e.index === index) ?? t.find((e) => e.function === fn && index === 0);

/** The 12-character vendor string of a CPUID table (leaf 0), or "" without leaf 0. */
export function cpuidVendor(t: readonly CpuidEntry[]): string {
  const l = find(t, 0, 0);
  if (l === undefined) return "";
  const b = Buffer.alloc(12);
  b.writeUInt32LE(l.ebx >>> 0, 0);
  b.writeUInt32LE(l.edx >>> 0, 4);
  b.writeUInt32LE(l.ecx >>> 0, 8);
  return b.toString("latin1");
}

/**
 * Why a guest saved with CPUID `saved` cannot run on a host whose KVM
 * supports `supported`, as one sentence; undefined if it can. `readBack`, if
 * given, is KVM_GET_CPUID2 after KVM_SET_CPUID2 of `supported` on a new vCPU:
 * a bit there counts as supported too (a paravirtual KVM such as PVM lists
 * fewer bits in KVM_GET_SUPPORTED_CPUID than it gives a vCPU).
 */
export function cpuMismatch(saved: readonly CpuidEntry[], supported: readonly CpuidEntry[], readBack: readonly CpuidEntry[] = []): string | undefined {
  const sv = cpuidVendor(saved), hv = cpuidVendor(supported);
  if (sv !== hv) return `the snapshot was taken on a ${JSON.stringify(sv)} CPU and this host is ${JSON.stringify(hv)}`;
  const missing: string[] = [];
  for (const w of WORDS) {
    const s = find(saved, w.fn, w.index)?.[w.reg] ?? 0;
    const h = (find(supported, w.fn, w.index)?.[w.reg] ?? 0) | (find(readBack, w.fn, w.index)?.[w.reg] ?? 0);
    const extra = (s & ~h & ~w.ignore) >>> 0;
    for (let bit = 0; bit < 32; bit++) if (extra & (1 << bit)) missing.push(`${w.name} bit ${bit}`);
  }
  return missing.length === 0 ? undefined : `the guest's CPU has features this host's KVM cannot give: ${missing.join(", ")}`;
}
