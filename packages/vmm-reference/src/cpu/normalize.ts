import type { CpuidEntry } from "@ts-vmm/kvm-ioctls";

/** What {@link normalizeCpuid} needs to know about the machine it builds the table for. */
export interface NormalizeOptions {
  /** vCPUs in the VM (1 or more). */
  readonly vcpuCount: number;
  /** This vCPU's id, which is also its APIC id (0 .. vcpuCount - 1). */
  readonly vcpuId: number;
  /** The guest TSC frequency in kHz (KVM_GET_TSC_KHZ), or undefined to leave out leaf 0x40000010. */
  readonly tscKhz?: number;
  /** KVM_CAP_TSC_DEADLINE_TIMER: the in-kernel LAPIC offers TSC-deadline mode; sets CPUID.1:ECX[24]. */
  readonly tscDeadline?: boolean;
  /**
   * The VMM routes 15-bit I/O APIC and MSI destinations (the split irqchip with
   * KVM_CAP_X2APIC_API): sets KVM_FEATURE_MSI_EXT_DEST_ID, which lets Linux address
   * APIC ids above 255 without interrupt remapping. Default false: the bit is cleared.
   */
  readonly msiExtDestId?: boolean;
}

/** The KVM paravirtual leaves (Documentation/virt/kvm/x86/cpuid.rst). */
export const KVM_CPUID_SIGNATURE = 0x4000_0000;
/** KVM feature bits leaf: EAX holds KVM_FEATURE_* (kvmclock, PV EOI, …). */
export const KVM_CPUID_FEATURES = 0x4000_0001;
/** The generic "hypervisor timing" leaf: EAX = TSC kHz, EBX = APIC bus kHz. */
export const CPUID_TIMING_LEAF = 0x4000_0010;

/** KVM_FEATURE_MSI_EXT_DEST_ID (bit 15): only for a VMM that routes 15-bit destination ids (see NormalizeOptions.msiExtDestId). */
const KVM_FEATURE_MSI_EXT_DEST_ID = 1 << 15;
/** KVM_CPUID_FLAG_SIGNIFCANT_INDEX: the entry is one subleaf of a leaf indexed by ECX. */
const SIGNIFICANT_INDEX = 1;
/** "KVMKVMKVM\0\0\0" as EBX, ECX, EDX. */
const KVM_SIG = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d] as const;
/** The APIC bus frequency KVM's LAPIC timer uses (1 GHz, APIC_BUS_CYCLE_NS = 1). */
const APIC_BUS_KHZ = 1_000_000;

/** Most vCPUs a table can describe: 15-bit APIC ids (the extended destination id's reach without interrupt remapping). */
export const MAX_NORMALIZED_VCPUS = 32768;

/** Bits needed to number `n` things (0 for 1). */
function bitsFor(n: number): number {
  let b = 0;
  while (1 << b < n) b++;
  return b;
}

/**
 * Turns KVM_GET_SUPPORTED_CPUID into the table one vCPU of this VM gets:
 *
 * - CPUID.1:ECX[31] (hypervisor) set; CPUID.1:EBX[31:24] = APIC id = `vcpuId`,
 *   EBX[23:16] = `vcpuCount`, EDX[28] (HTT) when there is more than one vCPU;
 *   ECX[24] (TSC-deadline) when `tscDeadline`.
 * - 0x40000000 "KVMKVMKVM" with the highest paravirtual leaf in EAX; 0x40000001
 *   with KVM's reported feature bits (kvmclock, PV EOI, PV unhalt, …) except
 *   MSI_EXT_DEST_ID unless `msiExtDestId`; 0x40000010 with the TSC and APIC bus frequency in kHz
 *   when `tscKhz` is known.
 * - Topology: one thread per core, `vcpuCount` cores in one package: leaf 4
 *   EAX[31:26], leaves 0xB and 0x1F (SMT and core levels, x2APIC id in EDX)
 *   when the basic range reaches them, AMD 0x80000008:ECX (NC, ApicIdSize),
 *   0x80000001:ECX[1] (CmpLegacy) and 0x8000001E (extended APIC id, core id).
 *
 * A pure function: the input is not modified, entries are copied. Leaves it
 * does not mention are passed through; policy (templates, feature switches)
 * is applied on top of the result.
 * @throws RangeError when `vcpuCount` or `vcpuId` is out of range.
 */
