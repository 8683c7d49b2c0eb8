import { buildMicroGuest, runGuest, tscHz } from "@ts-vmm/test-guests";
import { oursLauncher } from "/work/wt/devices/packages/vmm-reference/test/ours-launcher.ts";
import { closeSync, openSync, writeSync } from "node:fs";
import { randomBytes } from "node:crypto";
const elf = (await buildMicroGuest()).elf;
const disk = "/tmp/dv/bdisk.img";
const fd = openSync(disk, "w"); for (let i = 0; i < 64; i++) writeSync(fd, randomBytes(1 << 20)); closeSync(fd);
for (const vmm of (process.argv[2] ?? "ours,qemu").split(",")) {
  const b = await runGuest({ vmm: vmm === "qemu" ? "qemu" : oursLauncher, kernel: elf, cmdline: `mode=bench-blk qd1_ops=2000 qd32_ops=20000`, devices: [{ kind: "blk", path: disk }], timeoutMs: 180_000 });
  const hz = tscHz(b.results);
  const iops = (qd: string) => (hz ? Number(b.results.values[`blk_${qd}_ops`]) / (Number(b.results.values[`blk_${qd}_cycles`]) / hz) : NaN);
  console.log(vmm, "exit", b.exitCode, "qd1", iops("qd1").toFixed(0), "qd32", iops("qd32").toFixed(0), b.exitCode ? b.serial + b.vmmLog : "");
}
