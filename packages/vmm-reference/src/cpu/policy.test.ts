import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { FIXTURE_NAMES, fixture, type CpuidFixture } from "../../test/cpu-fixtures.js";
import { VmmError } from "../error.js";
import { findEntry, hasBit, withBit } from "./cpuid-table.js";
import { CPU_FEATURES, XSS_CET_S, XSS_CET_U, featureByName } from "./features.js";
import { normalizeCpuid } from "./normalize.js";
import { applyCpuPolicy, exposedFeatures, parseFeatureSwitches, type CpuPolicyResult } from "./policy.js";
import { loadCpuTemplate, parseCpuTemplate } from "./templates.js";

const baseline = loadCpuTemplate("baseline");
const hostT = loadCpuTemplate("host");

function apply(fx: CpuidFixture, template = hostT, switches = "", vcpus = 1): CpuPolicyResult {
  return applyCpuPolicy(fx.kvmSupported, {
    template,
    switches: switches === "" ? [] : parseFeatureSwitches(switches),
    host: { supported: fx.kvmSupported, kernelRelease: fx.kernel, hostCpuid: fx.host },
    vcpus,
  });
}
function ok(r: CpuPolicyResult) {
  if (!r.ok) throw new Error(`refused: ${r.refusal.message}`);
  return r.entries;
}
function refused(r: CpuPolicyResult) {
  if (r.ok) throw new Error("expected a refusal");
  return r.refusal;
}
const sub = (entries: readonly { function: number; index: number }[]): number[] => entries.filter((e) => e.function === 0xd && e.index >= 2).map((e) => e.index).sort((a, b) => a - b);
const oneSentence = (s: string): void => {
  expect(s.endsWith(".")).toBe(true);
  expect(s.slice(0, -1)).not.toMatch(/\.\s+[A-Z]/);
};

describe("CET refusals name the missing input", () => {
  it("this machine: SHSTK is not in KVM_GET_SUPPORTED_CPUID (and the host CPU lacks it)", () => {
    const r = refused(apply(fixture("this-machine"), hostT, "+shstk"));
    expect(r.feature).toBe("shstk");
    expect(r.missing).toBe("SHSTK in KVM_GET_SUPPORTED_CPUID");
    expect(r.message).toBe("+shstk needs SHSTK (CPUID.7.0:ECX[7]) in KVM_GET_SUPPORTED_CPUID, and this host's KVM does not report it (the host CPU does not have it either).");
    oneSentence(r.message);
  });
  it("TCG L1: the host kernel (6.12) is older than 6.18", () => {
    const r = refused(apply(fixture("tcg-l1-epyc"), hostT, "+shstk"));
    expect(r.missing).toBe("host kernel 6.18");
    expect(r.message).toContain("this host runs 6.12.117+deb12-cloud-amd64");
    oneSentence(r.message);
  });
  it("IBT on AMD is refused before anything else", () => {
    for (const name of ["zen4-genoa", "tcg-l1-epyc"] as const) {
      const r = refused(apply(fixture(name), hostT, "+ibt"));
      expect(r.missing).toBe("an Intel CPU");
      oneSentence(r.message);
    }
  });
  it("XSAVES absent in KVM's table", () => {
    const fx = fixture("sapphire-rapids");
    const noXsaves = fx.kvmSupported.map((e) => (e.function === 0xd && e.index === 1 ? { ...e, eax: e.eax & ~8 } : e));
    const r = refused(apply({ ...fx, kvmSupported: noXsaves }, hostT, "+shstk"));
    expect(r.missing).toBe("XSAVES in KVM_GET_SUPPORTED_CPUID");
  });
  it("CET_U/CET_S absent from KVM's XSS", () => {
    const fx = fixture("sapphire-rapids");
    const noXss = fx.kvmSupported.map((e) => (e.function === 0xd && e.index === 1 ? { ...e, ecx: 0 } : e));
    expect(refused(apply({ ...fx, kvmSupported: noXss }, hostT, "+ibt")).missing).toBe("CET_U and CET_S in KVM's supported XSS");
  });
  it("the same Sapphire Rapids table on a 6.12 kernel is refused for the kernel", () => {
    expect(refused(apply({ ...fixture("sapphire-rapids"), kernel: "6.12.58" }, hostT, "+shstk")).missing).toBe("host kernel 6.18");
  });
});

