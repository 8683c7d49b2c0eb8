import { describe, expect, it } from "vitest";
import { FIXTURE_NAMES, fixture } from "../../test/cpu-fixtures.js";
import { vmInterruptConfig } from "../vmm.js";
import { apicvInhibits, configInhibits, type AccelerationHost, type InterruptConfig } from "./inhibits.js";
import { applyCpuPolicy, parseFeatureSwitches } from "./policy.js";
import { REPORT_FEATURES, cpuFeatureReport, formatCpuFeatureReport } from "./report.js";
import { loadCpuTemplate } from "./templates.js";

const split: InterruptConfig = { irqchip: "split", pit: { reinject: false }, extInt: false, vcpus: 2, x2apic: true, nestedVirt: false, hypervSynic: false, guestDebugBlockIrq: false, sev: false };
const amd: AccelerationHost = { vendor: "amd", enabled: true, enabledBy: "kvm_amd.avic", x2avic: true };
const status = (c: InterruptConfig, h = amd): Record<string, string> => Object.fromEntries(apicvInhibits(c, h).map((r) => [r.inhibit, r.status]));

describe("APICv/AVIC inhibits", () => {
  it("split irqchip, PIT without reinjection, x2APIC: nothing raised by the configuration", () => {
    expect(configInhibits(apicvInhibits(split, amd))).toEqual([]);
  });
  it("PIT reinjection raises PIT_REINJ on AMD and is n/a on Intel", () => {
    expect(status({ ...split, pit: { reinject: true } }).PIT_REINJ).toBe("raised");
    expect(status({ ...split, pit: { reinject: true } }, { vendor: "intel", enabled: true, enabledBy: "kvm_intel.enable_apicv", x2avic: undefined }).PIT_REINJ).toBe("n/a");
  });
  it("a user-space LAPIC raises ABSENT; ExtINT makes IRQWIN transient", () => {
    expect(status({ ...split, irqchip: "none" }).ABSENT).toBe("raised");
    expect(status({ ...split, extInt: true }).IRQWIN).toBe("transient");
  });
  it("PHYSICAL_ID_TOO_BIG: 255 vCPUs fit xAVIC, 256 need x2AVIC, 513 fit neither", () => {
    expect(status({ ...split, vcpus: 255, x2apic: false }).PHYSICAL_ID_TOO_BIG).toBe("no");
    expect(status({ ...split, vcpus: 256, x2apic: false }).PHYSICAL_ID_TOO_BIG).toBe("raised");
    expect(status({ ...split, vcpus: 256 }).PHYSICAL_ID_TOO_BIG).toBe("no");
    expect(status({ ...split, vcpus: 256 }, { ...amd, x2avic: false }).PHYSICAL_ID_TOO_BIG).toBe("raised");
    expect(status({ ...split, vcpus: 513 }).PHYSICAL_ID_TOO_BIG).toBe("raised");
  });
  it("DISABLED follows the module parameter, and says why", () => {
    const rows = apicvInhibits(split, { ...amd, enabled: false });
    expect(rows.find((r) => r.inhibit === "DISABLED")).toMatchObject({ status: "raised", reason: "kvm_amd.avic is off" });
    expect(apicvInhibits(split, { ...amd, enabled: undefined }).find((r) => r.inhibit === "DISABLED")!.reason).toBe("kvm_amd is not loaded, so KVM here has no APIC acceleration");
  });
  it("the VMM's own configuration raises nothing but IRQWIN, and that only while it uses the in-kernel PIC", () => {
    for (const vcpus of [1, 2, 255, 256, 511]) {
      const cfg = vmInterruptConfig(vcpus, true, false);
      expect([vcpus, configInhibits(apicvInhibits(cfg, amd)).map((r) => r.inhibit)]).toEqual([vcpus, cfg.extInt ? ["IRQWIN"] : []]);
    }
  });
});

