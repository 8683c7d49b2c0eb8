// packages/vmm-reference/README.md, ts/js code block 4: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { MetricsWriter, Vmm } from "@ts-vmm/vmm-reference";

const vmm = Vmm.create({ kernel: "guest.elf", cmdline: "mode=hello", memMiB: 64 });
const writer = MetricsWriter.open({ path: "metrics.ndjson", source: () => vmm.metrics() });
const result = await vmm.run({ serial: () => {} });
vmm.close();
writer.close(); // appends a last line
const m = vmm.metrics();
console.log(result.reason, m.exits.total, m.exits.byDevice["com1"], m.kvm.available);
