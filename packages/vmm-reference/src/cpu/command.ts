// `ts-vmm cpu-features`: gathers the live inputs (KVM, the host's CPUID, the
// module parameters) and builds the report with the pure functions.
import { GUEST_SSP_REG_ID, Kvm as KvmClass, type CpuidEntry, type Kvm } from "@ts-vmm/kvm-ioctls";
import { CET_STATE_MSRS } from "./features.js";
import { openKvm, vmInterruptConfig, type IrqchipMode } from "../vmm.js";
import { hasBit } from "./cpuid-table.js";
import { featureByName } from "./features.js";
import { hostKernelRelease, readCpuinfoFlags, readHostCpuid, readKvmModules } from "./host.js";
import { applyCpuPolicy, parseFeatureSwitches } from "./policy.js";
import { cpuFeatureReport, type CpuFeatureReport } from "./report.js";
import { loadCpuTemplate } from "./templates.js";

/** Options of {@link liveCpuFeatureReport}. */
export interface LiveReportOptions {
  /** Template name or path (default `host`, as `ts-vmm run`). */
  readonly template?: string | undefined;
  /** `--cpu-features` text. */
  readonly switches?: string | undefined;
  /** vCPUs the VM would have (default 1). */
  readonly vcpus?: number | undefined;
  /** Every feature of the model. */
  readonly all?: boolean | undefined;
  /** The irqchip the run would use (default `split`, as `ts-vmm run`): it decides which inhibits the report shows. */
  readonly irqchip?: IrqchipMode | undefined;
}

/**
 * The report for this host, as `ts-vmm run` with the same options would set
 * the VM up: opens /dev/kvm for KVM_GET_SUPPORTED_CPUID, runs the CPUID
 * instruction for the host column (else /proc/cpuinfo flags) and reads the
 * kvm_amd / kvm_intel parameters from /sys/module.
 * @throws {@link VmmError} `KvmPermissionDenied`, `SetupFailed`, or `InvalidConfig` for a bad template or switch.
 */
export function liveCpuFeatureReport(opts: LiveReportOptions = {}): CpuFeatureReport {
  const template = loadCpuTemplate(opts.template ?? "host");
  const switches = opts.switches === undefined ? [] : parseFeatureSwitches(opts.switches);
  const kvm = openKvm();
  let supported: CpuidEntry[];
  const hostCpuid = readHostCpuid();
  const vcpus = opts.vcpus ?? 1;
  let r;
  let held: VcpuProbe | undefined;
  let host;
  try {
    supported = kvm.getSupportedCpuid();
    host = { supported, kernelRelease: hostKernelRelease(), hostCpuid, tscDeadlineCap: kvm.checkExtension(KvmClass.Cap.TSC_DEADLINE_TIMER) > 0 };
    r = applyCpuPolicy(supported, { template, switches, host, vcpus });
    // What KVM keeps of the table: set it on a scratch vCPU and read it back.
    if (r.ok) held = readBack(kvm, r.entries);
  } finally {
    kvm.close();
  }
  const table = held?.entries ?? (r.ok ? r.entries : undefined);
  const on = (name: string): boolean => table !== undefined && hasBit(table, featureByName(name)!.bit!);
  return cpuFeatureReport({
    host,
    hostFlags: hostCpuid ? undefined : readCpuinfoFlags(),
    modules: readKvmModules(),
    vm: r.ok ? (held ? { entries: held.entries, policy: r.entries } : { entries: r.entries }) : { refusal: r.refusal },
    vcpuState: held ? { guestSspReadable: held.guestSspReadable, readableCetMsrs: held.readableCetMsrs } : undefined,
    template: template.name,
    switches: opts.switches,
    interrupts: vmInterruptConfig(vcpus, on("x2apic"), on("svm") || on("vmx"), opts.irqchip ?? "split"),
    all: opts.all ?? false,
  });
}

/** What a scratch vCPU with the policy's table shows. */
interface VcpuProbe {
  /** KVM_GET_CPUID2 after KVM_SET_CPUID2. */
  readonly entries: CpuidEntry[];
  /** KVM_GET_ONE_REG of GUEST_SSP succeeded. */
  readonly guestSspReadable: boolean;
  /** The CET state MSRs (and IA32_XSS) KVM_GET_MSRS reads, one at a time. */
  readonly readableCetMsrs: number[];
}

/** KVM_SET_CPUID2 then KVM_GET_CPUID2, GUEST_SSP and the CET MSRs on vCPU 0 of a scratch VM; undefined if KVM refuses the table. */
function readBack(kvm: Kvm, entries: readonly CpuidEntry[]): VcpuProbe | undefined {
  const vm = kvm.createVm();
  try {
    const vcpu = vm.createVcpu(0);
    try {
      vcpu.setCpuid2(entries);
      let guestSspReadable = true;
      try {
        vcpu.getOneReg(GUEST_SSP_REG_ID);
      } catch {
        guestSspReadable = false;
      }
      const readableCetMsrs = CET_STATE_MSRS.filter((m) => {
        try {
          return vcpu.getMsrs([m]).length === 1;
        } catch {
          return false;
        }
      });
      return { entries: vcpu.getCpuid2(), guestSspReadable, readableCetMsrs };
    } catch {
      return undefined;
    } finally {
      vcpu.close();
    }
  } finally {
    vm.close();
  }
}
