/**
 * pnpm bench:peer — the micro-guest's bench-exits and bench-blk under QEMU
 * (and under our VMM once a launcher for it exists: set
 * TS_VMM_OURS_LAUNCHER to a module exporting `launcher: VmmLauncher`).
 * Medians of RUNS runs. Prints a summary, appends it to the test-guests
 * section of BENCHMARKS.md, and ends with the one-line JSON result.
 */
import { execFileSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { cpus, loadavg, release, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { buildMicroGuest, PACKAGE_DIR, qemuProvides, runGuest, tscHz, type DeviceSpec, type GuestRun, type VmmLauncher } from "../src/index.js";

const RUNS = Number(process.env["BENCH_RUNS"] ?? 5);
const QD1_OPS = 2000;
const QD32_OPS = 20000;

const median = (xs: number[]): number | null => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function need(r: GuestRun, what: string): void {
  if (r.exitCode !== 0) throw new Error(`${r.vmm} ${what} failed: exit ${String(r.exitCode)}\n${r.serial}\n${r.vmmLog}`);
}

interface VmmNumbers {
  firstByteMs: number | null;
  helloWallMs: number | null;
  mmioWriteUs: number | null;
  mmioReadUs: number | null;
  pioRawUs: number | null;
  pioGateUs: number | null;
  notifyUs: number | null;
  iopsQd1: number | null;
  iopsQd32: number | null;
}

async function measure(vmm: "qemu" | VmmLauncher, elf: string, disk: string): Promise<VmmNumbers> {
  const first: number[] = [], hello: number[] = [], mw: number[] = [], mr: number[] = [], pr: number[] = [], pg: number[] = [], nt: number[] = [], q1: number[] = [], q32: number[] = [];
  // A VMM without virtio-blk runs the exit benchmark without a disk (the notify
  // figure needs one) and no blk benchmark: those numbers stay null.
  const hasBlk = vmm === "qemu" ? qemuProvides().includes("blk") : vmm.provides.includes("blk");
  const disks: DeviceSpec[] = hasBlk ? [{ kind: "blk", path: disk }] : [];
  for (let i = 0; i < RUNS; i++) {
    const h = await runGuest({ vmm, kernel: elf, cmdline: "mode=hello", timeoutMs: 30_000 });
    need(h, "hello");
    if (h.firstSerialByteMs !== null) first.push(h.firstSerialByteMs);
    hello.push(h.wallMs);

    const e = await runGuest({
      vmm, kernel: elf, cmdline: "mode=bench-exits n=5000 npio=500", devices: disks, timeoutMs: 120_000,
    });
    need(e, "bench-exits");
    const hz = tscHz(e.results);
    const us = (k: string): number => (hz ? (Number(e.results.values[`${k}_cycles`]) / Number(e.results.values[`${k}_n`]) / hz) * 1e6 : NaN);
    mw.push(us("exits_mmio_write"));
    mr.push(us("exits_mmio_read"));
    pr.push(us("exits_pio_raw"));
    pg.push(us("exits_pio_gate"));
    nt.push(us("exits_notify"));
    if (!hasBlk) {
      process.stderr.write(`  ${typeof vmm === "string" ? vmm : vmm.name} run ${i + 1}/${RUNS}: first byte ${h.firstSerialByteMs?.toFixed(0)} ms, mmio ${mw.at(-1)?.toFixed(1)} us, no virtio-blk\n`);
      continue;
    }

    const b = await runGuest({
      vmm, kernel: elf, cmdline: `mode=bench-blk qd1_ops=${QD1_OPS} qd32_ops=${QD32_OPS}`,
      devices: [{ kind: "blk", path: disk }], timeoutMs: 180_000,
    });
    need(b, "bench-blk");
    const bhz = tscHz(b.results);
    const iops = (qd: string): number => (bhz ? Number(b.results.values[`blk_${qd}_ops`]) / (Number(b.results.values[`blk_${qd}_cycles`]) / bhz) : NaN);
    q1.push(iops("qd1"));
    q32.push(iops("qd32"));
    process.stderr.write(`  ${typeof vmm === "string" ? vmm : vmm.name} run ${i + 1}/${RUNS}: first byte ${h.firstSerialByteMs?.toFixed(0)} ms, mmio ${mw.at(-1)?.toFixed(1)} us, qd1 ${q1.at(-1)?.toFixed(0)} IOPS, qd32 ${q32.at(-1)?.toFixed(0)} IOPS\n`);
  }
  return {
    firstByteMs: median(first), helloWallMs: median(hello), mmioWriteUs: median(mw), mmioReadUs: median(mr),
    pioRawUs: median(pr), pioGateUs: median(pg), notifyUs: median(nt), iopsQd1: median(q1), iopsQd32: median(q32),
  };
}

async function oursLauncher(): Promise<VmmLauncher | null> {
  const spec = process.env["TS_VMM_OURS_LAUNCHER"];
  if (!spec) return null;
  const mod = (await import(spec.startsWith(".") ? resolve(spec) : spec)) as { launcher?: VmmLauncher };
  if (!mod.launcher) throw new Error(`${spec} does not export launcher`);
  return mod.launcher;
}

function appendBenchmarks(text: string): void {
  const file = resolve(PACKAGE_DIR, "..", "..", "BENCHMARKS.md");
  const begin = "<!-- test-guests:begin -->";
  const end = "<!-- test-guests:end -->";
  let doc = existsSync(file) ? readFileSync(file, "utf8") : "# Benchmarks\n";
  if (!doc.includes(begin)) {
    doc = `${doc.trimEnd()}\n\n## test-guests: micro-guest under QEMU and ours (\`pnpm bench:peer\`)\n\n${begin}\n${end}\n`;
  }
  doc = doc.replace(end, `${text.trimEnd()}\n\n${end}`);
  writeFileSync(file, doc);
}

const r1 = (x: number | null, d = 1): string => (x === null ? "n/a" : x.toFixed(d));

async function main(): Promise<void> {
  const { elf } = await buildMicroGuest();
  const dir = mkdtempSync(join(tmpdir(), "ts-vmm-bench-peer-"));
  try {
    // 64 MiB of random data, written once (reads then come from the page cache for every VMM alike).
    const disk = join(dir, "disk.img");
    const fd = openSync(disk, "w");
    for (let i = 0; i < 64; i++) writeSync(fd, randomBytes(1 << 20));
    closeSync(fd);

    const qemu = await measure("qemu", elf, disk);
    const oursL = await oursLauncher();
    const ours = oursL ? await measure(oursL, elf, disk) : null;
    const round = (x: number | null | undefined): number | null => (x === null || x === undefined ? null : Math.round(x));
    const ratio = ours?.iopsQd32 && qemu.iopsQd32 ? Number((ours.iopsQd32 / qemu.iopsQd32).toFixed(3)) : null;
    const ratioQd1 = ours?.iopsQd1 && qemu.iopsQd1 ? Number((ours.iopsQd1 / qemu.iopsQd1).toFixed(3)) : null;

    const qemuVersion = execFileSync("qemu-system-x86_64", ["--version"], { encoding: "utf8" }).split("\n")[0] ?? "";
    const machine = `${cpus()[0]?.model ?? "?"} x${cpus().length}, Linux ${release()}, load average ${loadavg()[0]?.toFixed(1)}`;
    const date = new Date().toISOString().slice(0, 16).replace("T", " ");
    const row = (name: string, n: VmmNumbers): string =>
      `| ${name} | ${r1(n.firstByteMs)} | ${r1(n.helloWallMs)} | ${r1(n.mmioWriteUs)} | ${r1(n.mmioReadUs)} | ${r1(n.pioRawUs)} | ${r1(n.pioGateUs)} | ${r1(n.notifyUs)} | ${r1(n.iopsQd1, 0)} | ${r1(n.iopsQd32, 0)} |`;
    const table = [
      `### ${date} UTC — ${machine}; ${qemuVersion}; medians of ${RUNS} runs`,
      "",
      "| VMM | start→first serial byte (ms) | hello wall (ms) | MMIO write exit (µs) | MMIO read exit (µs) | PIO from CPL3, #GP replay (µs) | PIO via syscall gate (µs) | virtqueue notify (µs) | blk 4K rand read IOPS QD1 | QD32 |",
      "|---|---|---|---|---|---|---|---|---|---|",
      row("qemu microvm", qemu),
      ours ? row(oursL?.name ?? "ours", ours) : "| ours | not available yet (no VmmLauncher) | | | | | | | | |",
      "",
      `Guest: PVH micro-guest at CPL3; ${QD1_OPS} QD1 and ${QD32_OPS} QD32 random 4 KiB reads over a 64 MiB raw file (page cache warm). µs from TSC cycles, TSC rate calibrated from serial-line arrival times.`,
    ].join("\n");
    const json = JSON.stringify({
        bench: "peer",
        qemu_blk_iops_qd1: round(qemu.iopsQd1),
        qemu_blk_iops_qd32: round(qemu.iopsQd32),
        ours_blk_iops_qd1: round(ours?.iopsQd1),
        ours_blk_iops_qd32: round(ours?.iopsQd32),
        ratio_qd1: ratioQd1,
        ratio_qd32: ratio,
      });
    console.log(table);
    appendBenchmarks(`${table}\n\n\`\`\`\n${json}\n\`\`\``);
    console.log(`first serial byte: qemu ${r1(qemu.firstByteMs)} ms, ours ${ours ? r1(ours.firstByteMs) : "null"}`);
    console.log(json);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
