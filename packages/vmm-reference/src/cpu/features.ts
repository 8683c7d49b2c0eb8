// The CPU feature model: named features and where KVM and the guest see them.
// Bit positions: Intel SDM vol. 2A (CPUID), AMD APM vol. 3 appendix E; XSAVE
// components: SDM vol. 1 ch. 13; Linux's /proc/cpuinfo names from
// arch/x86/include/asm/cpufeatures.h.
import type { CpuidBit, CpuidRegister } from "./cpuid-table.js";

/**
 * What kind of feature a name stands for:
 * - `cpuid`: a guest-visible CPUID bit that the policy sets or clears;
 * - `acceleration`: host-side acceleration (AVIC, APICv) that KVM uses for the
 *   VM; it is no guest CPUID bit and is controlled by module parameters;
 * - `vcpu-state`: registers that become part of the vCPU's state (GUEST_SSP).
 */
export type FeatureKind = "cpuid" | "acceleration" | "vcpu-state";

/** One named feature of the model. */
export interface CpuFeature {
  /** Name used by `--cpu-features` and the report (lower case, as /proc/cpuinfo where it has one). */
  readonly name: string;
  /** See {@link FeatureKind}. */
  readonly kind: FeatureKind;
  /** The CPUID bit that enumerates it (for `acceleration`: the host's bit, if any). */
  readonly bit?: CpuidBit;
  /** Its name in /proc/cpuinfo, when Linux prints one and it differs from `name`. */
  readonly cpuinfo?: readonly string[];
  /** XCR0 state components (CPUID.0xD.0:EAX bits) it needs; copied from KVM's table when it is switched on. */
  readonly xcr0?: number;
  /** IA32_XSS state components (CPUID.0xD.1:ECX bits) it needs. */
  readonly xss?: number;
  /** Features that must be exposed with it. */
  readonly requires?: readonly string[];
  /** One line for the report. */
  readonly description: string;
}

const b = (fn: number, index: number, register: CpuidRegister, bit: number): CpuidBit => ({ function: fn, index, register, bit });
const f = (name: string, bit: CpuidBit, description: string, extra: Partial<CpuFeature> = {}): CpuFeature => ({ name, kind: "cpuid", bit, description, ...extra });

/** XSS bit of CET user state (CET_U, IA32_U_CET and IA32_PL3_SSP). */
export const XSS_CET_U = 1 << 11;
/** XSS bit of CET supervisor state (CET_S, IA32_PL0..2_SSP). */
export const XSS_CET_S = 1 << 12;

