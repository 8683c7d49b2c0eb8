// What the host tells about its CPU and KVM modules, read from Linux's files.
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { release } from "node:os";
import { hostCpuid, type CpuidEntry, type CpuidRegisters } from "@ts-vmm/kvm-ioctls";

/** Leaves with subleaves, and how many the reader asks for (as scripts/cpuid-recorder/cpuid-dump.c). */
function subleaves(fn: number): number {
  if (fn === 0x4 || fn === 0x8000001d) return 8;
  if ([0x7, 0x14, 0x17, 0x18, 0x1d, 0x1e, 0x20, 0x23, 0x24].includes(fn)) return 4;
  if (fn === 0xb || fn === 0x1f || fn === 0x80000026) return 6;
  if (fn === 0xd) return 64;
  if (fn === 0xf || fn === 0x10 || fn === 0x12 || fn === 0x80000020) return 8;
  return 0;
}

/**
 * The host's CPUID as the instruction returns it (kvm-ioctls' `hostCpuid`,
 * on whichever CPU this thread runs: APIC id fields are that CPU's), with the
 * subleaves of the indexed leaves. Undefined if `query` fails.
 */
export function readHostCpuid(query: (leaf: number, subleaf: number) => CpuidRegisters = hostCpuid): CpuidEntry[] | undefined {
  try {
    const out: CpuidEntry[] = [];
    for (const base of [0, 0x4000_0000, 0x8000_0000]) {
      const max = query(base, 0).eax;
      if (base !== 0 && (max < base || max > base + 0xff)) continue;
      for (let fn = base; fn <= max; fn++) {
        const n = subleaves(fn);
        for (let i = 0; i < Math.max(n, 1); i++) out.push({ function: fn, index: i, flags: n > 0 ? 1 : 0, ...query(fn, i) });
      }
    }
    return out;
  } catch {
    return undefined;
  }
}

/** The `flags` line of the first CPU in /proc/cpuinfo, or undefined. */
export function readCpuinfoFlags(path = "/proc/cpuinfo"): string[] | undefined {
  try {
    const m = /^flags\s*:\s*(.*)$/m.exec(readFileSync(path, "utf8"));
    return m ? m[1]!.trim().split(/\s+/) : undefined;
  } catch {
    return undefined;
  }
}

/** The KVM modules loaded and the parameters the report shows. */
export interface KvmModules {
  /** The vendor module loaded: `kvm_amd`, `kvm_intel`, or another `kvm_*` (this CI machine: `kvm_pvm`); undefined without one. */
  readonly module: string | undefined;
  /** `module.param` → value as sysfs shows it (`Y`, `N`, `1`, `0`), for the parameters that decide APIC acceleration. */
  readonly params: Readonly<Record<string, string>>;
}

/** Parameters read from /sys/module/<module>/parameters when present. */
export const ACCEL_PARAMS: readonly string[] = ["kvm_amd.avic", "kvm_amd.force_avic", "kvm_amd.nested", "kvm_amd.npt", "kvm_intel.enable_apicv", "kvm_intel.enable_ipiv", "kvm_intel.nested", "kvm_intel.ept"];

/** Reads which vendor KVM module is loaded and its acceleration parameters from `sysModule` (/sys/module). */
export function readKvmModules(sysModule = "/sys/module"): KvmModules {
  const params: Record<string, string> = {};
  for (const p of ACCEL_PARAMS) {
    const [mod, name] = p.split(".") as [string, string];
    try {
      params[p] = readFileSync(`${sysModule}/${mod}/parameters/${name}`, "utf8").trim();
    } catch {
      // absent: the module is not loaded or has no such parameter
    }
  }
  let module: string | undefined;
  if (existsSync(`${sysModule}/kvm_amd`)) module = "kvm_amd";
  else if (existsSync(`${sysModule}/kvm_intel`)) module = "kvm_intel";
  else {
    try {
      module = readdirSync(sysModule).find((d) => d.startsWith("kvm_"));
    } catch {
      module = undefined;
    }
  }
  return { module, params };
}

/** `uname -r`. */
export function hostKernelRelease(): string {
  return release();
}
