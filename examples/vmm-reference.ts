// packages/vmm-reference/README.md, ts/js code block 1: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { Vmm } from "@ts-vmm/vmm-reference";

const vmm = Vmm.create({ kernel: "guest.elf", cmdline: "mode=hello", memMiB: 64 });
const result = await vmm.run({ serial: (bytes) => process.stdout.write(bytes) });
vmm.close();
console.log(result.reason, result.guestExitValue); // "DebugExit" 0
