// Exit round-trip benchmark: a CPL3 micro-guest does ITERS port writes, then
// ITERS MMIO writes, each handled by vcpu.run() in a worker_thread, against
// bench/exit_roundtrip.c doing the same in C. Median of RUNS alternating runs
// of each; the last line printed is
//   {"bench":"exit-roundtrip","pio_ratio":…,"mmio_ratio":…,"pio_js_ns":…,"mmio_js_ns":…}
// (TS time / C time, and (TS − C) per exit in ns: the JavaScript overhead per exit)
// Needs a build (dist/, build/Release) and gcc. Env: ITERS (100000), RUNS (5).
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir, cpus, loadavg } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { MmapRegion } from "@ts-vmm/vmm-sys-util";
import { Kvm } from "../dist/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const ITERS = Number(process.env.ITERS ?? 100_000);
const RUNS = Number(process.env.RUNS ?? 5);

const dir = mkdtempSync(join(tmpdir(), "kvm-bench-"));
const cbin = join(dir, "exit_roundtrip");
execFileSync("gcc", ["-O2", "-Wall", "-o", cbin, join(here, "exit_roundtrip.c")], { stdio: "inherit" });

function runC(mode) {
  const out = execFileSync(cbin, [mode, String(ITERS)], { encoding: "utf8" });
  const r = JSON.parse(out.trim().split("\n").pop());
  if (r.exits !== ITERS) throw new Error(`C ${mode}: ${r.exits} exits, expected ${ITERS}`);
  return r;
}

// The same guest as exit_roundtrip.c, built with @ts-vmm/kvm-ioctls in this
// thread; the worker only runs it.
function buildGuest(mode) {
  const kvm = new Kvm();
  const vm = kvm.createVm();
  const mem = MmapRegion.anonymous(0x200000);
  const b = new Uint8Array(mem.buffer);
  const dv = new DataView(mem.buffer);
  dv.setBigUint64(0x9000, 0xa000n | 7n, true);
  dv.setBigUint64(0xa000, 0xb000n | 7n, true);
  dv.setBigUint64(0xb000, 0x87n, true);
  dv.setBigUint64(0xa000 + 24, 0xc000n | 7n, true);
  dv.setBigUint64(0xc000 + 0x80 * 8, 0xd0000000n | 0x87n | 0x18n, true);
  const code = [0xb9, ITERS & 0xff, (ITERS >> 8) & 0xff, (ITERS >> 16) & 0xff, ITERS >>> 24,
    0x66, 0xba, 0xf8, 0x03, 0x48, 0xbf, 0x50, 0x00, 0x00, 0xd0, 0, 0, 0, 0];
  const loop = code.length;
  if (mode === "mmio") code.push(0x89, 0x07); // mov [rdi], eax
  else code.push(0xee); // out dx, al
  code.push(0xff, 0xc9); // dec ecx
  code.push(0x75, (loop - (code.length + 2)) & 0xff); // jnz loop
  code.push(0x0f, 0x0b); // ud2
  b.set(code, 0x1000);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, memory: mem });
  const vcpu = vm.createVcpu(0);
  const s = vcpu.getSregs();
  Object.assign(s, { cr3: 0x9000n, cr4: 1n << 5n, cr0: 0x80050033n, efer: 0x500n });
  const cs = { base: 0n, limit: 0xffffffff, selector: 0x2b, type: 11, present: 1, dpl: 3, db: 0, s: 1, l: 1, g: 1, avl: 0, unusable: 0 };
  const ds = { ...cs, selector: 0x33, type: 3, l: 0, db: 1 };
  s.cs = cs;
  s.ds = s.es = s.fs = s.gs = s.ss = ds;
  vcpu.setSregs(s);
  const r = vcpu.getRegs();
  for (const k of Object.keys(r)) r[k] = 0n;
  Object.assign(r, { rip: 0x1000n, rflags: 2n | (3n << 12n), rsp: 0x8000n });
  vcpu.setRegs(r);
  return { vcpu, close: () => { vcpu.close(); vm.close(); kvm.close(); mem.close(); } };
}

function runTs(mode) {
  const g = buildGuest(mode);
  return new Promise((resolve, reject) => {
    const w = new Worker(join(here, "exit-roundtrip-worker.mjs"), { workerData: { vcpu: g.vcpu.toTransferable() } });
    w.once("message", (m) => {
      if (m.error) reject(new Error(m.error));
      else if (m.exits !== ITERS) reject(new Error(`TS ${mode}: ${m.exits} exits, expected ${ITERS}`));
      else resolve(m);
    });
    w.once("error", reject);
  }).finally(() => g.close());
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

const times = { pio: { c: [], ts: [] }, mmio: { c: [], ts: [] } };
try {
  for (let i = 0; i < RUNS; i++) {
    for (const mode of ["pio", "mmio"]) {
      // alternate the order so neither side always runs first
      if (i % 2 === 0) {
        times[mode].c.push(runC(mode));
        times[mode].ts.push(await runTs(mode));
      } else {
        times[mode].ts.push(await runTs(mode));
        times[mode].c.push(runC(mode));
      }
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

// Wall-clock time is the reported ratio. CPU time (process CPU, which includes
// the guest's time in KVM_RUN) is printed too: on a loaded machine it is the
// steadier estimate of the cost, since waiting for a core is not counted.
const us = (s) => ((s / ITERS) * 1e6).toFixed(2);
const result = { bench: "exit-roundtrip" };
const cpuRatios = {};
for (const mode of ["pio", "mmio"]) {
  const wall = (side) => times[mode][side].map((r) => r.seconds);
  const cpu = (side) => times[mode][side].map((r) => r.cpu);
  const c = median(wall("c"));
  const ts = median(wall("ts"));
  console.log(`${mode} wall: C ${us(c)} us/exit, TS (worker) ${us(ts)} us/exit; runs C [${wall("c").map(us).join(", ")}] TS [${wall("ts").map(us).join(", ")}]`);
  const cc = median(cpu("c"));
  const tc = median(cpu("ts"));
  console.log(`${mode} cpu:  C ${us(cc)} us/exit, TS (worker) ${us(tc)} us/exit; runs C [${cpu("c").map(us).join(", ")}] TS [${cpu("ts").map(us).join(", ")}]`);
  result[`${mode}_ratio`] = Number((ts / c).toFixed(3));
  result[`${mode}_js_ns`] = Math.round(((ts - c) / ITERS) * 1e9);
  cpuRatios[`${mode}_cpu_ratio`] = Number((tc / cc).toFixed(3));
}
console.log(`cpu-time ratios: ${JSON.stringify(cpuRatios)}`);
console.log(`machine: ${cpus()[0]?.model ?? "?"} x${cpus().length}, node ${process.version}, iters ${ITERS}, runs ${RUNS}, load ${loadavg().map((x) => x.toFixed(1)).join(" ")}`);
console.log(JSON.stringify(result));
