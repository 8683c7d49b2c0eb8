/**
 * What an interrupt costs in the micro-guest under QEMU (mode=bench-irq), in TSC
 * cycles and µs: self-IPI vs a LAPIC write that delivers nothing, and virtio-blk
 * GET_ID round trips polled vs interrupt-driven; x2APIC and xAPIC; medians of
 * `RUNS` runs (min–max printed). Run: pnpm exec tsx --conditions=@ts-vmm/source bench/irq.ts
 */
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { buildMicroGuest, runGuest, tscHz } from "../src/index.js";

const RUNS = Number(process.env["RUNS"] ?? 5);
const N = Number(process.env["N"] ?? 2000);
const elf = (await buildMicroGuest()).elf;
const dir = mkdtempSync(join(tmpdir(), "ts-vmm-bench-irq-"));
try {
  const disk = join(dir, "disk.img");
  const fd = openSync(disk, "w");
  ftruncateSync(fd, 64 << 20);
  closeSync(fd);
  const med = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
  console.log(`load average ${loadavg()[0]!.toFixed(1)}, ${RUNS} runs of n=${N}`);
  for (const apic of ["x2apic=1", "x2apic=0"]) {
    const cycles: Record<string, number[]> = {};
    const hz: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const r = await runGuest({ vmm: "qemu", kernel: elf, cmdline: `mode=bench-irq n=${N} ${apic}`, devices: [{ kind: "blk", path: disk }], timeoutMs: 120_000 });
      if (r.exitCode !== 0) throw new Error(`bench-irq failed:\n${r.serial}\n${r.vmmLog}`);
      const h = tscHz(r.results);
      if (h === null) throw new Error("no TSC rate");
      hz.push(h);
      for (const k of ["irq_null", "irq_ipi", "blk_poll", "blk_irq"]) {
        const c = Number(r.results.values[`${k}_cycles`]) / Number(r.results.values[`${k}_n`]);
        if (!Number.isFinite(c)) throw new Error(`missing ${k}`);
        (cycles[k] ??= []).push(c);
      }
    }
    const h = med(hz);
    console.log(`${apic}: TSC ${(h / 1e6).toFixed(1)} MHz`);
    for (const [k, v] of Object.entries(cycles)) {
      console.log(`  ${k.padEnd(9)} ${Math.round(med(v)).toString().padStart(8)} cycles (${Math.round(Math.min(...v))}–${Math.round(Math.max(...v))})  ${((med(v) / h) * 1e6).toFixed(1)} µs`);
    }
    console.log(`  handler+delivery (ipi - null): ${Math.round(med(cycles["irq_ipi"]!) - med(cycles["irq_null"]!))} cycles; interrupt-driven blk costs ${(med(cycles["blk_irq"]!) / med(cycles["blk_poll"]!)).toFixed(2)}x polling`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
