// packages/vmm-reference/README.md, ts/js code block 2: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { Kvm } from "@ts-vmm/kvm-ioctls";
import { applyCpuPolicy, loadCpuTemplate, parseFeatureSwitches } from "@ts-vmm/vmm-reference";
import { release } from "node:os";

const kvm = new Kvm();
const supported = kvm.getSupportedCpuid();
kvm.close();
const r = applyCpuPolicy(supported, {
  template: loadCpuTemplate("baseline"),
  switches: parseFeatureSwitches("+shstk"),
  host: { supported, kernelRelease: release() },
});
console.log(r.ok ? `${r.entries.length} CPUID entries` : r.refusal.message);
