// The CPU policy: template, then per-feature switches, then XSAVE
// consistency, on top of the normalized CPUID table. Pure functions.
import type { CpuidEntry } from "@ts-vmm/kvm-ioctls";
import { VmmError } from "../error.js";
import { bitName, findEntry, hasBit, vendorOf, withBit, type CpuidBit } from "./cpuid-table.js";
import { CPU_FEATURES, XCR0_COMPONENTS, XSS_CET_S, XSS_CET_U, featureByName, type CpuFeature } from "./features.js";
import type { CpuTemplate } from "./templates.js";

/** `+name` (expose) or `-name` (hide). */
export interface FeatureSwitch {
  /** A feature of {@link CPU_FEATURES}. */
  readonly name: string;
  /** true for `+name`, false for `-name`. */
  readonly on: boolean;
}

/** What the policy needs to know about the host. */
export interface HostKvmFacts {
  /** KVM_GET_SUPPORTED_CPUID as the kernel returned it. */
  readonly supported: readonly CpuidEntry[];
  /** `uname -r` of the host (KVM's CET support needs 6.18). */
  readonly kernelRelease: string;
  /** The host's own CPUID (the instruction's view), if known: refusals then say whether the CPU lacks the feature too. */
  readonly hostCpuid?: readonly CpuidEntry[] | undefined;
  /**
   * KVM_CAP_TSC_DEADLINE_TIMER: KVM emulates the LAPIC's TSC-deadline mode but
   * does not put CPUID.1:ECX[24] into KVM_GET_SUPPORTED_CPUID (real KVM; kvm_pvm
   * does); with the capability the policy treats the bit as supported.
   */
  readonly tscDeadlineCap?: boolean | undefined;
}

/** KVM's table as the policy sees it: KVM_GET_SUPPORTED_CPUID plus TSC-deadline when the capability says so. */
export function effectiveSupported(host: HostKvmFacts): CpuidEntry[] {
  const tsc = featureByName("tsc-deadline")!.bit!;
  return host.tscDeadlineCap ? withBit(host.supported, tsc, true).entries : host.supported.map((e) => ({ ...e }));
}

/** Inputs of {@link applyCpuPolicy}. */
export interface CpuPolicy {
  /** The template (see {@link loadCpuTemplate}). */
  readonly template: CpuTemplate;
  /** Switches, applied in order after the template. */
  readonly switches?: readonly FeatureSwitch[];
  /** The host. */
  readonly host: HostKvmFacts;
  /** vCPUs of the VM (more than 255 need x2APIC). Default 1. */
  readonly vcpus?: number;
}

/** Why the policy refused: one sentence that names the missing input. */
export interface CpuRefusal {
  /** The feature asked for (or turned off) that caused the refusal. */
  readonly feature: string;
  /** The missing input, short: `"SHSTK in KVM_GET_SUPPORTED_CPUID"`, `"host kernel 6.18"`. */
  readonly missing: string;
  /** The sentence for the user. */
  readonly message: string;
}

/** The outcome of {@link applyCpuPolicy}. */
export type CpuPolicyResult =
  | { readonly ok: true; readonly entries: CpuidEntry[]; readonly notes: readonly string[] }
  | { readonly ok: false; readonly refusal: CpuRefusal };

/** The first KVM release with CET virtualization (shadow stacks, IBT, GUEST_SSP). */
export const CET_MIN_KERNEL: readonly [number, number] = [6, 18];