export function normalizeCpuid(supported: readonly CpuidEntry[], options: NormalizeOptions): CpuidEntry[] {
  const { vcpuCount, vcpuId } = options;
  if (!Number.isInteger(vcpuCount) || vcpuCount < 1 || vcpuCount > MAX_NORMALIZED_VCPUS) throw new RangeError(`vcpuCount must be 1..${MAX_NORMALIZED_VCPUS}, got ${String(vcpuCount)}`);
  if (!Number.isInteger(vcpuId) || vcpuId < 0 || vcpuId >= vcpuCount) throw new RangeError(`vcpuId must be 0..${vcpuCount - 1}, got ${String(vcpuId)}`);
  const tscKhz = options.tscKhz;
  if (tscKhz !== undefined && (!Number.isInteger(tscKhz) || tscKhz <= 0 || tscKhz > 0xffff_ffff)) throw new RangeError(`tscKhz must be a positive 32-bit integer, got ${String(tscKhz)}`);

  const out: CpuidEntry[] = supported
    .filter((e) => !(e.function >= KVM_CPUID_SIGNATURE && e.function <= 0x4000_00ff && e.function !== KVM_CPUID_FEATURES))
    .filter((e) => e.function !== 0xb && e.function !== 0x1f)
    .map((e) => ({ ...e }));
  const find = (fn: number, index = 0): CpuidEntry | undefined => out.find((e) => e.function === fn && ((e.flags & SIGNIFICANT_INDEX) === 0 || e.index === index));
  const maxBasic = find(0)?.eax ?? 0;
  const maxExt = find(0x8000_0000)?.eax ?? 0;
  const coreBits = bitsFor(vcpuCount);
  const multi = vcpuCount > 1;

  const l1 = find(1);
  if (l1) {
    l1.ecx = (l1.ecx | (1 << 31)) >>> 0;
    if (options.tscDeadline) l1.ecx = (l1.ecx | (1 << 24)) >>> 0;
    // 8-bit fields: the initial APIC id's low byte (x2APIC ids are in 0xB/0x1F) and at most 255 logical processors.
    l1.ebx = ((l1.ebx & 0x0000_ffff) | (Math.min(vcpuCount, 255) << 16) | ((vcpuId & 0xff) << 24)) >>> 0;
    l1.edx = multi ? (l1.edx | (1 << 28)) >>> 0 : (l1.edx & ~(1 << 28)) >>> 0;
  }
  // Deterministic cache parameters (Intel): cores per package - 1 in EAX[31:26], threads sharing = 1 (EAX[25:14] = 0) for L1/L2.
  for (const e of out) {
    if (e.function !== 4 || (e.eax & 0x1f) === 0) continue;
    const level = (e.eax >>> 5) & 7;
    const sharing = level >= 3 ? vcpuCount - 1 : 0;
    e.eax = ((e.eax & 0x3fff) | ((Math.min(sharing, 0xfff) & 0xfff) << 14) | ((Math.min(vcpuCount - 1, 0x3f) & 0x3f) << 26)) >>> 0;
  }
  // Extended topology: level 0 SMT (1 thread per core), level 1 core (vcpuCount cores), then the invalid level.
  const topology = (fn: number): void => {
    if (maxBasic < fn) return;
    const sub = (index: number, eax: number, ebx: number, type: number): CpuidEntry => ({ function: fn, index, flags: SIGNIFICANT_INDEX, eax, ebx, ecx: ((type << 8) | index) >>> 0, edx: vcpuId });
    out.push(sub(0, 0, 1, 1), sub(1, coreBits, vcpuCount & 0xffff, 2), sub(2, 0, 0, 0));
  };
  topology(0xb);
  topology(0x1f);

  // The paravirtual range.
  const features = supported.find((e) => e.function === KVM_CPUID_FEATURES);
  const pvMax = tscKhz !== undefined ? CPUID_TIMING_LEAF : KVM_CPUID_FEATURES;
  out.push({ function: KVM_CPUID_SIGNATURE, index: 0, flags: 0, eax: pvMax, ebx: KVM_SIG[0], ecx: KVM_SIG[1], edx: KVM_SIG[2] });
  const featEntry = out.find((e) => e.function === KVM_CPUID_FEATURES);
  const extDest = (eax: number): number => (options.msiExtDestId ? eax | KVM_FEATURE_MSI_EXT_DEST_ID : eax & ~KVM_FEATURE_MSI_EXT_DEST_ID) >>> 0;
  if (featEntry) featEntry.eax = extDest(featEntry.eax);
  else out.push({ function: KVM_CPUID_FEATURES, index: 0, flags: 0, eax: extDest(features?.eax ?? 0), ebx: 0, ecx: 0, edx: features?.edx ?? 0 });
  if (tscKhz !== undefined) out.push({ function: CPUID_TIMING_LEAF, index: 0, flags: 0, eax: tscKhz >>> 0, ebx: APIC_BUS_KHZ, ecx: 0, edx: 0 });

  // AMD topology.
  const e1 = maxExt >= 0x8000_0001 ? find(0x8000_0001) : undefined;
  if (e1) e1.ecx = multi ? (e1.ecx | 2) >>> 0 : (e1.ecx & ~2) >>> 0;
  const e8 = maxExt >= 0x8000_0008 ? find(0x8000_0008) : undefined;
  if (e8) e8.ecx = ((e8.ecx & ~0xf0ff) | ((coreBits & 0xf) << 12) | Math.min(vcpuCount - 1, 0xff)) >>> 0;
  const e1e = maxExt >= 0x8000_001e ? find(0x8000_001e) : undefined;
  if (e1e) {
    e1e.eax = vcpuId >>> 0;
    e1e.ebx = ((e1e.ebx & 0xffff_0000) | (vcpuId & 0xff)) >>> 0; // compute unit id; EBX[15:8] = 0: one thread per unit
    e1e.ecx = 0; // node 0, one node per package
    e1e.edx = 0;
  }
  return out;
}
