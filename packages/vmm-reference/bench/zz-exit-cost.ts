import { buildMicroGuest } from "@ts-vmm/test-guests";
import { Vmm } from "../src/index.js";
const elf = (await buildMicroGuest()).elf;
const runs = Number(process.argv[2] ?? 5);
const rows: Record<string, number[]> = {};
for (let i = 0; i < runs; i++) {
  const vmm = Vmm.create({ kernel: elf, cmdline: "mode=bench-exits n=5000 npio=500", memMiB: 64 });
  let s = "";
  await vmm.run({ serial: (b) => { s += Buffer.from(b).toString("latin1"); } });
  vmm.close();
  for (const m of s.matchAll(/^RESULT (\S+)=(\d+)/gm)) (rows[m[1]!] ??= []).push(Number(m[2]));
}
const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
for (const [k, v] of Object.entries(rows)) console.log(k, "median", med(v), "all", v.join(","));
