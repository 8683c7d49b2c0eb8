// CPUID read back from real KVM (KVM_GET_CPUID2) for every template and
// switch, and the refusals on this host's real KVM_GET_SUPPORTED_CPUID.
import { existsSync } from "node:fs";
import { release } from "node:os";
import { describeKvm } from "@ts-vmm/test-utils";
import { Kvm, type CpuidEntry } from "@ts-vmm/kvm-ioctls";
import { expect, it } from "vitest";
import {
  CPU_FEATURES, Vmm, VmmError, applyCpuPolicy, featureByName, findEntry, hasBit, loadCpuTemplate, parseFeatureSwitches, readHostCpuid, readCpuinfoFlags, vendorOf,
} from "../src/index.js";
import { SPIN, tinyElf } from "./tiny-elf.js";
import { normalizeCpuid } from "../src/cpu/normalize.js";

const kernel = tinyElf(SPIN);
const key = (e: CpuidEntry): string => `${e.function}.${e.index}`;
const REGS = ["eax", "ebx", "ecx", "edx"] as const;
/** Bits KVM recomputes at run time (kvm_update_cpuid_runtime): OSXSAVE, the APIC bit, OSPKE, and the XSAVE sizes of 0xD.0/0xD.1 EBX. */
function dynamicMask(e: CpuidEntry, reg: (typeof REGS)[number]): number {
  if (e.function === 1 && reg === "ecx") return 1 << 27;
  if (e.function === 1 && reg === "edx") return 1 << 9;
  // kvm_pvm returns the APIC id of the physical CPU the vCPU thread last ran on
  // (1.EBX[31:24], the x2APIC id in 0xB/0x1F EDX, 0x8000001E EAX), not the one we set.
  if (PVM && e.function === 1 && reg === "ebx") return 0xff00_0000;
  if (PVM && (e.function === 0xb || e.function === 0x1f) && reg === "edx") return 0xffff_ffff;
  if (PVM && e.function === 0x8000001e && reg === "eax") return 0xffff_ffff;
  if (e.function === 7 && e.index === 0 && reg === "ecx") return 1 << 4;
  if (e.function === 0xd && e.index <= 1 && reg === "ebx") return 0xffff_ffff;
  return 0;
}
/** kvm_pvm (this CI machine) cannot hide what CPL3 code sees natively: it puts host bits back into leaves 1, 7 and 0xD. */
const PVM = existsSync("/sys/module/kvm_pvm");

/**
 * Compares what KVM holds (KVM_GET_CPUID2) with the table we set. Exact, except
 * for bits KVM recomputes, all-zero leaves KVM may drop, and (on kvm_pvm only)
 * host bits KVM forces on (which must be host bits) and bits it drops, both
 * returned by name.
 */
function compare(got: readonly CpuidEntry[], want: readonly CpuidEntry[], hostCpuid: readonly CpuidEntry[]): { forced: string[]; dropped: string[] } {
  const forced: string[] = [];
  const dropped: string[] = [];
  const nameOf = (w: CpuidEntry, r: string, b: number): string =>
    CPU_FEATURES.find((f) => f.bit && f.bit.function === w.function && f.bit.index === w.index && f.bit.register === r && f.bit.bit === b)?.name ?? `${key(w)}:${r}[${b}]`;
  for (const w of want) {
    const g = got.find((x) => x.function === w.function && x.index === w.index);
    if (!g) {
      expect([key(w), REGS.every((r) => w[r] === 0)]).toEqual([key(w), true]);
      continue;
    }
    expect([key(w), g.flags]).toEqual([key(w), w.flags]);
    for (const r of REGS) {
      const m = ~dynamicMask(w, r) >>> 0;
      const extra = (g[r] & ~w[r] & m) >>> 0;
      const lost = (w[r] & ~g[r] & m) >>> 0;
      if (!PVM) expect([key(w), r, g[r] & m, extra, lost]).toEqual([key(w), r, w[r] & m, 0, 0]);
      const h = findEntry(hostCpuid, w.function, w.index)?.[r] ?? 0;
      expect([key(w), r, "forced bits that are not host bits", (extra & ~h) >>> 0]).toEqual([key(w), r, "forced bits that are not host bits", 0]);
      for (let b = 0; b < 32; b++) {
        if ((extra >>> b) & 1) forced.push(nameOf(w, r, b));
        if ((lost >>> b) & 1) dropped.push(nameOf(w, r, b));
      }
    }
  }
  for (const g of got) expect([key(g), want.some((w) => w.function === g.function && w.index === g.index)]).toEqual([key(g), true]);
  return { forced, dropped };
}

