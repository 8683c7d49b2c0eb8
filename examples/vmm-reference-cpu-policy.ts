// The example of packages/vmm-reference/README.md, as a file that scripts/consumer-check.sh runs
// against the packed packages.
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
