// APICv/AVIC inhibits: which of the kernel's reasons a VM configuration
// raises. The list and the per-vendor sets follow enum kvm_apicv_inhibit in
// arch/x86/include/asm/kvm_host.h and VMX_REQUIRED_APICV_INHIBITS /
// AVIC_REQUIRED_APICV_INHIBITS (Linux 6.16+). Pure functions.
import type { CpuVendor } from "./cpuid-table.js";

/** A reason of enum kvm_apicv_inhibit, without the APICV_INHIBIT_REASON_ prefix. */
export type ApicvInhibit =
  | "DISABLED" | "HYPERV" | "ABSENT" | "BLOCKIRQ" | "PHYSICAL_ID_ALIASED" | "APIC_ID_MODIFIED" | "APIC_BASE_MODIFIED"
  | "NESTED" | "IRQWIN" | "PIT_REINJ" | "SEV" | "LOGICAL_ID_ALIASED" | "PHYSICAL_ID_TOO_BIG";

/** How the VM's interrupt controllers and timers are set up: what can raise an inhibit. */
export interface InterruptConfig {
  /** `full`: in-kernel LAPIC, IOAPIC and PIC; `split`: LAPIC in the kernel, IOAPIC/PIC in user space; `none`: no in-kernel LAPIC. */
  readonly irqchip: "full" | "split" | "none";
  /** The in-kernel PIT (KVM_CREATE_PIT2), if any, and whether it reinjects missed ticks (KVM's default when created). */
  readonly pit?: { readonly reinject: boolean } | undefined;
  /** Interrupts delivered as ExtINT from a PIC, or injected with KVM_INTERRUPT (both need an IRQ window). */
  readonly extInt: boolean;
  /** Number of vCPUs; the vCPU id is the APIC id, 0 to vcpus - 1. */
  readonly vcpus: number;
  /** Whether x2APIC is in the guest's CPUID. */
  readonly x2apic: boolean;
  /** Whether SVM/VMX is in the guest's CPUID (a guest hypervisor runs nested guests). */
  readonly nestedVirt: boolean;
  /** Hyper-V SynIC enlightenments exposed (AutoEOI inhibits APICv). */
  readonly hypervSynic: boolean;
  /** KVM_GUESTDBG_BLOCKIRQ in use. */
  readonly guestDebugBlockIrq: boolean;
  /** An SEV guest. */
  readonly sev: boolean;
}

/** The host side: which acceleration the loaded KVM module provides. */
export interface AccelerationHost {
  /** The CPU vendor (decides which inhibits apply). */
  readonly vendor: CpuVendor;
  /** The vendor module's switch: kvm_amd `avic` / kvm_intel `enable_apicv`; undefined when the module is not loaded. */
  readonly enabled: boolean | undefined;
  /** What to call that switch in a reason (`kvm_amd.avic=N`). */
  readonly enabledBy: string;
  /** The host CPU has x2AVIC (CPUID 0x8000000A:EDX[18]); AMD only. */
  readonly x2avic?: boolean | undefined;
}

/** One inhibit and whether the configuration raises it. */
export interface InhibitStatus {
  /** The reason. */
  readonly inhibit: ApicvInhibit;
  /** Which acceleration it can inhibit. */
  readonly affects: "APICv and AVIC" | "AVIC";
  /**
   * `raised`: the configuration raises it at once; `transient`: while some
   * guest action lasts (IRQ windows); `guest`: only if the guest does something
   * the configuration does not cause; `no`: not by this configuration;
   * `n/a`: not an inhibit of this host's vendor.
   */
  readonly status: "raised" | "transient" | "guest" | "no" | "n/a";
  /** Why, in one sentence. */
  readonly reason: string;
}

/** AVIC physical APIC id limits (arch/x86/kvm/svm/avic.c): 0xfe for xAVIC, 0x1ff for x2AVIC. */
export const AVIC_MAX_PHYSICAL_ID = 0xfe;
/** See {@link AVIC_MAX_PHYSICAL_ID}. */
export const X2AVIC_MAX_PHYSICAL_ID = 0x1ff;

const AVIC_ONLY: ReadonlySet<ApicvInhibit> = new Set(["NESTED", "IRQWIN", "PIT_REINJ", "SEV", "LOGICAL_ID_ALIASED", "PHYSICAL_ID_TOO_BIG"]);

