// The `ts-vmm cpu-features` report: per feature, what the host CPU has, what
// KVM supports and what this VM would expose, plus the APICv/AVIC inhibits.
// Pure: the live inputs are gathered by the CLI (host.ts).
import type { CpuidEntry } from "@ts-vmm/kvm-ioctls";
import { GUEST_SSP_REG_ID } from "@ts-vmm/kvm-ioctls";
import { hasBit, vendorOf, type CpuVendor } from "./cpuid-table.js";
import { CET_STATE_MSRS, CPU_FEATURES, featureByName, type CpuFeature, type FeatureKind } from "./features.js";
import { apicvInhibits, configInhibits, type ApicvInhibit, type InhibitStatus, type InterruptConfig } from "./inhibits.js";
import type { KvmModules } from "./host.js";
import { CET_MIN_KERNEL, effectiveSupported, kernelVersion, type CpuRefusal, type HostKvmFacts } from "./policy.js";

/** Inputs of {@link cpuFeatureReport}. */
export interface CpuFeatureReportInput {
  /** KVM's table, the kernel release and (if readable) the host's CPUID. */
  readonly host: HostKvmFacts;
  /** /proc/cpuinfo flags: the host column when `host.hostCpuid` is absent. */
  readonly hostFlags?: readonly string[] | undefined;
  /** The KVM modules and their parameters. */
  readonly modules: KvmModules;
  /**
   * The table the VM would get, or the policy's refusal. `entries` is what the
   * `exposed` column shows: the policy's table, or better what KVM holds after
   * KVM_SET_CPUID2 (KVM_GET_CPUID2); then `policy` is the policy's table and
   * the report lists the features where the two differ.
   */
  readonly vm: { readonly entries: readonly CpuidEntry[]; readonly policy?: readonly CpuidEntry[] } | { readonly refusal: CpuRefusal };
  /** The template's name and the switches, for the header. */
  readonly template: string;
  /** The `--cpu-features` text, if any. */
  readonly switches?: string | undefined;
  /** How interrupts are set up (decides the inhibits). */
  readonly interrupts: InterruptConfig;
  /** Measured on a scratch vCPU holding the VM's table: is GUEST_SSP readable (ONE_REG), which CET MSRs KVM_GET_MSRS reads. */
  readonly vcpuState?: { readonly guestSspReadable: boolean; readonly readableCetMsrs: readonly number[] } | undefined;
  /** Every feature of the model instead of the CET/APIC set. */
  readonly all?: boolean;
}

/** One row of the report. `null` means unknown or not applicable. */
export interface FeatureRow {
  /** Feature name. */
  readonly name: string;
  /** See {@link FeatureKind}. */
  readonly kind: FeatureKind;
  /** The host CPU has it (CPUID instruction, else /proc/cpuinfo). */
  readonly hostCpu: boolean | null;
  /** KVM supports it: in KVM_GET_SUPPORTED_CPUID (CET also needs the 6.18 kernel); for acceleration, the module parameter is on. */
  readonly kvm: boolean | null;
  /** The VM would see it (for acceleration: KVM would accelerate this VM's APICs, no inhibit raised). */
  readonly exposed: boolean | null;
  /** What the feature is, and anything that qualifies the columns. */
  readonly note: string;
}

/** The whole report (`ts-vmm cpu-features --json` prints it). */
export interface CpuFeatureReport {
  /** Host kernel release. */
  readonly kernel: string;
  /** CPU vendor from KVM's leaf 0. */
  readonly vendor: CpuVendor;
  /** The vendor KVM module loaded. */
  readonly kvmModule: string | null;
  /** Where the host column comes from. */
  readonly hostSource: "cpuid" | "cpuinfo" | "none";
  /** Template name. */
  readonly template: string;
  /** The switches given. */
  readonly switches: string | null;
  /** The policy's refusal, if it refused (then `exposed` is null everywhere). */
  readonly refusal: CpuRefusal | null;
  /** Module parameters found under /sys/module. */
  readonly moduleParams: Readonly<Record<string, string>>;
  /** One row per feature. */
  readonly features: readonly FeatureRow[];
  /** Every APICv/AVIC inhibit with its status for this configuration. */
  readonly inhibits: readonly InhibitStatus[];
  /** Where source of the `exposed` column is: KVM_GET_CPUID2 after setting the policy's table, or the policy's table. */
  readonly exposedSource: "KVM_GET_CPUID2" | "policy" | "none";
  /** Features whose bit KVM changed when the table was set (`kvm` is what KVM holds). */
  readonly kvmChanged: readonly { readonly feature: string; readonly policy: boolean; readonly kvm: boolean }[];
  /** The inhibits this configuration raises itself (should be empty). */
  readonly raisedByConfig: readonly ApicvInhibit[];
  /** MSRs that hold CET state when shstk/ibt is exposed (hex). */
  readonly cetStateMsrs: readonly string[];
  /** The ONE_REG id of GUEST_SSP (hex). */
  readonly guestSspRegId: string;
  /** Measured on a scratch vCPU with the VM's table (null when not measured): GUEST_SSP readable, CET MSRs readable (hex). */
  readonly vcpuState: { readonly guestSspReadable: boolean; readonly readableCetMsrs: readonly string[] } | null;
}