describe("CET exposure", () => {
  it("Zen 4, 6.18: +shstk sets CPUID.7.0:ECX[7], CET_U|CET_S in 0xD.1:ECX and subleaves 11 and 12", () => {
    const e = ok(apply(fixture("zen4-genoa"), baseline, "+xsaves,+shstk"));
    expect(hasBit(e, featureByName("shstk")!.bit!)).toBe(true);
    expect(hasBit(e, featureByName("ibt")!.bit!)).toBe(false);
    expect(findEntry(e, 0xd, 1)!.ecx).toBe(XSS_CET_U | XSS_CET_S);
    expect(sub(e)).toEqual([11, 12]);
    expect(findEntry(e, 0xd, 0)!.eax).toBe(3); // baseline: x87 and SSE only
  });
  it("Sapphire Rapids: +shstk,+ibt on host passthrough", () => {
    const e = ok(apply(fixture("sapphire-rapids"), hostT, "+shstk,+ibt"));
    expect(exposedFeatures(e)).toEqual(expect.arrayContaining(["shstk", "ibt", "cet_u", "cet_s", "xsaves", "avx512f"]));
    expect(sub(e)).toEqual([2, 5, 6, 7, 9, 11, 12, 17, 18]);
  });
  it("an explicit +shstk whose requirement is off is refused (baseline has no XSAVES)", () => {
    const r = refused(apply(fixture("sapphire-rapids"), baseline, "+shstk"));
    expect(r.message).toBe("+shstk needs xsaves, which this configuration does not expose (add +xsaves).");
  });
  it("-xsaves on host passthrough takes CET with it: no CET bits, no subleaves 11/12", () => {
    const r = apply(fixture("sapphire-rapids"), hostT, "-xsaves");
    const e = ok(r);
    expect(exposedFeatures(e)).not.toContain("shstk");
    expect(exposedFeatures(e)).not.toContain("ibt");
    expect(findEntry(e, 0xd, 1)!.ecx & (XSS_CET_U | XSS_CET_S)).toBe(0);
    expect(sub(e)).not.toContain(11);
    expect(r.ok && r.notes.join("\n")).toContain("shstk turned off: it needs xsaves");
  });
  it("-shstk,-ibt removes the CET XSS components", () => {
    const e = ok(apply(fixture("sapphire-rapids"), hostT, "-shstk,-ibt"));
    expect(findEntry(e, 0xd, 1)!.ecx & (XSS_CET_U | XSS_CET_S)).toBe(0);
    expect(sub(e)).toEqual([2, 5, 6, 7, 9, 17, 18]);
  });
});