/** `[major, minor]` of a `uname -r` string, or undefined when it does not start with digits. */
export function kernelVersion(release: string): [number, number] | undefined {
  const m = /^(\d+)\.(\d+)/.exec(release);
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

function atLeast(v: readonly [number, number], min: readonly [number, number]): boolean {
  return v[0] > min[0] || (v[0] === min[0] && v[1] >= min[1]);
}

/**
 * Parses `+shstk,-x2apic` (a bare name means `+name`; spaces are ignored).
 * @throws {@link VmmError} `InvalidConfig` naming an unknown feature or an empty item.
 */
export function parseFeatureSwitches(spec: string): FeatureSwitch[] {
  const items = spec.split(",").map((s) => s.trim());
  return items.map((item) => {
    const on = !item.startsWith("-");
    const name = item.replace(/^[+-]/, "");
    if (name === "") throw new VmmError("InvalidConfig", `--cpu-features: empty item in ${JSON.stringify(spec)} (write +name or -name, separated by commas)`);
    if (!featureByName(name)) throw new VmmError("InvalidConfig", `--cpu-features: unknown feature ${JSON.stringify(name)} (ts-vmm cpu-features --all lists them)`);
    return { name, on };
  });
}

/** Sets or clears a bit in the policy's private copy (no copying per switch). */
function setBit(entries: CpuidEntry[], b: CpuidBit, on: boolean): void {
  const mask = (1 << b.bit) >>> 0;
  for (const e of entries) if (e.function === b.function && e.index === b.index) e[b.register] = (on ? e[b.register] | mask : e[b.register] & ~mask) >>> 0;
}

const refuse = (feature: string, missing: string, message: string): CpuPolicyResult => ({ ok: false, refusal: { feature, missing, message } });

/** Why `+name` (shstk or ibt) cannot be honoured on this host, or undefined. */
function cetRefusal(feat: CpuFeature, host: HostKvmFacts): CpuRefusal | undefined {
  const r = (missing: string, message: string): CpuRefusal => ({ feature: feat.name, missing, message });
  const vendor = vendorOf(host.supported);
  if (feat.name === "ibt" && vendor === "amd") {
    return r("an Intel CPU", "+ibt needs an Intel host: AMD CPUs do not implement indirect branch tracking, and KVM on AMD (SVM) does not virtualize it.");
  }
  const v = kernelVersion(host.kernelRelease);
  if (!v || !atLeast(v, CET_MIN_KERNEL)) {
    return r(`host kernel ${CET_MIN_KERNEL.join(".")}`, `+${feat.name} needs a host kernel ${CET_MIN_KERNEL.join(".")} or later (KVM virtualizes CET from Linux 6.18), and this host runs ${host.kernelRelease}.`);
  }
  const bit = feat.bit!;
  if (!hasBit(host.supported, bit)) {
    const cpu = host.hostCpuid === undefined ? "" : hasBit(host.hostCpuid, bit) ? " although the host CPU has it" : " (the host CPU does not have it either)";
    return r(`${feat.name.toUpperCase()} in KVM_GET_SUPPORTED_CPUID`, `+${feat.name} needs ${feat.name.toUpperCase()} (${bitName(bit)}) in KVM_GET_SUPPORTED_CPUID, and this host's KVM does not report it${cpu}.`);
  }
  const xsaves = featureByName("xsaves")!.bit!;
  if (!hasBit(host.supported, xsaves)) {
    return r("XSAVES in KVM_GET_SUPPORTED_CPUID", `+${feat.name} needs XSAVES (${bitName(xsaves)}) in KVM_GET_SUPPORTED_CPUID to save CET state, and this host's KVM does not report it.`);
  }
  const xss = findEntry(host.supported, 0xd, 1)?.ecx ?? 0;
  if ((xss & (XSS_CET_U | XSS_CET_S)) !== (XSS_CET_U | XSS_CET_S)) {
    return r("CET_U and CET_S in KVM's supported XSS", `+${feat.name} needs the CET_U and CET_S state components (bits 11 and 12 of CPUID.0xd.1:ECX) in KVM_GET_SUPPORTED_CPUID, and this host's KVM does not report both.`);
  }
  return undefined;
}

const exposed = (entries: readonly CpuidEntry[], name: string): boolean => {
  const feat = featureByName(name);
  return feat?.bit !== undefined && feat.kind === "cpuid" && hasBit(entries, feat.bit);
};

/**
 * Applies a CPU template and feature switches to a CPUID table (normally the
 * normalized KVM_GET_SUPPORTED_CPUID of the VM). Never adds a bit that
 * neither KVM nor the input table has (TSC-deadline counts as supported with
 * KVM_CAP_TSC_DEADLINE_TIMER): `+name` for such a feature is a refusal, as is
 * `+shstk`/`+ibt` where KVM lacks CET (see {@link CpuRefusal}). Features whose requirements
 * were turned off are turned off too, with a note; an explicit `+name` whose
 * requirement is off is a refusal. XSAVE components (CPUID.0xD) follow the
 * exposed features: CET_U/CET_S and subleaves 11 and 12 exactly when shstk or
 * ibt is exposed.
 */
export function applyCpuPolicy(entries: readonly CpuidEntry[], policy: CpuPolicy): CpuPolicyResult {
  const { template: t } = policy;
  const host: HostKvmFacts = { ...policy.host, supported: effectiveSupported(policy.host) };
  const notes: string[] = [];
  const tsc = featureByName("tsc-deadline")!.bit!;
  const e: CpuidEntry[] = entries.map((x) => ({ ...x }));
  if (policy.host.tscDeadlineCap) setBit(e, tsc, true);
  // 1. The template: in masked registers only the template's features survive.
  for (const m of t.mask) {
    let allowed = 0;
    for (const name of t.features) {
      const bit = featureByName(name)?.bit;
      if (bit && bit.function === m.function && bit.index === m.index && bit.register === m.register) allowed |= 1 << bit.bit;
    }
    for (const x of e) if (x.function === m.function && x.index === m.index) x[m.register] = (x[m.register] & allowed) >>> 0;
  }
  // 2. Switches, in order.
  const explicitOn = new Set<string>();
  for (const s of policy.switches ?? []) {
    const feat = featureByName(s.name);
    const sign = s.on ? "+" : "-";
    if (!feat) return refuse(s.name, "a known feature", `${sign}${s.name} is not a feature ts-vmm knows (ts-vmm cpu-features --all lists them).`);
    if (feat.kind === "acceleration") {
      const mod = feat.name === "avic" || feat.name === "x2avic" ? "kvm_amd's avic" : feat.name === "ipiv" ? "kvm_intel's enable_ipiv" : "kvm_intel's enable_apicv";
      return refuse(feat.name, "a guest CPUID bit", `${sign}${feat.name} cannot be switched per VM: it is host-side acceleration, set by the ${mod} module parameter (ts-vmm cpu-features shows it and what inhibits it).`);
    }
    if (feat.kind === "vcpu-state" || feat.name === "cet_u" || feat.name === "cet_s") {
      return refuse(feat.name, "shstk or ibt", `${sign}${feat.name} follows the CET features: switch ${sign}shstk or ${sign}ibt instead.`);
    }
    if (feat.name === "apic" && !s.on) {
      return refuse("apic", "a user-space local APIC", "-apic cannot be honoured: KVM sets CPUID.1:EDX[9] itself from the in-kernel local APIC's base MSR (kvm_update_cpuid_runtime).");
    }
    const bit = feat.bit!;
    if (s.on) {
      if (feat.name === "shstk" || feat.name === "ibt") {
        const r = cetRefusal(feat, host);
        if (r) return { ok: false, refusal: r };
      } else if (!hasBit(host.supported, bit) && !hasBit(entries, bit)) {
        // A bit of the (normalized) input table counts as available too: normalization
        // adds bits KVM does not report but the VMM provides (the hypervisor bit).
        const cpu = host.hostCpuid === undefined ? "" : hasBit(host.hostCpuid, bit) ? " although the host CPU has it" : " (the host CPU does not have it either)";
        return refuse(feat.name, `${feat.name} in KVM_GET_SUPPORTED_CPUID`, `+${feat.name} needs ${bitName(bit)} in KVM_GET_SUPPORTED_CPUID, and this host's KVM does not report it${cpu}.`);
      }
      if (!findEntry(e, bit.function, bit.index)) {
        const src = findEntry(host.supported, bit.function, bit.index)!;
        e.push({ ...src, eax: 0, ebx: 0, ecx: 0, edx: 0 });
      }
      explicitOn.add(feat.name);
    } else {
      explicitOn.delete(feat.name);
    }
    setBit(e, bit, s.on);
  }
  // 3. Requirements: an explicit +X whose requirement is off is refused; anything else is turned off with it.
  for (let changed = true; changed; ) {
    changed = false;
    for (const feat of CPU_FEATURES) {
      if (feat.kind !== "cpuid" || !feat.requires || !hasBit(e, feat.bit!)) continue;
      const missing = feat.requires.find((r) => !exposed(e, r));
      if (missing === undefined) continue;
      if (explicitOn.has(feat.name)) {
        return refuse(feat.name, missing, `+${feat.name} needs ${missing}, which this configuration does not expose (add +${missing}).`);
      }
      setBit(e, feat.bit!, false);
      notes.push(`${feat.name} turned off: it needs ${missing}, which is not exposed`);
      changed = true;
    }
  }
  // 4. x2APIC: APIC ids above 254 exist only in x2APIC mode.
  const vcpus = policy.vcpus ?? 1;
  if (vcpus > 255 && !exposed(e, "x2apic")) {
    const why = (policy.switches ?? []).some((x) => x.name === "x2apic" && !x.on) ? "this configuration hides it (remove -x2apic)" : "this configuration does not expose it";
    return refuse("x2apic", "x2apic", `${vcpus} vCPUs need x2APIC (APIC ids above 254), and ${why}.`);
  }
  return { ok: true, entries: reconcileXsave(e, host.supported, t, explicitOn), notes };
}

/**
 * Makes CPUID.0xD agree with the exposed features: XCR0 components (0xD.0
 * EAX) only for exposed features and within the template's mask (components
 * of features switched on explicitly come back from KVM's table), XSS
 * (0xD.1 ECX) with CET_U/CET_S exactly when shstk or ibt is exposed, and
 * subleaves 2 to 63 present exactly for the components that remain.
 */
function reconcileXsave(entries: CpuidEntry[], supported: readonly CpuidEntry[], t: CpuTemplate, explicitOn: ReadonlySet<string>): CpuidEntry[] {
  const d0 = findEntry(entries, 0xd, 0);
  const d1 = findEntry(entries, 0xd, 1);
  const s0 = findEntry(supported, 0xd, 0);
  const s1 = findEntry(supported, 0xd, 1);
  if (!d0 || !s0 || d0.index !== 0) return entries;
  const xsaveOn = exposed(entries, "xsave");
  let xcr0 = d0.eax & t.xcr0Mask;
  for (const name of explicitOn) xcr0 |= (featureByName(name)?.xcr0 ?? 0) & s0.eax;
  for (const c of XCR0_COMPONENTS) if (!hasBit(entries, c.feature)) xcr0 &= ~c.mask;
  xcr0 = xsaveOn ? ((xcr0 | (s0.eax & 3)) >>> 0) : 0;
  const xcr0Hi = xsaveOn && t.xcr0Mask === 0xffff_ffff ? d0.edx : 0;
  let xss = (d1?.ecx ?? 0) & t.xssMask;
  const cet = exposed(entries, "shstk") || exposed(entries, "ibt");
  xss = cet ? xss | ((s1?.ecx ?? 0) & (XSS_CET_U | XSS_CET_S)) : xss & ~(XSS_CET_U | XSS_CET_S);
  xss = xsaveOn ? xss >>> 0 : 0;
  const xssHi = xsaveOn && t.xssMask === 0xffff_ffff ? (d1?.edx ?? 0) : 0;
  const want = (i: number): boolean => (i < 32 ? ((xcr0 | xss) >>> i) & 1 : ((xcr0Hi | xssHi) >>> (i - 32)) & 1) === 1;
  let out = entries.filter((x) => x.function !== 0xd || x.index < 2 || want(x.index));
  for (let i = 2; i < 64; i++) {
    if (want(i) && !out.some((x) => x.function === 0xd && x.index === i)) {
      const src = supported.find((x) => x.function === 0xd && x.index === i);
      if (src) out.push({ ...src });
    }
  }
  // ECX of 0xD.0: the XSAVE area size for every component XCR0 may enable.
  let maxSize = 576;
  for (const x of out) {
    if (x.function === 0xd && x.index >= 2 && x.index < 32 && ((xcr0 >>> x.index) & 1) === 1) maxSize = Math.max(maxSize, x.ebx + x.eax);
  }
  out = out.map((x) => {
    if (x.function !== 0xd) return x;
    if (x.index === 0) return { ...x, eax: xcr0, edx: xcr0Hi, ecx: xsaveOn ? Math.min(x.ecx, maxSize) : x.ecx };
    if (x.index === 1) return { ...x, ecx: xss, edx: xssHi };
    return x;
  });
  return out;
}

/** Names of the `cpuid` features exposed in a table. */
export function exposedFeatures(entries: readonly CpuidEntry[]): string[] {
  return CPU_FEATURES.filter((x) => x.kind === "cpuid" && hasBit(entries, x.bit!)).map((x) => x.name);
}