/** Every feature the model knows, in report order. */
export const CPU_FEATURES: readonly CpuFeature[] = [
  // CET (Linux 6.18 KVM)
  f("shstk", b(7, 0, "ecx", 7), "CET shadow stacks", { cpuinfo: ["shstk", "user_shstk"], xss: XSS_CET_U | XSS_CET_S, requires: ["xsaves"] }),
  f("ibt", b(7, 0, "edx", 20), "CET indirect branch tracking (Intel only)", { xss: XSS_CET_U | XSS_CET_S, requires: ["xsaves"] }),
  f("cet_u", b(0xd, 1, "ecx", 11), "XSS component 11: CET user state (exposed with shstk or ibt)"),
  f("cet_s", b(0xd, 1, "ecx", 12), "XSS component 12: CET supervisor state (exposed with shstk or ibt)"),
  { name: "guest_ssp", kind: "vcpu-state", description: "ONE_REG KVM_REG_GUEST_SSP: the guest's SSP is vCPU state (with shstk, Linux 6.18)" },
  // XSAVE
  f("xsave", b(1, 0, "ecx", 26), "XSAVE/XRSTOR and XCR0"),
  f("xsaveopt", b(0xd, 1, "eax", 0), "XSAVEOPT", { requires: ["xsave"] }),
  f("xsavec", b(0xd, 1, "eax", 1), "XSAVEC", { requires: ["xsave"] }),
  f("xgetbv1", b(0xd, 1, "eax", 2), "XGETBV with ECX=1", { requires: ["xsave"] }),
  f("xsaves", b(0xd, 1, "eax", 3), "XSAVES/XRSTORS and IA32_XSS (needed for CET state)", { requires: ["xsave"] }),
  // APIC and timers
  f("x2apic", b(1, 0, "ecx", 21), "x2APIC mode of the local APIC"),
  f("tsc-deadline", b(1, 0, "ecx", 24), "LAPIC timer TSC-deadline mode", { cpuinfo: ["tsc_deadline_timer"] }),
  { name: "avic", kind: "acceleration", bit: b(0x8000000a, 0, "edx", 13), description: "AMD AVIC: interrupt virtualization in hardware (kvm_amd avic=1)" },
  { name: "x2avic", kind: "acceleration", bit: b(0x8000000a, 0, "edx", 18), description: "AMD x2AVIC: AVIC for guests in x2APIC mode" },
  { name: "apicv", kind: "acceleration", description: "Intel APICv: APIC virtualization and posted interrupts (kvm_intel enable_apicv=1)" },
  { name: "ipiv", kind: "acceleration", description: "Intel IPI virtualization (kvm_intel enable_ipiv=1)" },
  f("hypervisor", b(1, 0, "ecx", 31), "running under a hypervisor"),
  // leaf 1 EDX
  f("fpu", b(1, 0, "edx", 0), "x87 FPU"),
  f("vme", b(1, 0, "edx", 1), "virtual-8086 mode extensions"),
  f("de", b(1, 0, "edx", 2), "debugging extensions"),
  f("pse", b(1, 0, "edx", 3), "4 MiB pages"),
  f("tsc", b(1, 0, "edx", 4), "time stamp counter"),
  f("msr", b(1, 0, "edx", 5), "RDMSR/WRMSR"),
  f("pae", b(1, 0, "edx", 6), "physical address extension"),
  f("mce", b(1, 0, "edx", 7), "machine check exception"),
  f("cx8", b(1, 0, "edx", 8), "CMPXCHG8B"),
  f("apic", b(1, 0, "edx", 9), "on-chip local APIC"),
  f("sep", b(1, 0, "edx", 11), "SYSENTER/SYSEXIT"),
  f("mtrr", b(1, 0, "edx", 12), "memory type range registers"),
  f("pge", b(1, 0, "edx", 13), "global pages"),
  f("mca", b(1, 0, "edx", 14), "machine check architecture"),
  f("cmov", b(1, 0, "edx", 15), "CMOVcc"),
  f("pat", b(1, 0, "edx", 16), "page attribute table"),
  f("pse36", b(1, 0, "edx", 17), "36-bit page size extension"),
  f("clflush", b(1, 0, "edx", 19), "CLFLUSH"),
  f("mmx", b(1, 0, "edx", 23), "MMX"),
  f("fxsr", b(1, 0, "edx", 24), "FXSAVE/FXRSTOR"),
  f("sse", b(1, 0, "edx", 25), "SSE"),
  f("sse2", b(1, 0, "edx", 26), "SSE2"),
  f("ss", b(1, 0, "edx", 27), "self snoop"),
  f("ht", b(1, 0, "edx", 28), "multi-threading (max logical processor count valid)"),
  // leaf 1 ECX
  f("sse3", b(1, 0, "ecx", 0), "SSE3", { cpuinfo: ["pni"] }),
  f("pclmulqdq", b(1, 0, "ecx", 1), "PCLMULQDQ"),
  f("vmx", b(1, 0, "ecx", 5), "Intel VMX (nested virtualization)"),
  f("ssse3", b(1, 0, "ecx", 9), "SSSE3"),
  f("fma", b(1, 0, "ecx", 12), "FMA3", { requires: ["avx"] }),
  f("cx16", b(1, 0, "ecx", 13), "CMPXCHG16B"),
  f("pcid", b(1, 0, "ecx", 17), "process-context identifiers"),
  f("sse4_1", b(1, 0, "ecx", 19), "SSE4.1"),
  f("sse4_2", b(1, 0, "ecx", 20), "SSE4.2"),
  f("movbe", b(1, 0, "ecx", 22), "MOVBE"),
  f("popcnt", b(1, 0, "ecx", 23), "POPCNT"),
  f("aes", b(1, 0, "ecx", 25), "AES-NI"),
  f("avx", b(1, 0, "ecx", 28), "AVX", { xcr0: 1 << 2, requires: ["xsave"] }),
  f("f16c", b(1, 0, "ecx", 29), "F16C", { requires: ["avx"] }),
  f("rdrand", b(1, 0, "ecx", 30), "RDRAND"),
  // leaf 7.0
  f("fsgsbase", b(7, 0, "ebx", 0), "RDFSBASE and friends"),
  f("bmi1", b(7, 0, "ebx", 3), "BMI1"),
  f("avx2", b(7, 0, "ebx", 5), "AVX2", { requires: ["avx"] }),
  f("smep", b(7, 0, "ebx", 7), "supervisor-mode execution prevention"),
  f("bmi2", b(7, 0, "ebx", 8), "BMI2"),
  f("erms", b(7, 0, "ebx", 9), "enhanced REP MOVSB/STOSB"),
  f("invpcid", b(7, 0, "ebx", 10), "INVPCID"),
  f("avx512f", b(7, 0, "ebx", 16), "AVX-512 foundation", { xcr0: 0xe0, requires: ["avx2"] }),
  f("rdseed", b(7, 0, "ebx", 18), "RDSEED"),
  f("adx", b(7, 0, "ebx", 19), "ADX"),
  f("smap", b(7, 0, "ebx", 20), "supervisor-mode access prevention"),
  f("clflushopt", b(7, 0, "ebx", 23), "CLFLUSHOPT"),
  f("clwb", b(7, 0, "ebx", 24), "CLWB"),
  f("sha_ni", b(7, 0, "ebx", 29), "SHA extensions"),
  f("umip", b(7, 0, "ecx", 2), "user-mode instruction prevention"),
  f("pku", b(7, 0, "ecx", 3), "protection keys for user pages", { xcr0: 1 << 9 }),
  f("gfni", b(7, 0, "ecx", 8), "Galois field instructions"),
  f("vaes", b(7, 0, "ecx", 9), "VEX-encoded AES"),
  f("vpclmulqdq", b(7, 0, "ecx", 10), "VEX-encoded PCLMULQDQ"),
  f("la57", b(7, 0, "ecx", 16), "5-level paging"),
  f("rdpid", b(7, 0, "ecx", 22), "RDPID"),
  f("fsrm", b(7, 0, "edx", 4), "fast short REP MOV"),
  f("serialize", b(7, 0, "edx", 14), "SERIALIZE"),
  f("arch_capabilities", b(7, 0, "edx", 29), "IA32_ARCH_CAPABILITIES MSR"),
  // extended leaves
  f("lahf_lm", b(0x80000001, 0, "ecx", 0), "LAHF/SAHF in long mode"),
  f("svm", b(0x80000001, 0, "ecx", 2), "AMD SVM (nested virtualization)"),
  f("abm", b(0x80000001, 0, "ecx", 5), "LZCNT"),
  f("sse4a", b(0x80000001, 0, "ecx", 6), "SSE4a"),
  f("3dnowprefetch", b(0x80000001, 0, "ecx", 8), "PREFETCHW"),
  f("syscall", b(0x80000001, 0, "edx", 11), "SYSCALL/SYSRET"),
  f("nx", b(0x80000001, 0, "edx", 20), "no-execute pages"),
  f("pdpe1gb", b(0x80000001, 0, "edx", 26), "1 GiB pages"),
  f("rdtscp", b(0x80000001, 0, "edx", 27), "RDTSCP"),
  f("lm", b(0x80000001, 0, "edx", 29), "long mode"),
  // KVM paravirtual features (CPUID 0x40000001 EAX, Linux's Documentation/virt/kvm/x86/cpuid.rst),
  // named as QEMU's -cpu flags. The normalized table offers what KVM supports.
  f("kvmclock", b(0x40000001, 0, "eax", 3), "kvmclock (the new MSRs 0x4b564d00/01)"),
  f("kvm-nopiodelay", b(0x40000001, 0, "eax", 1), "no delay needed on port I/O"),
  f("kvm-asyncpf", b(0x40000001, 0, "eax", 4), "asynchronous page faults"),
  f("kvm-steal-time", b(0x40000001, 0, "eax", 5), "steal time accounting (and the preempted flag PV TLB flush reads)"),
  f("kvm-pv-eoi", b(0x40000001, 0, "eax", 6), "paravirtual end of interrupt"),
  f("kvm-pv-unhalt", b(0x40000001, 0, "eax", 7), "paravirtual spinlocks: waiters halt, the releaser kicks them (KVM_HC_KICK_CPU)"),
  f("kvm-pv-tlb-flush", b(0x40000001, 0, "eax", 9), "TLB flush of preempted vCPUs without an IPI", { requires: ["kvm-steal-time"] }),
  f("kvm-pv-ipi", b(0x40000001, 0, "eax", 11), "IPIs to many vCPUs in one hypercall (KVM_HC_SEND_IPI)"),
  f("kvm-poll-control", b(0x40000001, 0, "eax", 12), "guest control of host halt polling"),
  f("kvm-pv-sched-yield", b(0x40000001, 0, "eax", 13), "yield to a preempted IPI target (KVM_HC_SCHED_YIELD)"),
  f("kvm-asyncpf-int", b(0x40000001, 0, "eax", 14), "asynchronous page fault completion by interrupt", { requires: ["kvm-asyncpf"] }),
];