/**
 * Every inhibit reason with its status for `config` on `host`. On Intel,
 * AVIC-only reasons are `n/a`; on other vendors everything is evaluated.
 */
export function apicvInhibits(config: InterruptConfig, host: AccelerationHost): InhibitStatus[] {
  const maxId = config.vcpus - 1;
  const x2avic = host.x2avic === true && config.x2apic;
  const limit = x2avic ? X2AVIC_MAX_PHYSICAL_ID : AVIC_MAX_PHYSICAL_ID;
  const rows: [ApicvInhibit, InhibitStatus["status"], string][] = [
    ["DISABLED", host.enabled === true ? "no" : "raised",
      host.enabled === true ? `${host.enabledBy} is on` : host.enabled === false ? `${host.enabledBy} is off` : `${host.enabledBy.split(".")[0]} is not loaded, so KVM here has no APIC acceleration`],
    ["HYPERV", config.hypervSynic ? "guest" : "no", config.hypervSynic ? "Hyper-V SynIC is exposed; a guest that uses AutoEOI raises it" : "no Hyper-V enlightenments are exposed"],
    ["ABSENT", config.irqchip === "none" ? "raised" : "no", config.irqchip === "none" ? "the local APIC is emulated in user space (no KVM_CREATE_IRQCHIP or split irqchip)" : `the local APICs are in the kernel (${config.irqchip} irqchip)`],
    ["BLOCKIRQ", config.guestDebugBlockIrq ? "raised" : "no", config.guestDebugBlockIrq ? "KVM_GUESTDBG_BLOCKIRQ is set" : "KVM_GUESTDBG_BLOCKIRQ is not used"],
    ["PHYSICAL_ID_ALIASED", "no", "every vCPU id equals its APIC id"],
    ["APIC_ID_MODIFIED", "guest", "the VMM keeps the reset APIC ids; only a guest rewriting its xAPIC ID register raises it"],
    ["APIC_BASE_MODIFIED", "guest", "the VMM keeps the reset APIC base; only a guest relocating it raises it"],
    ["NESTED", config.nestedVirt ? "guest" : "no", config.nestedVirt ? "SVM is exposed: a vCPU running a nested guest raises it" : "no SVM/VMX in the guest's CPUID"],
    ["IRQWIN", config.extInt ? "transient" : "no", config.extInt ? "interrupts arrive as ExtINT from a PIC or through KVM_INTERRUPT, and KVM inhibits AVIC while it waits for an IRQ window" : "no PIC ExtINT and no KVM_INTERRUPT injection: interrupts reach the LAPICs as MSIs or IOAPIC messages"],
    ["PIT_REINJ", config.pit?.reinject ? "raised" : "no", config.pit === undefined ? "no in-kernel PIT" : config.pit.reinject ? "the in-kernel PIT reinjects missed ticks (KVM_REINJECT_CONTROL not set to 0)" : "the in-kernel PIT has reinjection off"],
    ["SEV", config.sev ? "raised" : "no", config.sev ? "the VM is an SEV guest" : "not an SEV guest"],
    ["LOGICAL_ID_ALIASED", config.x2apic ? "no" : "guest", config.x2apic ? "in x2APIC mode logical ids derive from APIC ids and cannot alias" : "a guest in xAPIC logical mode can program aliasing logical ids"],
    ["PHYSICAL_ID_TOO_BIG", maxId > limit ? "raised" : "no", maxId > limit ? `APIC id ${maxId} is above ${x2avic ? "x2AVIC" : "AVIC"}'s limit ${limit}` : `the highest APIC id, ${maxId}, is within ${x2avic ? "x2AVIC" : "AVIC"}'s limit ${limit}`],
  ];
  return rows.map(([inhibit, status, reason]) => ({
    inhibit,
    affects: AVIC_ONLY.has(inhibit) ? "AVIC" : "APICv and AVIC",
    status: host.vendor === "intel" && AVIC_ONLY.has(inhibit) ? "n/a" : status,
    reason,
  }));
}

/** The inhibits the configuration itself raises (status `raised` or `transient`), excluding host-side DISABLED. */
export function configInhibits(rows: readonly InhibitStatus[]): InhibitStatus[] {
  return rows.filter((r) => r.inhibit !== "DISABLED" && (r.status === "raised" || r.status === "transient"));
}
