// packages/kvm-ioctls/README.md, ts/js code block 3: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { Kvm, hostCpuid } from "@ts-vmm/kvm-ioctls";

const host = hostCpuid(7, 0);
const kvm = new Kvm();
const leaf7 = kvm.getSupportedCpuid().find((e) => e.function === 7 && e.index === 0);
kvm.close();
const shstk = (r: { ecx: number } | undefined) => ((r?.ecx ?? 0) >>> 7) & 1;
console.log(`shadow stacks: host ${shstk(host)}, KVM ${shstk(leaf7)}`);