describeKvm("CPU policy on this host's KVM", () => {
  const kvm = new Kvm();
  const supported = kvm.getSupportedCpuid();
  // As Vmm.create: TSC-deadline counts as supported with KVM_CAP_TSC_DEADLINE_TIMER.
  const host = { supported, kernelRelease: release(), tscDeadlineCap: kvm.checkExtension(Kvm.Cap.TSC_DEADLINE_TIMER) > 0 };
  // As Vmm.create with its default split irqchip: MSI_EXT_DEST_ID where KVM has the x2APIC API (32-bit ids, no broadcast quirk).
  const probeVm = kvm.createVm();
  const msiExtDestId = (probeVm.checkExtension(Kvm.Cap.X2APIC_API) & 3) === 3;
  probeVm.close();
  kvm.close();
  const hostCpuid = readHostCpuid() ?? [];

  // The TSC rate goes into 0x40000010 through normalizeCpuid; read it once as Vmm.create does.
  const tscKhz = ((): number | undefined => {
    const vmm = Vmm.create({ kernel, memMiB: 16 });
    try {
      return vmm.vcpuSetup[0]!.cpuid.find((e) => e.function === 0x4000_0010)?.eax;
    } finally {
      vmm.close();
    }
  })();
  const readBack = (cpuTemplate: string, cpuFeatures = ""): CpuidEntry[] => {
    const vmm = Vmm.create({ kernel, memMiB: 16, cpuTemplate, ...(cpuFeatures ? { cpuFeatures } : {}) });
    try {
      return vmm.readCpuid(0);
    } finally {
      vmm.close();
    }
  };
  // What Vmm.create sets: the normalized table of vCPU 0 of 1, then the policy.
  const normalized = normalizeCpuid(supported, { vcpuCount: 1, vcpuId: 0, ...(tscKhz !== undefined ? { tscKhz } : {}), tscDeadline: host.tscDeadlineCap, msiExtDestId });
  const expected = (t: string, s = ""): CpuidEntry[] => {
    const r = applyCpuPolicy(normalized, { template: loadCpuTemplate(t), switches: s ? parseFeatureSwitches(s) : [], host });
    if (!r.ok) throw new Error(r.refusal.message);
    return r.entries;
  };

  // Every switch this KVM can honour: -name and +name for each feature it supports (CET aside: tested below).
  const switches = CPU_FEATURES.filter((f) => f.kind === "cpuid" && f.name !== "cet_u" && f.name !== "cet_s" && f.name !== "shstk" && f.name !== "ibt" && hasBit(supported, f.bit!))
    .flatMap((f) => (f.name === "apic" ? ["+apic"] : [`-${f.name}`, `+${f.name}`])); // -apic is refused (KVM derives the bit)

  it.each(["host", "baseline"])("template %s: KVM_GET_CPUID2 holds the policy's table", (t) => {
    const got = readBack(t);
    const { forced, dropped } = compare(got, expected(t), hostCpuid);
    expect(hasBit(got, featureByName("x2apic")!.bit!)).toBe(true); // x2APIC by default
    if (!PVM) expect([forced, dropped]).toEqual([[], []]);
  });

  it(`every switch KVM can honour, on both templates, reads back as the policy says (${switches.length * 2} VMs)`, () => {
    expect(switches.length).toBeGreaterThan(4);
    for (const t of ["host", "baseline"]) {
      for (const s of switches) {
        const want = expected(t, s);
        const got = readBack(t, s);
        const { forced, dropped } = compare(got, want, hostCpuid);
        const name = s.slice(1);
        const bit = featureByName(name)!.bit!;
        if (s.startsWith("-")) expect([t, s, hasBit(want, bit)]).toEqual([t, s, false]);
        // A switch that KVM does not honour is only acceptable on kvm_pvm, and only as a forced host bit.
        expect([t, s, hasBit(got, bit)]).toEqual([t, s, (hasBit(want, bit) && !dropped.includes(name)) || forced.includes(name)]);
      }
    }
  }, 120_000);

  it("-x2apic reads back without CPUID.1:ECX[21] (kvm_pvm honours this one too)", () => {
    expect(hasBit(readBack("host", "-x2apic"), featureByName("x2apic")!.bit!)).toBe(false);
    expect(hasBit(readBack("baseline", "-x2apic"), featureByName("x2apic")!.bit!)).toBe(false);
  });

  it("-tsc-deadline and -hypervisor read back cleared", () => {
    for (const name of ["tsc-deadline", "hypervisor"]) {
      const bit = featureByName(name)!.bit!;
      if (!hasBit(supported, bit)) continue;
      expect([name, hasBit(readBack("host", `-${name}`), bit)]).toEqual([name, false]);
    }
  });

  it("+shstk on this host is refused with one sentence naming what is missing", () => {
    const shstk = featureByName("shstk")!.bit!;
    if (hasBit(supported, shstk)) {
      // A CET-capable host: the switch must read back instead, with CET_U|CET_S.
      const got = readBack("host", "+shstk");
      expect(hasBit(got, shstk)).toBe(true);
      expect((findEntry(got, 0xd, 1)?.ecx ?? 0) & 0x1800).toBe(0x1800);
      return;
    }
    let err: unknown;
    try {
      readBack("host", "+shstk");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VmmError);
    expect((err as VmmError).code).toBe("CpuFeatureRefused");
    expect((err as VmmError).message).toMatch(/^\+shstk needs (SHSTK \(CPUID\.7\.0:ECX\[7\]\) in KVM_GET_SUPPORTED_CPUID|a host kernel 6\.18)[^.]*\.$/);
  });

  it("the host CPUID reader agrees with /proc/cpuinfo and with KVM's vendor", () => {
    const flags = readCpuinfoFlags();
    expect(hostCpuid.length).toBeGreaterThan(10);
    expect(flags).toBeDefined();
    expect(vendorOf(hostCpuid)).toBe(vendorOf(supported));
    for (const name of ["x2apic", "xsave", "avx2", "lm", "nx", "sse4_2", "hypervisor"]) {
      const f = featureByName(name)!;
      expect([name, hasBit(hostCpuid, f.bit!)]).toEqual([name, (f.cpuinfo ?? [name]).some((n) => flags!.includes(n))]);
    }
  });
});