/** Features the report shows without `all`. */
export const REPORT_FEATURES: readonly string[] = ["shstk", "ibt", "cet_u", "cet_s", "guest_ssp", "xsave", "xsaves", "x2apic", "tsc-deadline", "hypervisor", "avic", "x2avic", "apicv", "ipiv"];

const on = (v: string | undefined): boolean | undefined => (v === undefined ? undefined : v === "Y" || v === "1" || v === "y");

/** Builds the report. */
export function cpuFeatureReport(input: CpuFeatureReportInput): CpuFeatureReport {
  const { host, modules } = input;
  const vendor = vendorOf(host.supported);
  const supported = effectiveSupported(host);
  const vm = "entries" in input.vm ? input.vm.entries : undefined;
  const kv = kernelVersion(host.kernelRelease);
  const cetKernel = kv !== undefined && (kv[0] > CET_MIN_KERNEL[0] || (kv[0] === CET_MIN_KERNEL[0] && kv[1] >= CET_MIN_KERNEL[1]));
  const hostSource = host.hostCpuid ? "cpuid" : input.hostFlags ? "cpuinfo" : "none";
  const hostHas = (feat: CpuFeature): boolean | null => {
    if (host.hostCpuid && feat.bit) return hasBit(host.hostCpuid, feat.bit);
    if (input.hostFlags && (feat.kind === "cpuid" || feat.bit !== undefined)) {
      const names = feat.cpuinfo ?? [feat.name];
      if (feat.name === "cet_u" || feat.name === "cet_s") return null;
      return names.some((n) => input.hostFlags!.includes(n));
    }
    return null;
  };
  const inhibits = apicvInhibits(input.interrupts, {
    vendor,
    enabled: vendor === "amd" ? on(modules.params["kvm_amd.avic"]) : on(modules.params["kvm_intel.enable_apicv"]),
    enabledBy: vendor === "amd" ? "kvm_amd.avic" : "kvm_intel.enable_apicv",
    x2avic: host.hostCpuid ? hasBit(host.hostCpuid, featureByName("x2avic")!.bit!) : undefined,
  });
  const raised = configInhibits(inhibits);
  const names = input.all ? CPU_FEATURES.map((f) => f.name) : REPORT_FEATURES;
  const policyTable = "entries" in input.vm ? input.vm.policy : undefined;
  const kvmChanged = vm && policyTable
    ? CPU_FEATURES.filter((f) => f.kind === "cpuid" && hasBit(vm, f.bit!) !== hasBit(policyTable, f.bit!)).map((f) => ({ feature: f.name, policy: hasBit(policyTable, f.bit!), kvm: hasBit(vm, f.bit!) }))
    : [];
  const changedNote = (name: string): string => {
    const c = kvmChanged.find((x) => x.feature === name);
    return c === undefined ? "" : c.kvm ? "; KVM turned it on although the policy hid it" : "; KVM dropped it although the policy exposed it";
  };
  const rows = names.map((name): FeatureRow => {
    const feat = featureByName(name)!;
    const exposedBit = (): boolean | null => (vm && feat.bit ? hasBit(vm, feat.bit) : null);
    if (feat.kind === "cpuid") {
      const cet = name === "shstk" || name === "ibt";
      const kvmBit = hasBit(supported, feat.bit!);
      const note = cet && !cetKernel ? `${feat.description}; KVM virtualizes it from Linux ${CET_MIN_KERNEL.join(".")}` : feat.description;
      return { name, kind: feat.kind, hostCpu: hostHas(feat), kvm: cet ? kvmBit && cetKernel : kvmBit, exposed: exposedBit(), note: note + changedNote(name) };
    }
    if (feat.kind === "vcpu-state") {
      const shstk = featureByName("shstk")!;
      return {
        name, kind: feat.kind, hostCpu: hostHas(shstk), kvm: cetKernel && hasBit(supported, shstk.bit!),
        exposed: vm ? hasBit(vm, shstk.bit!) : null,
        note: `${feat.description}; id 0x${GUEST_SSP_REG_ID.toString(16)}${input.vcpuState ? `; KVM_GET_ONE_REG on a vCPU with this table: ${input.vcpuState.guestSspReadable ? "readable" : "refused"}` : ""}`,
      };
    }
    // acceleration
    const none = raised.length === 0;
    if (name === "avic" || name === "x2avic") {
      const avicOn = vendor === "amd" ? on(modules.params["kvm_amd.avic"]) : undefined;
      const hostBit = host.hostCpuid ? hasBit(host.hostCpuid, feat.bit!) : hostHas(feat);
      const kvm = vendor !== "amd" ? false : avicOn === undefined ? null : name === "avic" ? avicOn : avicOn && hostBit === true;
      const x2 = vm ? hasBit(vm, featureByName("x2apic")!.bit!) : false;
      const note = vendor !== "amd" ? `${feat.description}; not an AMD host` : avicOn === undefined ? `${feat.description}; kvm_amd is not loaded` : feat.description;
      return { name, kind: feat.kind, hostCpu: vendor === "amd" ? hostBit : false, kvm, exposed: vm && kvm !== null ? kvm && none && (name === "avic" || x2) : null, note };
    }
    const apicvOn = vendor === "intel" ? on(modules.params["kvm_intel.enable_apicv"]) : undefined;
    const kvm = vendor !== "intel" ? false : apicvOn === undefined ? null : name === "apicv" ? apicvOn : apicvOn && on(modules.params["kvm_intel.enable_ipiv"]) === true;
    const note = vendor !== "intel" ? `${feat.description}; not an Intel host` : apicvOn === undefined ? `${feat.description}; kvm_intel is not loaded (host column: VMX capability MSRs, not CPUID)` : `${feat.description} (host column: VMX capability MSRs, not read)`;
    return { name, kind: feat.kind, hostCpu: vendor === "intel" ? null : false, kvm, exposed: vm && kvm !== null ? kvm && none : null, note };
  });
  return {
    kernel: host.kernelRelease,
    vendor,
    kvmModule: modules.module ?? null,
    hostSource,
    template: input.template,
    switches: input.switches ?? null,
    refusal: "refusal" in input.vm ? input.vm.refusal : null,
    moduleParams: modules.params,
    features: rows,
    inhibits,
    exposedSource: vm === undefined ? "none" : policyTable ? "KVM_GET_CPUID2" : "policy",
    kvmChanged,
    raisedByConfig: raised.map((r) => r.inhibit),
    cetStateMsrs: CET_STATE_MSRS.map((m) => `0x${m.toString(16)}`),
    guestSspRegId: `0x${GUEST_SSP_REG_ID.toString(16)}`,
    vcpuState: input.vcpuState ? { guestSspReadable: input.vcpuState.guestSspReadable, readableCetMsrs: input.vcpuState.readableCetMsrs.map((m) => `0x${m.toString(16)}`) } : null,
  };
}

