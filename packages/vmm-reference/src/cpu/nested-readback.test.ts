// The KVM_GET_CPUID2 read-back recorded in the nested tier's L1 (kvm-amd on
// QEMU's emulated SVM, a hardware-style KVM) by
// scripts/cpuid-recorder/run-in-tcg-l1.sh, checked against today's policy.
// test/nested-cpuid.test.ts makes the same checks on a live run.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { checkKeptExactly, checkL1Report, checkSamePolicy, type Recording } from "../../test/nested-checks.js";

const rec = JSON.parse(readFileSync(new URL("../../test/fixtures/cpuid/tcg-l1-readback.json", import.meta.url), "utf8")) as Recording;

describe("read-back in the nested tier (recorded)", () => {
  it("the recording is of a 6.12 kvm-amd and covers both templates and every switch", () => {
    expect(rec.source).toContain("-cpu EPYC,+svm,+npt");
    expect(rec.kernel).toMatch(/^6\.12\./);
    expect(new Set(rec.cases.map((c) => c.template))).toEqual(new Set(["host", "baseline"]));
    expect(rec.cases.length).toBeGreaterThan(300);
  });
  it("today's policy makes the same decisions and the same tables as the recorded run (else re-record)", () => checkSamePolicy(rec));
  it("kvm-amd kept every accepted table exactly, but for the bits it recomputes", () => checkKeptExactly(rec));
  it("+shstk there is refused for the kernel version (exit 2); cpu-features: x2APIC and TSC deadline exposed, no AVIC", () => checkL1Report(rec));
});
