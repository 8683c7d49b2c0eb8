import { afterEach, describe, expect, it } from "vitest";
import { existsSync } from "node:fs";
import { checkNeeds, KVM_DEVICE } from "./needs.js";

describe("checkNeeds", () => {
  const ci = process.env["CI"];
  afterEach(() => {
    if (ci === undefined) delete process.env["CI"];
    else process.env["CI"] = ci;
  });

  it("runs when nothing is needed", () => {
    expect(checkNeeds({})).toEqual({ run: true });
  });

  it("skips a missing tool outside CI, naming it", () => {
    delete process.env["CI"];
    const r = checkNeeds({ tools: ["no-such-tool-ts-vmm"] });
    expect(r.run).toBe(false);
    if (!r.run) {
      expect(r.mustFail).toBe(false);
      expect(r.reason).toContain("no-such-tool-ts-vmm");
    }
  });

  it("skips an absent host feature also under CI=true, naming it; a present one runs; a probe that throws fails under CI", () => {
    process.env["CI"] = "true";
    const r = checkNeeds({ hostFeatures: [{ name: "KVM_CAP_TS_VMM_NOTHING", present: () => false }, { name: "here", present: () => true }] });
    expect(r).toMatchObject({ run: false, mustFail: false });
    if (!r.run) expect(r.reason).toBe("needs KVM_CAP_TS_VMM_NOTHING, which this host's kernel does not offer (no set-up step can add it)");
    expect(checkNeeds({ hostFeatures: [{ name: "here", present: () => true }] })).toEqual({ run: true });
    const thrown = checkNeeds({ hostFeatures: [{ name: "probe", present: () => { throw new Error("EMFILE"); } }] });
    expect(thrown).toMatchObject({ run: false, mustFail: true, reason: "the probe for probe failed: EMFILE" });
    delete process.env["CI"];
    expect(checkNeeds({ hostFeatures: [{ name: "probe", present: () => { throw new Error("EMFILE"); } }] })).toMatchObject({ run: false, mustFail: false });
    process.env["CI"] = "true";
    // Anything else missing still fails under CI first, and the feature is not asked.
    let asked = false;
    const both = checkNeeds({ tools: ["no-such-tool-ts-vmm"], hostFeatures: [{ name: "f", present: () => { asked = true; return false; } }] });
    expect(both).toMatchObject({ run: false, mustFail: true });
    expect(asked).toBe(false);
  });

  it("fails instead of skipping under CI=true", () => {
    process.env["CI"] = "true";
    const r = checkNeeds({ tools: ["no-such-tool-ts-vmm"] });
    expect(r).toMatchObject({ run: false, mustFail: true });
  });

  it("fails a missing /dev/kvm under CI=true instead of skipping it", () => {
    process.env["CI"] = "true";
    const r = checkNeeds({ kvm: true }, "/nonexistent/ts-vmm-kvm");
    expect(r).toMatchObject({ run: false, mustFail: true });
    if (!r.run) expect(r.reason).toContain("/nonexistent/ts-vmm-kvm");
  });

  it("skips a missing /dev/kvm outside CI, naming it", () => {
    delete process.env["CI"];
    const r = checkNeeds({ kvm: true }, "/nonexistent/ts-vmm-kvm");
    expect(r).toMatchObject({ run: false, mustFail: false });
  });

  it("checks /dev/kvm by default", () => {
    delete process.env["CI"];
    const r = checkNeeds({ kvm: true });
    expect(r.run).toBe(existsSync(KVM_DEVICE));
  });

  it("finds a tool that is on PATH", () => {
    expect(checkNeeds({ tools: ["sh"] })).toEqual({ run: true });
  });
});