const cell = (v: boolean | null): string => (v === null ? "?" : v ? "yes" : "no");

/** The report as a text table for a terminal. */
export function formatCpuFeatureReport(r: CpuFeatureReport): string {
  const lines: string[] = [];
  lines.push(`host kernel ${r.kernel}, ${r.vendor} CPU, KVM module ${r.kvmModule ?? "none"}; host column from ${r.hostSource === "cpuid" ? "the CPUID instruction" : r.hostSource === "cpuinfo" ? "/proc/cpuinfo flags" : "nowhere (unknown)"}`);
  lines.push(`template ${r.template}${r.switches ? `, --cpu-features ${r.switches}` : ""}`);
  if (r.refusal) lines.push(`refused: ${r.refusal.message}`);
  else lines.push(`exposed column from ${r.exposedSource === "KVM_GET_CPUID2" ? "KVM_GET_CPUID2 after setting the policy's table" : "the policy's table"}`);
  if (r.kvmChanged.length > 0) {
    const on = r.kvmChanged.filter((c) => c.kvm).map((c) => c.feature);
    const off = r.kvmChanged.filter((c) => !c.kvm).map((c) => c.feature);
    const parts = [on.length ? `turned on ${on.join(" ")}` : "", off.length ? `dropped ${off.join(" ")}` : ""].filter((x) => x !== "");
    const why = r.kvmModule === "kvm_pvm" ? " (kvm_pvm cannot hide features that CPL3 code sees natively)" : "";
    lines.push(`KVM did not keep the table as set: ${parts.join("; ")}${why}`);
  }
  lines.push("");
  const w = Math.max(...r.features.map((f) => f.name.length), 7);
  lines.push(`${"feature".padEnd(w)}  host CPU  KVM  exposed  note`);
  for (const f of r.features) lines.push(`${f.name.padEnd(w)}  ${cell(f.hostCpu).padEnd(8)}  ${cell(f.kvm).padEnd(3)}  ${cell(f.exposed).padEnd(7)}  ${f.note}`);
  lines.push("");
  const params = Object.entries(r.moduleParams);
  lines.push(`module parameters: ${params.length === 0 ? "none of kvm_amd/kvm_intel's (module not loaded)" : params.map(([k, v]) => `${k}=${v}`).join(" ")}`);
  lines.push(`CET state: MSRs ${r.cetStateMsrs.join(" ")} and ONE_REG GUEST_SSP ${r.guestSspRegId}`);
  if (r.vcpuState) lines.push(`  on a vCPU with this table: GUEST_SSP ${r.vcpuState.guestSspReadable ? "readable" : "refused"}; KVM_GET_MSRS reads ${r.vcpuState.readableCetMsrs.length === 0 ? "none of them" : r.vcpuState.readableCetMsrs.join(" ")}`);
  lines.push("");
  lines.push(`APICv/AVIC inhibits (raised by this configuration: ${r.raisedByConfig.length === 0 ? "none" : r.raisedByConfig.join(", ")})`);
  const iw = Math.max(...r.inhibits.map((i) => i.inhibit.length));
  for (const i of r.inhibits) lines.push(`${i.inhibit.padEnd(iw)}  ${i.status.padEnd(9)}  ${i.reason}`);
  return lines.join("\n") + "\n";
}
