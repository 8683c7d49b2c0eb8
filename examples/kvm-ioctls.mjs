// packages/kvm-ioctls/README.md, ts/js code block 1: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { MmapRegion } from "@ts-vmm/vmm-sys-util";
import { Kvm } from "@ts-vmm/kvm-ioctls";

const kvm = new Kvm();
const vm = kvm.createVm();
const mem = MmapRegion.anonymous(0x200000);            // 2 MiB of guest RAM at GPA 0
const ram = new DataView(mem.buffer);
ram.setBigUint64(0x9000, 0xa007n, true);                // PML4[0] -> PDPT
ram.setBigUint64(0xa000, 0xb007n, true);                // PDPT[0] -> PD
ram.setBigUint64(0xb000, 0x87n, true);                  // PD[0]: 2 MiB user page at 0
// mov dx, 0x3f8; mov al, 'H'; out dx, al; mov al, 'i'; out dx, al; ud2
new Uint8Array(mem.buffer).set([0x66, 0xba, 0xf8, 0x03, 0xb0, 0x48, 0xee, 0xb0, 0x69, 0xee, 0x0f, 0x0b], 0x1000);
vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem });

const vcpu = vm.createVcpu(0);
const s = vcpu.getSregs();
Object.assign(s, { cr3: 0x9000n, cr4: 0x20n, cr0: 0x80050033n, efer: 0x500n });
const code = { base: 0n, limit: 0xffffffff, selector: 0x2b, type: 11, present: 1, dpl: 3, db: 0, s: 1, l: 1, g: 1, avl: 0, unusable: 0 };
s.cs = code;
s.ds = s.es = s.fs = s.gs = s.ss = { ...code, selector: 0x33, type: 3, l: 0, db: 1 };
vcpu.setSregs(s);
vcpu.setRegs({ ...vcpu.getRegs(), rip: 0x1000n, rsp: 0x8000n, rflags: 0x3002n });

for (;;) {
  const exit = vcpu.run();
  if (exit.kind === "IoOut" && exit.port === 0x3f8) process.stdout.write(String.fromCharCode(exit.data[0]));
  else { console.log(`\nguest stopped: ${exit.kind}`); break; }   // ud2 with no IDT: Shutdown
}
vcpu.close(); vm.close(); kvm.close(); mem.close();
