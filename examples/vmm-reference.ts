// The example of packages/vmm-reference/README.md, as a file that scripts/consumer-check.sh runs
// against the packed packages.
import { Vmm } from "@ts-vmm/vmm-reference";

const vmm = Vmm.create({ kernel: "guest.elf", cmdline: "mode=hello", memMiB: 64 });
const result = await vmm.run({ serial: (bytes) => process.stdout.write(bytes) });
vmm.close();
console.log(result.reason, result.guestExitValue); // "DebugExit" 0
