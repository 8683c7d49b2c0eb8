// Checks of a read-back recording made in the nested tier's L1 by
// scripts/cpuid-recorder/run-in-tcg-l1.sh (kvm-amd on QEMU's emulated SVM, a
// hardware-style KVM). Used on the checked-in recording and on a live run.
import { createHash } from "node:crypto";
import type { CpuidEntry } from "@ts-vmm/kvm-ioctls";
import { expect } from "vitest";
import { applyCpuPolicy, parseFeatureSwitches } from "../src/cpu/policy.js";
import type { CpuFeatureReport } from "../src/cpu/report.js";
import { loadCpuTemplate } from "../src/cpu/templates.js";

export interface Diff { leaf: number; index: number; reg?: "eax" | "ebx" | "ecx" | "edx"; policy?: number; kvm?: number; missing?: true; extra?: true }
export interface Case { template: string; switches: string; refusal?: string; setError?: string; entries?: number; policyDigest?: string; diffs?: Diff[] }
export interface Recording { kernel: string; tscDeadlineCap: boolean; supported: CpuidEntry[]; cases: Case[]; report: CpuFeatureReport; shstkRun: string; source: string }


/** Bits KVM recomputes at run time (kvm_update_cpuid_runtime): the XSAVE sizes, OSXSAVE, the APIC bit, OSPKE. */
export function dynamic(d: Diff): boolean {
  const changed = ((d.policy ?? 0) ^ (d.kvm ?? 0)) >>> 0;
  if (d.leaf === 0xd && d.index <= 1 && d.reg === "ebx") return true;
  if (d.leaf === 1 && d.reg === "ecx") return changed === 1 << 27;
  if (d.leaf === 1 && d.reg === "edx") return changed === 1 << 9;
  if (d.leaf === 7 && d.index === 0 && d.reg === "ecx") return changed === 1 << 4;
  return false;
}


/** Today's policy makes the recorded decisions and tables (by digest): else the recording is stale. */
export function checkSamePolicy(rec: Recording): void {
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
}

/** KVM kept every accepted table exactly, but for the bits it recomputes. */
export function checkKeptExactly(rec: Recording): void {
  const accepted = rec.cases.filter((c) => c.refusal === undefined);
  expect(accepted.length).toBeGreaterThan(250);
  for (const c of accepted) {
    expect([c.template, c.switches, c.setError]).toEqual([c.template, c.switches, undefined]);
    for (const d of c.diffs ?? []) expect([c.template, c.switches, d, dynamic(d)]).toEqual([c.template, c.switches, d, true]);
  }
}

/** The L1's cpu-features report and the +shstk refusal (a 6.12 kvm-amd on the EPYC model). */
export function checkL1Report(rec: Recording): void {
  expect(rec.shstkRun).toBe(`ts-vmm: +shstk needs a host kernel 6.18 or later (KVM virtualizes CET from Linux 6.18), and this host runs ${rec.kernel}.\nexit status 2`);
  const row = (n: string) => rec.report.features.find((f) => f.name === n)!;
  expect(rec.report.hostSource).toBe("cpuid");
  expect(row("x2apic")).toMatchObject({ hostCpu: false, kvm: true, exposed: true });
  expect(row("tsc-deadline")).toMatchObject({ hostCpu: false, kvm: true, exposed: true });
  expect(row("avic")).toMatchObject({ hostCpu: false, kvm: false, exposed: false });
  expect(rec.report.kvmChanged).toEqual([]);
  expect(rec.report.moduleParams["kvm_amd.avic"]).toBe("N");
}