const BY_NAME: ReadonlyMap<string, CpuFeature> = new Map(CPU_FEATURES.map((x) => [x.name, x]));

/** The feature called `name`, if the model knows it. */
export function featureByName(name: string): CpuFeature | undefined {
  return BY_NAME.get(name);
}

/**
 * XCR0 components and the feature whose CPUID bit enumerates each (SDM vol. 1
 * 13.1): a component whose feature is not exposed is removed from CPUID.0xD.
 * x87 (bit 0) and SSE (bit 1) are always kept.
 */
export const XCR0_COMPONENTS: readonly { readonly mask: number; readonly feature: CpuidBit }[] = [
  { mask: 1 << 2, feature: b(1, 0, "ecx", 28) }, // AVX
  { mask: 0x18, feature: b(7, 0, "ebx", 14) }, // MPX BNDREGS, BNDCSR
  { mask: 0xe0, feature: b(7, 0, "ebx", 16) }, // AVX-512 opmask, ZMM_Hi256, Hi16_ZMM
  { mask: 1 << 9, feature: b(7, 0, "ecx", 3) }, // PKRU
  { mask: 0x60000, feature: b(7, 0, "edx", 24) }, // AMX XTILECFG, XTILEDATA
];

/**
 * The MSRs that hold CET state once shstk or ibt is exposed (SDM vol. 1 ch. 17,
 * vol. 4): IA32_U_CET 0x6a0, IA32_S_CET 0x6a2, IA32_PL0_SSP..IA32_PL3_SSP
 * 0x6a4-0x6a7, IA32_INTERRUPT_SSP_TABLE_ADDR 0x6a8; with them IA32_XSS 0xda0.
 * A snapshot saves these (KVM_GET_MSRS) and the ONE_REG GUEST_SSP.
 */
export const CET_STATE_MSRS: readonly number[] = [0xda0, 0x6a0, 0x6a2, 0x6a4, 0x6a5, 0x6a6, 0x6a7, 0x6a8];

/** IA32_XSS (0xda0): supervisor state components enabled for XSAVES. */
export const MSR_IA32_XSS = 0xda0;
