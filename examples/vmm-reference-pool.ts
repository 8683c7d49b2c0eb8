// packages/vmm-reference/README.md, ts/js code block 5: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { SnapshotPool, Vmm } from "@ts-vmm/vmm-reference";

// A snapshot to restore from: a guest paused while it ticks.
const vm = Vmm.create({ kernel: "guest.elf", cmdline: "mode=ticker ticks=100000", memMiB: 64 });
const run = vm.run({ serial: () => {} });
await new Promise((r) => setTimeout(r, 200));
await vm.pause();
await vm.snapshot({ snapshotPath: "vm.snap", memFilePath: "vm.mem" });
vm.stop();
await run;
vm.close();

// Three VMs kept ready; take() runs one and resolves once its guest runs.
const pool = await SnapshotPool.create({ snapshotPath: "vm.snap", memFilePath: "vm.mem", size: 3, serial: (_id, bytes) => process.stdout.write(bytes) });
const a = await pool.take();
console.log(a.id, a.fromPool, `${(a.runningAt - a.requestedAt).toFixed(2)} ms to running`);
await pool.release(a.id); // stops and closes it
await pool.close(); // closes every VM, ready or running
