// packages/vmm-reference/README.md, ts/js code block 3: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { Kvm } from "@ts-vmm/kvm-ioctls";
import { Vmm, memoryCapabilityReport, parseMemorySpec, planGuestMemory, readMemoryHostFacts } from "@ts-vmm/vmm-reference";
import { release } from "node:os";

const kvm = new Kvm();
const facts = readMemoryHostFacts(kvm); // KVM's memory capabilities, huge page pools, THP modes
kvm.close();
for (const b of memoryCapabilityReport(facts, release()).backends) console.log(b.available ? "yes" : "no ", b.options);

const { memMiB, memory } = parseMemorySpec("--memory", "64M,backend=guest_memfd,prefault=on");
const plan = planGuestMemory(memMiB, memory, facts);
console.log(plan.ok ? plan.plan.summary : plan.refusal);
const vmm = Vmm.create({ kernel: "guest.elf", cmdline: "mode=hello", memMiB, memory: plan.ok ? memory : {} });
const result = await vmm.run({ serial: () => {} });
console.log(vmm.memoryPlan.source, result.reason, result.guestExitValue); // "guest_memfd" "DebugExit" 0 where guest_memfd works
vmm.close();