describe("templates", () => {
  it.each(FIXTURE_NAMES)("baseline on %s: x86-64-v2 where KVM has it, x2APIC, no AVX, XCR0 = x87|SSE", (name) => {
    const fx = fixture(name);
    const e = ok(apply(fx, baseline));
    const got = exposedFeatures(e);
    expect(got).toContain("x2apic");
    // This machine's kvm_pvm reports no SSE3/SSE4 at all (its CPL0 code runs in KVM's emulator): the template is a ceiling.
    for (const f of ["sse4_2", "popcnt", "cx16", "lahf_lm", "lm", "nx"]) expect([f, got.includes(f)]).toEqual([f, hasBit(fx.kvmSupported, featureByName(f)!.bit!)]);
    if (name !== "this-machine") for (const f of ["sse4_2", "popcnt", "cx16", "lahf_lm", "lm", "nx"]) expect(got).toContain(f);
    for (const f of ["avx", "avx2", "avx512f", "shstk", "ibt", "xsaves", "svm", "vmx"]) expect(got).not.toContain(f);
    // Without XSAVE in KVM's table (this machine) no XSAVE component is left at all.
    expect(findEntry(e, 0xd, 0)!.eax).toBe(hasBit(fx.kvmSupported, featureByName("xsave")!.bit!) ? 3 : 0);
    expect(sub(e)).toEqual([]);
  });
  it.each(["tcg-l1-epyc", "zen4-genoa", "sapphire-rapids"] as const)("host on %s (a consistent KVM table) is KVM's table, unchanged", (name) => {
    const fx = fixture(name);
    expect(ok(apply(fx, hostT))).toEqual(fx.kvmSupported);
  });
  it("host on this machine: kvm_pvm reports XCR0 components without XSAVE, so CPUID.0xD is emptied (kvm_pvm puts it back)", () => {
    const e = ok(apply(fixture("this-machine"), hostT));
    expect(findEntry(e, 0xd, 0)!.eax).toBe(0);
    expect(sub(e)).toEqual([]);
  });
  it("+avx on baseline brings the AVX XSAVE component back from KVM's table", () => {
    const e = ok(apply(fixture("sapphire-rapids"), baseline, "+avx"));
    expect(findEntry(e, 0xd, 0)!.eax).toBe(7);
    expect(sub(e)).toEqual([2]);
  });
  it.each(FIXTURE_NAMES)("host on %s passes KVM's table through, x2APIC included", (name) => {
    const fx = fixture(name);
    const e = ok(apply(fx, hostT));
    expect(hasBit(e, featureByName("x2apic")!.bit!)).toBe(true);
    for (const f of CPU_FEATURES) if (f.kind === "cpuid" && f.name !== "cet_u" && f.name !== "cet_s") expect([f.name, hasBit(e, f.bit!)]).toEqual([f.name, hasBit(fx.kvmSupported, f.bit!)]);
  });
  it("a template from a JSON file: only its features survive in its masked registers", () => {
    const file = join(mkdtempSync(join(tmpdir(), "ts-vmm-tpl-")), "tiny.json");
    writeFileSync(file, JSON.stringify({ name: "tiny", features: ["x2apic", "sse4_2"], mask: [{ function: 1, index: 0, register: "ecx" }] }));
    const t = loadCpuTemplate(file);
    expect(t.name).toBe("tiny");
    const fx = fixture("sapphire-rapids");
    const e = ok(apply(fx, t));
    expect(findEntry(e, 1, 0)!.ecx).toBe((1 << 21) | (1 << 20));
    // Leaf 7 is not masked, but what needs the masked-out AVX and XSAVE goes with them.
    const r = apply(fx, t);
    expect(r.ok && r.notes).toEqual(expect.arrayContaining(["avx2 turned off: it needs avx, which is not exposed", "xsaves turned off: it needs xsave, which is not exposed", "shstk turned off: it needs xsaves, which is not exposed"]));
    expect(exposedFeatures(e)).toEqual(expect.arrayContaining(["bmi2", "smep", "x2apic", "sse4_2"]));
    expect(exposedFeatures(e)).not.toContain("avx512f");
    expect(() => loadCpuTemplate(join(tmpdir(), "no-such-template.json"))).toThrow(expect.objectContaining({ code: "FileNotReadable" }) as Error);
  });
  it("a template file with an unknown feature or a bad register is InvalidConfig naming it", () => {
    expect(() => parseCpuTemplate({ name: "x", features: ["warp-drive"] })).toThrow(/unknown CPUID feature "warp-drive"/);
    expect(() => parseCpuTemplate({ name: "x", mask: [{ function: 1, register: "esi" }] })).toThrow(/mask\[0\]\.register/);
    expect(() => parseCpuTemplate({ name: "x", xsave: { xcr0Mask: "0xZZ" } })).toThrow(/xsave\.xcr0Mask/);
    expect(() => loadCpuTemplate("turbo")).toThrow(/unknown CPU template "turbo": use baseline or host/);
  });
});

