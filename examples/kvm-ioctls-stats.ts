// packages/kvm-ioctls/README.md, ts/js code block 5: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { Cap, Kvm } from "@ts-vmm/kvm-ioctls";

const kvm = new Kvm();
const vm = kvm.createVm();
if (vm.checkExtension(Cap.BINARY_STATS_FD) > 0) {
  const vcpu = vm.createVcpu(0);
  const stats = vcpu.statsFd();
  const exits = stats.descriptors.find((d) => d.name === "exits");
  console.log(stats.id, exits?.type, stats.read()["exits"]);
  stats.close();
  vcpu.close();
}
vm.close();
kvm.close();
