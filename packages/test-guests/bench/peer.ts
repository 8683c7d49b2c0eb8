/**
 * pnpm bench:peer — the micro-guest's hello, bench-exits and bench-blk under
 * QEMU and under our VMM (TS_VMM_OURS_LAUNCHER names a module exporting
 * `launcher: VmmLauncher`), runs interleaved: QEMU, ours, QEMU, ours, …
 *
 * Method: the guest reports raw TSC cycles. Both VMMs run their vCPUs on this
 * host's TSC (neither sets KVM_SET_TSC_KHZ), so per-operation cycle counts are
 * compared directly (the ratios need no rate at all) and converted to time
 * with the host's TSC rate from KVM_GET_TSC_KHZ on a scratch vCPU. The old
 * method (a rate calibrated from the arrival times of the guest's
 * `RESULT tsc_mark=` serial lines) is still computed, only to report how far
 * it was off.
 *
 * Every figure prints min / median / max over RUNS runs. A figure the guest
 * should have printed and did not is an error that ends the bench; a figure
 * that needs a device the VMM does not provide (its launcher's `provides`) is
 * an explicit null with that reason.
 */
import { execFileSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { cpus, loadavg, release, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { EXIT_METRICS, figure, METRICS, provides, rssBeyondGuestMiB, spread, value, type Figure, type Metric, type Samples } from "./figures.js";
import {
  buildMicroGuest,
  findProcess,
  kvmTscHz,
  PACKAGE_DIR,
  qemuLauncher,
  runGuest,
  tscHz,
  type DeviceKind,
  type DeviceSpec,
  type GuestRun,
  type VmmLauncher,
} from "../src/index.js";

const RUNS = Number(process.env["BENCH_RUNS"] ?? 5);
const EXITS_N = 5000;
const EXITS_NPIO = 500;
const QD1_OPS = 2000;
const QD32_OPS = 20000;
/** QD1 reads before the timed phases, untimed (both VMMs): the timed figures are a steady state, not a VMM's warm-up. */
const WARM_OPS = 4000;
/** Guest RAM of the RSS run (MiB): the size that tells its mapping apart in /proc/<pid>/smaps. */
const RSS_MEM_MIB = 64;
/** The ticker's tick at which the RSS is sampled, and the one at which the run is stopped. */
const RSS_SAMPLE_TICK = 20;
const RSS_STOP_TICK = 30;

function need(r: GuestRun, what: string): void {
  if (r.guestExit !== 0) {
    throw new Error(`${r.vmm} ${what} failed: ${r.exitProblem ?? `guest exit ${String(r.guestExit)}`}\n${r.serial}\n${r.vmmLog}`);
  }
}


const push = (s: Samples, key: string, v: number): void => {
  const a = s.values.get(key) ?? [];
  a.push(v);
  s.values.set(key, a);
};

async function rssRun(s: Samples, elf: string): Promise<number> {
  // The command line is unique to this run: findProcess finds the VMM by it (its argv holds it whole).
  const cmdline = `mode=ticker ticks=100000 spin=20000000 rss_run=${randomBytes(6).toString("hex")}`;
  // A holder, not a let: TypeScript does not see the callback assign it.
  const got: { sample: number | Error | null } = { sample: null };
  let seen = "";
  const r = await runGuest({
    vmm: s.launcher,
    kernel: elf,
    cmdline,
    memMiB: RSS_MEM_MIB,
    timeoutMs: 30_000,
    stopOnSerial: new RegExp(`RESULT tick=${RSS_STOP_TICK}\r?\n`),
    onSerial: (text) => {
      if (got.sample !== null) return;
      seen = (seen + text).slice(-200); // a line may arrive in two chunks
      if (!new RegExp(`RESULT tick=${RSS_SAMPLE_TICK}\r?\n`).test(seen)) return;
      try {
        const pid = findProcess(cmdline);
        got.sample = pid === null ? new Error("the VMM process was not found by its command line") : rssBeyondGuestMiB(pid, RSS_MEM_MIB);
      } catch (e) {
        got.sample = e instanceof Error ? e : new Error(String(e));
      }
    },
  });
  const sample = got.sample;
  if (sample === null) throw new Error(`${s.name} rss: no RESULT tick=${RSS_SAMPLE_TICK} line (${r.exitProblem ?? "?"})\n${r.serial.slice(-2000)}\n${r.vmmLog}`);
  if (sample instanceof Error) throw new Error(`${s.name} rss: ${sample.message}`);
  return sample;
}

async function oneRound(s: Samples, elf: string, disk: string, hz: number, i: number): Promise<void> {
  const hasBlk = provides(s, "blk");
  push(s, "rss", await rssRun(s, elf));
  const h = await runGuest({ vmm: s.launcher, kernel: elf, cmdline: "mode=hello", timeoutMs: 30_000 });
  need(h, "hello");
  if (h.firstSerialByteMs === null) throw new Error(`${s.name} hello: no serial output`);
  push(s, "first_byte", h.firstSerialByteMs);
  push(s, "hello_wall", h.wallMs);

  const e = await runGuest({
    vmm: s.launcher,
    kernel: elf,
    cmdline: `mode=bench-exits n=${EXITS_N} npio=${EXITS_NPIO}`,
    devices: hasBlk ? [{ kind: "blk", path: disk }] : [],
    timeoutMs: 180_000,
  });
  need(e, "bench-exits");
  for (const [key, , needs] of EXIT_METRICS) {
    if (!provides(s, needs)) continue;
    push(s, key, value(e, `exits_${key}_cycles`) / value(e, `exits_${key}_n`));
  }
  const cal = tscHz(e.results);
  if (cal !== null) s.calibratedHz.exits.push(cal);

  let blkNote = "no virtio-blk";
  if (hasBlk) {
    const b = await runGuest({
      vmm: s.launcher,
      kernel: elf,
      cmdline: `mode=bench-blk warm_ops=${WARM_OPS} qd1_ops=${QD1_OPS} qd32_ops=${QD32_OPS}`,
      devices: [{ kind: "blk", path: disk } satisfies DeviceSpec],
      timeoutMs: 180_000,
    });
    need(b, "bench-blk");
    const bcal = tscHz(b.results);
    if (bcal !== null) s.calibratedHz.blk.push(bcal);
    for (const qd of ["qd1", "qd32"]) push(s, `blk_${qd}`, value(b, `blk_${qd}_ops`) / (value(b, `blk_${qd}_cycles`) / hz));
    blkNote = `qd1 ${s.values.get("blk_qd1")?.at(-1)?.toFixed(0)} IOPS, qd32 ${s.values.get("blk_qd32")?.at(-1)?.toFixed(0)} IOPS`;
  }
  const mmio = ((s.values.get("mmio_write")?.at(-1) ?? NaN) / hz) * 1e6;
  process.stderr.write(`  ${s.name} run ${i + 1}/${RUNS}: first byte ${h.firstSerialByteMs.toFixed(0)} ms, rss beyond guest ${s.values.get("rss")?.at(-1)?.toFixed(1)} MiB, mmio write ${mmio.toFixed(1)} µs, ${blkNote}\n`);
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

function fmt(x: number, unit: Metric["unit"]): string {
  return unit === "IOPS" ? x.toFixed(0) : x.toFixed(1);
}
function cell(f: Figure, unit: Metric["unit"]): string {
  if (f.spread === null) return `null: ${f.reason}`;
  return `${fmt(f.spread.median, unit)} (${fmt(f.spread.min, unit)}–${fmt(f.spread.max, unit)})`;
}

async function main(): Promise<void> {
  if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error(`BENCH_RUNS must be a positive integer, got ${process.env["BENCH_RUNS"]}`);
  const { elf } = await buildMicroGuest();
  const hz = kvmTscHz();
  const ours = await oursLauncher();
  const vmms: Samples[] = [{ name: "qemu", launcher: qemuLauncher, values: new Map(), calibratedHz: { exits: [], blk: [] } }];
  if (ours) vmms.push({ name: ours.name, launcher: ours, values: new Map(), calibratedHz: { exits: [], blk: [] } });
  const dir = mkdtempSync(join(tmpdir(), "ts-vmm-bench-peer-"));
  try {
    // 64 MiB of random data, written once (reads then come from the page cache for every VMM alike).
    const disk = join(dir, "disk.img");
    const fd = openSync(disk, "w");
    for (let i = 0; i < 64; i++) writeSync(fd, randomBytes(1 << 20));
    closeSync(fd);
    for (let i = 0; i < RUNS; i++) for (const s of vmms) await oneRound(s, elf, disk, hz, i);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  // Cycles are comparable only if every guest's TSC ran at the host's rate: a VMM that set
  // KVM_SET_TSC_KHZ would show as serial-arrival calibrations far from KVM's rate. Single
  // runs can be far off under load (the end mark's line delayed), so the median decides.
  for (const s of vmms) {
    const all = [...s.calibratedHz.exits, ...s.calibratedHz.blk];
    if (all.length === 0) continue;
    const m = spread(all).median;
    if (Math.abs(m / hz - 1) > 0.02) {
      throw new Error(`${s.name}: the guest's TSC ran at ${(m / 1e6).toFixed(1)} MHz (median by serial arrival times), not at the host's ${(hz / 1e6).toFixed(1)} MHz: its cycles are not comparable`);
    }
  }
  const figures = vmms.map((s) => new Map(METRICS.map((m) => [m.key, figure(s, m, hz, RUNS)] as const)));
  const qemuVersion = execFileSync("qemu-system-x86_64", ["--version"], { encoding: "utf8" }).split("\n")[0] ?? "";
  const machine = `${cpus()[0]?.model ?? "?"} x${cpus().length}, Linux ${release()}, load average ${loadavg()[0]?.toFixed(1)}`;
  const date = new Date().toISOString().slice(0, 16).replace("T", " ");
  const names = vmms.map((s) => s.name);
  const ratioCol = vmms.length > 1;
  const lines = [
    `### ${date} UTC — ${machine}; ${qemuVersion}; ${RUNS} interleaved runs (${names.join(", ")}, …)`,
    "",
    `TSC ${(hz / 1e6).toFixed(1)} MHz from KVM_GET_TSC_KHZ. Cells: median (min–max).${ratioCol ? ` Ratio (JSON slowdown_<figure>): how many times slower ${names[1]} is than qemu, from the medians (time: cycles per operation; IOPS: the inverse rate).` : ""}`,
    "",
    `| figure | ${names.join(" | ")}${ratioCol ? " | ratio |" : ""}`,
    `|---|${names.map(() => "---|").join("")}${ratioCol ? "---|" : ""}`,
  ];
  const json: Record<string, unknown> = { bench: "peer", runs: RUNS, tsc_khz: hz / 1000 };
  const nullReasons: Record<string, string> = {};
  for (const m of METRICS) {
    const cells = figures.map((f) => cell(f.get(m.key)!, m.unit));
    let ratio = "";
    if (ratioCol) {
      const q = figures[0]!.get(m.key)!;
      const o = figures[1]!.get(m.key)!;
      if (q.spread && o.spread) {
        const r = m.lowerIsBetter ? o.spread.median / q.spread.median : q.spread.median / o.spread.median;
        ratio = ` ${r.toFixed(2)} |`;
        json[`slowdown_${m.key}`] = Number(r.toFixed(3));
      } else {
        ratio = " null |";
        json[`slowdown_${m.key}`] = null;
      }
    }
    lines.push(`| ${m.label} (${m.unit}) | ${cells.join(" | ")} |${ratio}`);
    vmms.forEach((s, i) => {
      const f = figures[i]!.get(m.key)!;
      const k = `${s.name}_${m.key}_${m.unit === "µs" ? "us" : m.unit.toLowerCase()}`;
      json[k] = f.spread === null ? null : Number(f.spread.median.toFixed(m.unit === "IOPS" ? 0 : 2));
      if (f.spread === null) nullReasons[k] = f.reason;
      else if (f.cyclesMedian !== null) json[`${s.name}_${m.key}_cycles`] = Math.round(f.cyclesMedian);
    });
  }
  // Issue 13's names for the three ratios it sets targets on (the same medians as slowdown_<figure>).
  if (ratioCol) {
    json["start_ratio"] = json["slowdown_first_byte"] ?? null;
    json["mmio_exit_ratio"] = json["slowdown_mmio_write"] ?? null;
    json["pio_exit_ratio"] = json["slowdown_pio_gate"] ?? null;
  }
  // RSS beyond guest RAM (rssBeyondGuestMiB), medians.
  const rssCells: string[] = [];
  for (const s of vmms) {
    const r = spread(s.values.get("rss") ?? []);
    json[`${s.name}_rss_mib`] = Number(r.median.toFixed(1));
    rssCells.push(`${r.median.toFixed(1)} (${r.min.toFixed(1)}–${r.max.toFixed(1)})`);
  }
  const rssRatio = ratioCol ? (json[`${names[1]}_rss_mib`] as number) / (json["qemu_rss_mib"] as number) : null;
  lines.push(`| RSS beyond guest RAM (MiB) | ${rssCells.join(" | ")} |${rssRatio !== null ? ` ${rssRatio.toFixed(2)} |` : ""}`);
  json["null_reasons"] = nullReasons;
  // The keys earlier rows used: IOPS medians and ours / qemu IOPS (> 1: ours faster).
  const iops = (i: number, key: string): number | null => {
    const f = figures[i]?.get(key);
    return f?.spread ? Math.round(f.spread.median) : null;
  };
  for (const qd of ["qd1", "qd32"]) {
    const q = iops(0, `blk_${qd}`);
    const o = iops(1, `blk_${qd}`);
    json[`qemu_blk_iops_${qd}`] = q;
    json[`ours_blk_iops_${qd}`] = o;
    json[`ratio_${qd}`] = q !== null && o !== null ? Number((o / q).toFixed(3)) : null;
  }

  // The old method, for comparison: how far the serial-arrival calibration was from KVM's rate.
  lines.push("");
  const pct = (x: number): string => `${x >= 0 ? "+" : ""}${x.toFixed(2)}%`;
  for (const s of vmms) {
    for (const mode of ["exits", "blk"] as const) {
      const xs = s.calibratedHz[mode];
      if (xs.length === 0) continue;
      const c = spread(xs.map((x) => (x / hz - 1) * 100));
      lines.push(
        `Old method on the same ${s.name} bench-${mode} runs: the TSC rate calibrated from serial arrival times was ${pct(c.min)} to ${pct(c.max)} off KVM's (median ${pct(c.median)}); the old µs figures were off by about the opposite amount, the old IOPS by the same.`,
      );
      json[`${s.name}_${mode}_old_calibration_error_pct`] = { min: Number(c.min.toFixed(3)), median: Number(c.median.toFixed(3)), max: Number(c.max.toFixed(3)) };
    }
  }
  lines.push(
    "",
    `Guest: PVH micro-guest at CPL3; bench-exits n=${EXITS_N} npio=${EXITS_NPIO}; ${QD1_OPS} QD1 and ${QD32_OPS} QD32 random 4 KiB reads over a 64 MiB raw file (page cache warm), timed after ${WARM_OPS} untimed QD1 reads. RSS beyond guest RAM: VmRSS of the VMM process minus the Rss of its one ${RSS_MEM_MIB} MiB guest-RAM mapping (/proc/<pid>/smaps), sampled when the ticker guest (${RSS_MEM_MIB} MiB, no devices) prints tick ${RSS_SAMPLE_TICK}; file-backed pages (the binary, libraries) count, as VmRSS counts them. Each VMM process runs in its own pid namespace (setpriv + unshare + a perl reaper: 5–15 ms of the start-up figures here, the same for both).`,
  );
  const table = lines.join("\n");
  console.log(table);
  appendBenchmarks(`${table}\n\n\`\`\`\n${JSON.stringify(json)}\n\`\`\``);
  console.log(JSON.stringify(json));
}

await main();
