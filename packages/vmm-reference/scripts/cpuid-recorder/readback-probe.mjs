// Runs inside a VM (the nested tier's L1; see run-in-tcg-l1.sh) or on any
// host: for each CPU template and every single --cpu-features switch, applies
// the policy to KVM_GET_SUPPORTED_CPUID, sets the table on a fresh vCPU
// (KVM_SET_CPUID2) and reads it back (KVM_GET_CPUID2). Prints one JSON object:
// the kernel, KVM's table, and per case either the refusal or the registers
// where KVM's copy differs from the policy's.
import { createHash } from "node:crypto";
import { release } from "node:os";
import { Kvm } from "@ts-vmm/kvm-ioctls";
import { CPU_FEATURES, applyCpuPolicy, loadCpuTemplate, parseFeatureSwitches } from "@ts-vmm/vmm-reference";

const kvm = new Kvm();
const supported = kvm.getSupportedCpuid();
const host = { supported, kernelRelease: release(), tscDeadlineCap: kvm.checkExtension(Kvm.Cap.TSC_DEADLINE_TIMER) > 0 };
const switches = ["", ...CPU_FEATURES.filter((f) => f.kind === "cpuid").flatMap((f) => [`+${f.name}`, `-${f.name}`])];
const cases = [];
for (const t of ["host", "baseline"]) {
  const template = loadCpuTemplate(t);
  for (const s of switches) {
    const r = applyCpuPolicy(supported, { template, switches: s ? parseFeatureSwitches(s) : [], host });
    if (!r.ok) {
      cases.push({ template: t, switches: s, refusal: r.refusal.message });
      continue;
    }
    const vm = kvm.createVm();
    const vcpu = vm.createVcpu(0);
    let got;
    let setError;
    try {
      vcpu.setCpuid2(r.entries);
      got = vcpu.getCpuid2();
    } catch (e) {
      setError = String(e.message ?? e);
    }
    vcpu.close();
    vm.close();
    if (setError) {
      cases.push({ template: t, switches: s, setError });
      continue;
    }
    const diffs = [];
    const key = (e) => `${e.function}.${e.index}`;
    for (const w of r.entries) {
      const g = got.find((x) => key(x) === key(w));
      if (!g) { diffs.push({ leaf: w.function, index: w.index, missing: true }); continue; }
      for (const reg of ["eax", "ebx", "ecx", "edx"]) if (g[reg] !== w[reg]) diffs.push({ leaf: w.function, index: w.index, reg, policy: w[reg], kvm: g[reg] });
    }
    for (const g of got) if (!r.entries.some((w) => key(w) === key(g))) diffs.push({ leaf: g.function, index: g.index, extra: true });
    // The digest ties the recording to the policy that produced it (the unit test recomputes it).
    const policyDigest = createHash("sha256").update(JSON.stringify(r.entries)).digest("hex");
    cases.push({ template: t, switches: s, entries: r.entries.length, policyDigest, diffs });
  }
}
kvm.close();
process.stdout.write(JSON.stringify({ kernel: release(), tscDeadlineCap: host.tscDeadlineCap, supported, cases }) + "\n");