describe("cpu-features report on the recorded tables", () => {
  const report = (name: (typeof FIXTURE_NAMES)[number], switches = "", interrupts = split) => {
    const fx = fixture(name);
    const host = { supported: fx.kvmSupported, kernelRelease: fx.kernel, hostCpuid: fx.host };
    const r = applyCpuPolicy(fx.kvmSupported, { template: loadCpuTemplate("host"), switches: switches ? parseFeatureSwitches(switches) : [], host });
    const module = Object.keys(fx.moduleParams)[0]?.split(".")[0];
    return cpuFeatureReport({
      host, modules: { module: module ?? "kvm_pvm", params: fx.moduleParams },
      vm: r.ok ? { entries: r.entries } : { refusal: r.refusal }, template: "host", switches, interrupts,
    });
  };
  const row = (r: ReturnType<typeof report>, name: string) => r.features.find((f) => f.name === name)!;

  it.each(FIXTURE_NAMES)("%s: every feature has its three columns", (name) => {
    const r = report(name);
    expect(r.features.map((f) => f.name)).toEqual(REPORT_FEATURES);
    for (const f of r.features) for (const k of ["hostCpu", "kvm", "exposed"] as const) expect([f.name, k, typeof f[k] === "boolean" || f[k] === null]).toEqual([f.name, k, true]);
    expect(r.inhibits).toHaveLength(13);
    expect(r.cetStateMsrs).toEqual(["0xda0", "0x6a0", "0x6a2", "0x6a4", "0x6a5", "0x6a6", "0x6a7", "0x6a8"]);
    expect(r.guestSspRegId).toBe("0x2030000300000000");
    expect(formatCpuFeatureReport(r)).toContain("APICv/AVIC inhibits (raised by this configuration: none)");
  });
  it("this machine: no CET anywhere, x2APIC exposed, no vendor KVM module so no acceleration", () => {
    const r = report("this-machine");
    expect(row(r, "shstk")).toMatchObject({ hostCpu: false, kvm: false, exposed: false });
    expect(row(r, "xsaves")).toMatchObject({ hostCpu: true, kvm: false, exposed: false });
    expect(row(r, "x2apic")).toMatchObject({ hostCpu: true, kvm: true, exposed: true });
    expect(row(r, "apicv")).toMatchObject({ kvm: null, exposed: null });
    expect(r.inhibits.find((i) => i.inhibit === "DISABLED")!.status).toBe("raised");
  });
  it("this machine with +shstk: the report carries the refusal and no exposed column", () => {
    const r = report("this-machine", "+shstk");
    expect(r.refusal?.missing).toBe("SHSTK in KVM_GET_SUPPORTED_CPUID");
    expect(row(r, "x2apic").exposed).toBeNull();
  });
  it("TCG L1: the host CPU (EPYC model) has no AVIC; kvm_amd.avic=N", () => {
    const r = report("tcg-l1-epyc");
    expect(row(r, "avic")).toMatchObject({ hostCpu: false, kvm: false, exposed: false });
    expect(row(r, "shstk").note).toContain("from Linux 6.18");
  });
  it("Zen 4: shstk and guest_ssp exposed, ibt not, AVIC and x2AVIC accelerate this VM", () => {
    const r = report("zen4-genoa");
    expect(row(r, "shstk")).toMatchObject({ hostCpu: true, kvm: true, exposed: true });
    expect(row(r, "guest_ssp")).toMatchObject({ kvm: true, exposed: true });
    expect(row(r, "ibt")).toMatchObject({ hostCpu: false, kvm: false, exposed: false });
    expect(row(r, "cet_s")).toMatchObject({ hostCpu: true, kvm: true, exposed: true });
    expect(row(r, "avic")).toMatchObject({ hostCpu: true, kvm: true, exposed: true });
    expect(row(r, "x2avic")).toMatchObject({ hostCpu: true, kvm: true, exposed: true });
  });
  it("Zen 4 with PIT reinjection: PIT_REINJ raised and AVIC no longer accelerates this VM", () => {
    const r = report("zen4-genoa", "", { ...split, pit: { reinject: true } });
    expect(r.raisedByConfig).toEqual(["PIT_REINJ"]);
    expect(row(r, "avic").exposed).toBe(false);
  });
  it("Sapphire Rapids: shstk, ibt, APICv and IPIv", () => {
    const r = report("sapphire-rapids");
    expect(row(r, "ibt")).toMatchObject({ hostCpu: true, kvm: true, exposed: true });
    expect(row(r, "apicv")).toMatchObject({ hostCpu: null, kvm: true, exposed: true });
    expect(row(r, "ipiv")).toMatchObject({ kvm: true, exposed: true });
    expect(row(r, "avic")).toMatchObject({ hostCpu: false, kvm: false });
  });
});
