// The KVM_GET_CPUID2 read-back recorded in the nested tier's L1 (kvm-amd on
// QEMU's emulated SVM, a hardware-style KVM) by
// scripts/cpuid-recorder/run-in-tcg-l1.sh, checked against today's policy.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { CpuidEntry } from "@ts-vmm/kvm-ioctls";
import { describe, expect, it } from "vitest";
import { applyCpuPolicy, parseFeatureSwitches } from "./policy.js";
import type { CpuFeatureReport } from "./report.js";
import { loadCpuTemplate } from "./templates.js";

interface Diff { leaf: number; index: number; reg?: "eax" | "ebx" | "ecx" | "edx"; policy?: number; kvm?: number; missing?: true; extra?: true }
interface Case { template: string; switches: string; refusal?: string; setError?: string; entries?: number; policyDigest?: string; diffs?: Diff[] }
interface Recording { kernel: string; tscDeadlineCap: boolean; supported: CpuidEntry[]; cases: Case[]; report: CpuFeatureReport; shstkRun: string; source: string }

const rec = JSON.parse(readFileSync(new URL("../../test/fixtures/cpuid/tcg-l1-readback.json", import.meta.url), "utf8")) as Recording;

/** Bits KVM recomputes at run time (kvm_update_cpuid_runtime): the XSAVE sizes, OSXSAVE, the APIC bit, OSPKE. */
function dynamic(d: Diff): boolean {
  const changed = ((d.policy ?? 0) ^ (d.kvm ?? 0)) >>> 0;
  if (d.leaf === 0xd && d.index <= 1 && d.reg === "ebx") return true;
  if (d.leaf === 1 && d.reg === "ecx") return changed === 1 << 27;
  if (d.leaf === 1 && d.reg === "edx") return changed === 1 << 9;
  if (d.leaf === 7 && d.index === 0 && d.reg === "ecx") return changed === 1 << 4;
  return false;
}

describe("read-back in the nested tier (recorded)", () => {
  it("the recording is of a 6.12 kvm-amd and covers both templates and every switch", () => {
    expect(rec.source).toContain("-cpu EPYC,+svm,+npt");
    expect(rec.kernel).toMatch(/^6\.12\./);
    expect(new Set(rec.cases.map((c) => c.template))).toEqual(new Set(["host", "baseline"]));
    expect(rec.cases.length).toBeGreaterThan(300);
  });

  it("today's policy makes the same decisions and the same tables as the recorded run (else re-record)", () => {
    const host = { supported: rec.supported, kernelRelease: rec.kernel, tscDeadlineCap: rec.tscDeadlineCap };
    for (const c of rec.cases) {
      const r = applyCpuPolicy(rec.supported, { template: loadCpuTemplate(c.template), switches: c.switches ? parseFeatureSwitches(c.switches) : [], host });
      const label = `${c.template} ${c.switches || "(none)"}`;
      if (!r.ok) {
        expect([label, r.refusal.message]).toEqual([label, c.refusal]);
        continue;
      }
      expect([label, c.refusal]).toEqual([label, undefined]);
      expect([label, createHash("sha256").update(JSON.stringify(r.entries)).digest("hex")]).toEqual([label, c.policyDigest]);
    }
  });

  it("kvm-amd kept every accepted table exactly, but for the bits it recomputes", () => {
    const accepted = rec.cases.filter((c) => c.refusal === undefined);
    expect(accepted.length).toBeGreaterThan(250);
    for (const c of accepted) {
      expect([c.template, c.switches, c.setError]).toEqual([c.template, c.switches, undefined]);
      for (const d of c.diffs ?? []) expect([c.template, c.switches, d, dynamic(d)]).toEqual([c.template, c.switches, d, true]);
    }
  });

  it("+shstk there is refused for the kernel version, exit status 2", () => {
    expect(rec.shstkRun).toBe("ts-vmm: +shstk needs a host kernel 6.18 or later (KVM virtualizes CET from Linux 6.18), and this host runs 6.12.117+deb12-cloud-amd64.\nexit status 2");
  });

  it("cpu-features there: x2APIC and TSC deadline exposed (KVM emulates both; the EPYC model has neither), no AVIC", () => {
    const row = (n: string) => rec.report.features.find((f) => f.name === n)!;
    expect(rec.report.hostSource).toBe("cpuid");
    expect(row("x2apic")).toMatchObject({ hostCpu: false, kvm: true, exposed: true });
    expect(row("tsc-deadline")).toMatchObject({ hostCpu: false, kvm: true, exposed: true });
    expect(row("avic")).toMatchObject({ hostCpu: false, kvm: false, exposed: false });
    expect(rec.report.kvmChanged).toEqual([]);
    expect(rec.report.moduleParams["kvm_amd.avic"]).toBe("N");
  });
});