describe("switches", () => {
  it("-x2apic hides x2APIC; with 256 vCPUs it is refused", () => {
    expect(hasBit(ok(apply(fixture("zen4-genoa"), hostT, "-x2apic")), featureByName("x2apic")!.bit!)).toBe(false);
    const r = refused(apply(fixture("zen4-genoa"), hostT, "-x2apic", 256));
    expect(r.message).toContain("256 vCPUs need x2APIC");
  });
  it("+avx512f here: KVM does not report it although the host CPU has it", () => {
    expect(refused(apply(fixture("this-machine"), hostT, "+avx512f")).message).toBe("+avx512f needs CPUID.7.0:EBX[16] in KVM_GET_SUPPORTED_CPUID, and this host's KVM does not report it although the host CPU has it.");
  });
  it("acceleration and derived features are not per-VM switches", () => {
    expect(refused(apply(fixture("zen4-genoa"), hostT, "+avic")).message).toMatch(/^\+avic cannot be switched per VM: .* kvm_amd's avic module parameter/);
    expect(refused(apply(fixture("zen4-genoa"), hostT, "-cet_u")).message).toBe("-cet_u follows the CET features: switch -shstk or -ibt instead.");
  });
  it("a bit that normalization added (the hypervisor bit, absent from the L1's KVM table) can be switched", () => {
    const fx = fixture("tcg-l1-epyc");
    const hv = featureByName("hypervisor")!.bit!;
    expect(hasBit(fx.kvmSupported, hv)).toBe(false);
    const normalized = withBit(fx.kvmSupported, hv, true).entries;
    const host = { supported: fx.kvmSupported, kernelRelease: fx.kernel };
    const on = applyCpuPolicy(normalized, { template: baseline, switches: parseFeatureSwitches("+hypervisor"), host });
    expect(on.ok && hasBit(on.entries, hv)).toBe(true);
    const off = applyCpuPolicy(normalized, { template: hostT, switches: parseFeatureSwitches("-hypervisor"), host });
    expect(off.ok && hasBit(off.entries, hv)).toBe(false);
    expect(refused(applyCpuPolicy(fx.kvmSupported, { template: hostT, switches: parseFeatureSwitches("+hypervisor"), host })).missing).toBe("hypervisor in KVM_GET_SUPPORTED_CPUID");
  });
  it("KVM's paravirtual features (leaf 0x40000001) are switched on the normalized table, as QEMU's kvm-pv-* flags", () => {
    const fx = fixture("tcg-l1-epyc");
    const normalized = normalizeCpuid(fx.kvmSupported, { vcpuCount: 2, vcpuId: 0 });
    const pv = (e: Parameters<typeof findEntry>[0]): number => findEntry(e, 0x40000001, 0)!.eax;
    const host = { supported: fx.kvmSupported, kernelRelease: fx.kernel };
    // The recorded L1's KVM offers PV unhalt (7) and PV IPIs (11).
    expect(pv(normalized) & ((1 << 7) | (1 << 11))).toBe((1 << 7) | (1 << 11));
    const r = applyCpuPolicy(normalized, { template: hostT, switches: parseFeatureSwitches("-kvm-pv-unhalt,-kvm-pv-ipi"), host });
    const after = ok(r);
    expect(pv(after)).toBe(pv(normalized) & ~((1 << 7) | (1 << 11)));
    expect(exposedFeatures(after)).not.toContain("kvm-pv-ipi");
    expect(exposedFeatures(ok(applyCpuPolicy(normalized, { template: hostT, switches: [], host })))).toEqual(expect.arrayContaining(["kvmclock", "kvm-pv-unhalt", "kvm-pv-ipi"]));
    // -kvm-steal-time takes PV TLB flush with it (it reads the preempted flag in the steal-time area).
    const st = applyCpuPolicy(normalized, { template: hostT, switches: parseFeatureSwitches("-kvm-steal-time"), host });
    expect(st.ok && exposedFeatures(st.entries)).not.toContain("kvm-pv-tlb-flush");
  });
  it("-apic is refused: KVM derives that bit from the in-kernel LAPIC", () => {
    expect(refused(apply(fixture("zen4-genoa"), hostT, "-apic")).missing).toBe("a user-space local APIC");
  });
  it("parse errors name the item", () => {
    expect(() => parseFeatureSwitches("+shstk,,-x2apic")).toThrow(VmmError);
    expect(() => parseFeatureSwitches("+warp")).toThrow(/unknown feature "warp"/);
    expect(parseFeatureSwitches(" +shstk , -x2apic,avx")).toEqual([{ name: "shstk", on: true }, { name: "x2apic", on: false }, { name: "avx", on: true }]);
  });
  it("invariant: no template and no single switch ever exposes a bit KVM does not report", () => {
    let accepted = 0;
    const violations: string[] = [];
    for (const name of FIXTURE_NAMES) {
      const fx = fixture(name);
      for (const t of [baseline, hostT]) {
        for (const f of CPU_FEATURES.filter((x) => x.kind === "cpuid")) {
          for (const sign of ["+", "-"]) {
            const r = apply(fx, t, `${sign}${f.name}`);
            if (!r.ok) continue;
            accepted++;
            for (const g of CPU_FEATURES) if (g.kind === "cpuid" && hasBit(r.entries, g.bit!) && !hasBit(fx.kvmSupported, g.bit!)) violations.push(`${name} ${t.name} ${sign}${f.name}: ${g.name}`);
          }
        }
      }
    }
    expect(violations).toEqual([]);
    expect(accepted).toBeGreaterThan(500);
  });
});
