/**
 * pnpm bench:boot — Linux boot time, our VMM against QEMU microvm with KVM,
 * in the nested tier (or on the host's KVM where it has vmx/svm is not done
 * here: this bench always uses one L1 run, so both VMMs see the same L1).
 *
 * One L1 boot (QEMU TCG, EPYC with SVM and NPT, `-smp 1`) runs, one after
 * the other, BENCH_RUNS (default 1) boots of the Debian bzImage with the
 * busybox initramfs under QEMU microvm (KVM in L1) and under our CLI. The
 * figure is the time from the L2 VMM's start inside L1 (the step marker, as
 * seen by the host) to the `TS-VMM-INIT-OK` line /init prints, measured on
 * the host clock; the guest is killed at the marker. Median over the runs.
 * Appends a line to the vmm-reference section of BENCHMARKS.md and ends
 * with `{"bench":"linux-boot","ours_ms":…,"qemu_ms":…,"ratio":…}` (ours_ms
 * null with `ours_reason` while our VMM does not reach /init).
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release } from "node:os";
import { fileURLToPath } from "node:url";
import { INIT_MARKER, linuxGuest, runNested, type NestedGuest, type NestedGuestRun } from "@ts-vmm/test-guests";
import { oursNodeLauncher } from "../test/ours-launcher.js";

const RUNS = Number(process.env["BENCH_RUNS"] ?? 1);
const PACKAGE_DIR = fileURLToPath(new URL("..", import.meta.url));
const CMDLINE = "console=ttyS0 rdinit=/init panic=-1 quiet";
const OURS_TIMEOUT_MS = 90_000;

const median = (xs: number[]): number | null => {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function markerMs(r: NestedGuestRun): number | null {
  return r.lines.find((l) => l.text.startsWith(INIT_MARKER))?.tMs ?? null;
}

function appendToBenchmarks(text: string): void {
  const file = fileURLToPath(new URL("../../../BENCHMARKS.md", import.meta.url));
  const begin = "<!-- vmm-reference-boot:begin -->";
  const end = "<!-- vmm-reference-boot:end -->";
  let doc = existsSync(file) ? readFileSync(file, "utf8") : "# Benchmarks\n";
  if (!doc.includes(begin)) {
    doc = `${doc.trimEnd()}\n\n## vmm-reference: Linux boot in the nested tier (\`pnpm bench:boot\`)\n\n` +
      "L2 = Debian 6.12 cloud bzImage + busybox initramfs (`quiet`), 256 MiB, 1 vCPU, no devices, booted inside one L1\n" +
      "(QEMU 7.2 TCG, `-cpu EPYC,+svm,+npt -m 4096 -smp 1`, kvm-amd). Time: L2 VMM start inside L1 to /init's\n" +
      "`TS-VMM-INIT-OK` line, host clock. Target: ours / QEMU ≤ 1.0.\n\n" +
      `${begin}\n${end}\n`;
  }
  doc = doc.replace(end, `${text.trimEnd()}\n\n${end}`);
  writeFileSync(file, doc);
}

async function main(): Promise<void> {
  const g = await linuxGuest();
  const base = { kernel: g.bzImage, initrd: g.initramfs, cmdline: CMDLINE, memMiB: 256, vcpus: 1, stopOnSerial: INIT_MARKER } as const;
  const guests: NestedGuest[] = [];
  for (let i = 0; i < RUNS; i++) {
    // microvm with ACPI, as in the full-boot test (this kernel has no virtio_mmio.device= support).
    guests.push({ ...base, name: `qemu-${i}`, vmm: "qemu", timeoutMs: 120_000, extraArgs: ["-M", "acpi=on", "-no-reboot"] });
    guests.push({ ...base, name: `ours-${i}`, vmm: oursNodeLauncher, timeoutMs: OURS_TIMEOUT_MS });
    // The same with a CPU model close to QEMU microvm's default (qemu64: no AVX, no XSAVE):
    // our baseline template without XSAVE. (QEMU 7.2's TCG does not intercept XSETBV for L1's
    // KVM; with XSAVE and AVX the guest prints a ~3 KB warning, and baseline with XSAVE never
    // reached /init in L1 here.)
    guests.push({ ...base, name: `ours-baseline-${i}`, vmm: oursNodeLauncher, timeoutMs: OURS_TIMEOUT_MS, extraArgs: ["--cpu-template", "baseline", "--cpu-features", "-xsave"] });
  }
  const run = await runNested({ l1Vcpus: 1, packages: [PACKAGE_DIR], guests });
  if (run.problem) throw new Error(`L1 failed: ${run.problem}\n${run.l1Serial.slice(-3000)}\n${run.l1Log}`);
  const q: number[] = [];
  const o: number[] = [];
  const ob: number[] = [];
  let oursReason: string | null = null;
  for (const r of run.guests) {
    const t = markerMs(r);
    if (r.vmm === "qemu") {
      if (t === null) throw new Error(`QEMU did not reach /init in L1 (${r.end}):\n${r.serial.slice(-3000)}\n${r.vmmLog}`);
      q.push(t);
    } else if (r.name.startsWith("ours-baseline-")) {
      if (t !== null) ob.push(t);
    } else if (t !== null) o.push(t);
    else {
      const last = r.lines.filter((l) => l.text.trim() !== "").at(-1)?.text.trim() ?? "(no output)";
      oursReason = `did not reach the init marker (ended by ${r.end} after ${(r.wallMs / 1000).toFixed(0)} s; last serial line: ${JSON.stringify(last)})`;
    }
  }
  const qemuMs = median(q);
  const oursMs = o.length === q.length ? median(o) : null;
  if (oursMs === null && oursReason === null) oursReason = "did not reach the init marker in every run";
  const round = (x: number | null): number | null => (x === null ? null : Math.round(x));
  const ratio = oursMs !== null && qemuMs ? Number((oursMs / qemuMs).toFixed(3)) : null;
  const baselineMs = ob.length === q.length ? median(ob) : null;
  const baselineRatio = baselineMs !== null && qemuMs ? Number((baselineMs / qemuMs).toFixed(3)) : null;

  let qemuVersion = "QEMU (version unknown)";
  try {
    qemuVersion = execFileSync("qemu-system-x86_64", ["--version"], { encoding: "utf8" }).split("\n")[0]!.trim();
  } catch {
    /* keep the placeholder */
  }
  const when = new Date().toISOString().slice(0, 16).replace("T", " ");
  const cpu = cpus()[0]?.model.replace(/\s+/g, " ").trim() ?? "unknown CPU";
  const line =
    `- ${when} UTC — ${cpu} x${cpus().length}, Linux ${release()}, load average ${loadavg()[0]!.toFixed(1)}; ${qemuVersion}; ` +
    `${RUNS} run(s) in one L1 boot (L1 /dev/kvm after ${((run.l1KvmMs ?? NaN) / 1000).toFixed(1)} s, L1 run ${(run.wallMs / 1000).toFixed(0)} s): ` +
    `QEMU microvm ${round(qemuMs)} ms (runs: ${q.map((x) => Math.round(x)).join(", ")}); ours ${oursMs === null ? `n/a — ${oursReason}` : `${round(oursMs)} ms (runs: ${o.map((x) => Math.round(x)).join(", ")}), ratio ${ratio}`}` +
    `; ours with --cpu-template baseline --cpu-features -xsave ${baselineMs === null ? "n/a" : `${round(baselineMs)} ms (runs: ${ob.map((x) => Math.round(x)).join(", ")}), ratio ${baselineRatio}`}`;
  console.log(line);
  appendToBenchmarks(line);
  console.log(JSON.stringify({
    bench: "linux-boot",
    ours_ms: round(oursMs),
    qemu_ms: round(qemuMs),
    ratio,
    ours_baseline_ms: round(baselineMs),
    ratio_baseline: baselineRatio,
    ...(oursMs === null ? { ours_reason: oursReason } : {}),
  }));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
