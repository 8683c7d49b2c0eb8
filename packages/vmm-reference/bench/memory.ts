/**
 * pnpm bench:memory — guest memory backends: what first touch and random
 * access cost the micro-guest, ours per backend and QEMU side by side.
 *
 * The micro-guest (`mode=mem touch=1 random=N`) writes one u64 in every 4 KiB
 * page of its RAM above 32 MiB (first touch: the host's page fault and KVM's
 * mapping of each page), then makes N read-modify-writes at random pages of
 * the same RAM (everything mapped: TLB and page-walk cost). Both are timed in
 * TSC cycles by the guest and converted with the host's KVM_GET_TSC_KHZ. The
 * VMM start → first serial byte time shows what setup (and prefault) costs.
 *
 * Configurations: ours with --memory 1G and memfd (4 KiB), hugepages=2M,
 * hugepages=thp, guest_memfd, each without and with prefault=on; QEMU 7.2
 * microvm with memory-backend-memfd (4 KiB), memory-backend-memfd with
 * hugetlb=on,hugetlbsize=2M, memory-backend-memfd with prealloc=on (its
 * prefault), and its default RAM (anonymous, THP-advised). The 2 MiB pool
 * (512 pages) is reserved by the bench (root) and given back after.
 * Runs are interleaved (every configuration once, BENCH_RUNS times); medians.
 * Appends a section to BENCHMARKS.md and ends with
 * `{"bench":"memory","mib":1024,"ours_memfd_touch_ms":…,…}`.
 *
 * Env: BENCH_RUNS (default 3), BENCH_MEM_MIB (default 1024), BENCH_RANDOM (default 200000).
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release } from "node:os";
import { fileURLToPath } from "node:url";
import { buildMicroGuest, kvmTscHz, runGuest, type GuestRun, type ProcessPlan, type VmmLauncher } from "@ts-vmm/test-guests";
import { reserveHugePages, type HugePageReservation } from "@ts-vmm/test-utils/node";
import { oursLauncher } from "../test/ours-launcher.js";

const RUNS = Number(process.env["BENCH_RUNS"] ?? 3);
const MIB = Number(process.env["BENCH_MEM_MIB"] ?? 1024);
const RANDOM = Number(process.env["BENCH_RANDOM"] ?? 200_000);

interface Config {
  readonly key: string;
  readonly label: string;
  readonly vmm: "ours" | "qemu";
  /** ours: the --memory options after the size; qemu: extra arguments. */
  readonly opts: string | readonly string[];
  readonly needsPool?: boolean;
}

const backend = (extra: string): string[] => ["-object", `memory-backend-memfd,id=ram0,size=${MIB}M${extra}`, "-machine", "memory-backend=ram0"];
const CONFIGS: readonly Config[] = [
  { key: "ours_memfd", label: "ours memfd (4 KiB)", vmm: "ours", opts: "backend=memfd" },
  { key: "ours_memfd_prefault", label: "ours memfd, prefault=on", vmm: "ours", opts: "backend=memfd,prefault=on" },
  { key: "ours_huge2m", label: "ours hugepages=2M", vmm: "ours", opts: "hugepages=2M", needsPool: true },
  { key: "ours_huge2m_prefault", label: "ours hugepages=2M, prefault=on", vmm: "ours", opts: "hugepages=2M,prefault=on", needsPool: true },
  { key: "ours_thp", label: "ours hugepages=thp", vmm: "ours", opts: "hugepages=thp" },
  { key: "ours_thp_prefault", label: "ours hugepages=thp, prefault=on", vmm: "ours", opts: "hugepages=thp,prefault=on" },
  { key: "ours_gmem", label: "ours guest_memfd", vmm: "ours", opts: "backend=guest_memfd" },
  { key: "ours_gmem_prefault", label: "ours guest_memfd, prefault=on", vmm: "ours", opts: "backend=guest_memfd,prefault=on" },
  { key: "qemu_memfd", label: "QEMU memory-backend-memfd (4 KiB)", vmm: "qemu", opts: backend("") },
  { key: "qemu_huge2m", label: "QEMU memory-backend-memfd,hugetlb=on,hugetlbsize=2M", vmm: "qemu", opts: backend(",hugetlb=on,hugetlbsize=2M"), needsPool: true },
  { key: "qemu_memfd_prealloc", label: "QEMU memory-backend-memfd,prealloc=on", vmm: "qemu", opts: backend(",prealloc=on") },
  { key: "qemu_default", label: "QEMU default RAM (anonymous, THP-advised)", vmm: "qemu", opts: [] },
];

function oursWith(opts: string): VmmLauncher {
  return {
    ...oursLauncher,
    plan(spec) {
      const p = oursLauncher.plan(spec) as ProcessPlan;
      const args = [...p.args];
      const i = args.indexOf("--mem");
      if (i < 0) throw new Error("oursLauncher no longer passes --mem");
      args.splice(i, 2, "--memory", `${spec.memMiB}M,${opts}`);
      return { ...p, args };
    },
  };
}


const median = (xs: readonly number[]): number | null => {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return null;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const round = (v: number | null, digits = 0): number | null => (v === null ? null : Number(v.toFixed(digits)));

interface Sample {
  readonly touchMs: number;
  readonly randomNs: number;
  readonly firstByteMs: number;
  readonly wallMs: number;
}

function sample(r: GuestRun, hz: number, what: string): Sample {
  const v = r.results.values;
  if (r.guestExit !== 0 || v["mem.touch_cycles"] === undefined || v["mem.random_cycles"] === undefined) {
    throw new Error(`${what}: ${r.exitProblem ?? `guest exit ${String(r.guestExit)}`}\n${r.serial}\n${r.vmmLog}`);
  }
  return {
    touchMs: (Number(v["mem.touch_cycles"]) / hz) * 1000,
    randomNs: (Number(v["mem.random_cycles"]) / hz / Number(v["mem.random_n"])) * 1e9,
    firstByteMs: r.lines[0]?.tMs ?? NaN,
    wallMs: r.wallMs,
  };
}

function appendToBenchmarks(text: string): void {
  const file = fileURLToPath(new URL("../../../BENCHMARKS.md", import.meta.url));
  const begin = "<!-- vmm-reference-memory:begin -->";
  const end = "<!-- vmm-reference-memory:end -->";
  let doc = existsSync(file) ? readFileSync(file, "utf8") : "# Benchmarks\n";
  if (!doc.includes(begin)) {
    doc = `${doc.trimEnd()}\n\n## vmm-reference: guest memory backends (\`pnpm bench:memory\`)\n\n` +
      "The micro-guest (`mode=mem touch=1 random=N`, 1 vCPU) writes one u64 in every 4 KiB page of its RAM above 32 MiB\n" +
      "(first touch), then makes N read-modify-writes of a u64 at random 4 KiB pages of that RAM. Guest TSC cycles,\n" +
      "converted with KVM_GET_TSC_KHZ. \"first byte\": VMM start to the guest's first serial line (setup, prefault\n" +
      "included). Ours and QEMU run interleaved in the same session; medians.\n\n" +
      `${begin}\n${end}\n`;
  }
  doc = doc.replace(end, `${text.trimEnd()}\n\n${end}`);
  writeFileSync(file, doc);
}

async function main(): Promise<void> {
  const elf = (await buildMicroGuest()).elf;
  const hz = kvmTscHz();
  const cmdline = `mode=mem touch=1 random=${RANDOM}`;
  let pool: HugePageReservation | undefined;
  let poolProblem = "";
  try {
    pool = reserveHugePages(MIB / 2);
    if (pool.added < MIB / 2) poolProblem = `the kernel added ${pool.added} of ${MIB / 2} 2 MiB pages`;
  } catch (e) {
    poolProblem = `cannot reserve 2 MiB pages (${(e as Error).message.split("\n")[0]}; run as root)`;
  }
  const samples = new Map<string, Sample[]>();
  const load0 = loadavg()[0]!;
  try {
    for (let run = 0; run < RUNS; run++) {
      for (const c of CONFIGS) {
        if (c.needsPool && poolProblem) continue;
        const r = await runGuest({
          vmm: c.vmm === "ours" ? oursWith(c.opts as string) : "qemu",
          kernel: elf, cmdline, memMiB: MIB, timeoutMs: 120_000,
          ...(c.vmm === "qemu" ? { extraArgs: c.opts as readonly string[] } : {}),
        });
        const s = sample(r, hz, c.label);
        samples.set(c.key, [...(samples.get(c.key) ?? []), s]);
        process.stderr.write(`[bench:memory] run ${run + 1}/${RUNS} ${c.label}: touch ${s.touchMs.toFixed(0)} ms, random ${s.randomNs.toFixed(0)} ns, first byte ${s.firstByteMs.toFixed(0)} ms\n`);
      }
    }
  } finally {
    if (pool && !(await pool.settle())) process.stderr.write("[bench:memory] some reserved 2 MiB pages are still in the pool\n");
  }
  const json: Record<string, unknown> = { bench: "memory", mib: MIB, random_n: RANDOM };
  const rows: string[] = [];
  const pages = (MIB - 32) * 256;
  for (const c of CONFIGS) {
    const s = samples.get(c.key);
    if (!s) {
      json[`${c.key}_touch_ms`] = null;
      json[`${c.key}_reason`] = poolProblem;
      rows.push(`| ${c.label} | n/a: ${poolProblem} | | | |`);
      continue;
    }
    const touch = median(s.map((x) => x.touchMs));
    const rnd = median(s.map((x) => x.randomNs));
    const first = median(s.map((x) => x.firstByteMs));
    const wall = median(s.map((x) => x.wallMs));
    json[`${c.key}_touch_ms`] = round(touch);
    json[`${c.key}_random_ns`] = round(rnd, 1);
    json[`${c.key}_first_byte_ms`] = round(first);
    json[`${c.key}_wall_ms`] = round(wall);
    const range = (f: (x: Sample) => number, d = 0): string => `${Math.min(...s.map(f)).toFixed(d)}–${Math.max(...s.map(f)).toFixed(d)}`;
    rows.push(`| ${c.label} | ${touch!.toFixed(0)} (${range((x) => x.touchMs)}) | ${((touch! * 1e6) / pages).toFixed(0)} | ${rnd!.toFixed(1)} (${range((x) => x.randomNs, 1)}) | ${first!.toFixed(0)} | ${wall!.toFixed(0)} |`);
  }
  const qemuVersion = execFileSync("qemu-system-x86_64", ["--version"], { encoding: "utf8" }).split("\n")[0];
  const date = new Date().toISOString().slice(0, 16).replace("T", " ");
  const text = [
    `### ${date} UTC — ${cpus()[0]?.model ?? "?"} x${cpus().length}, Linux ${release()}, load average ${load0.toFixed(1)}→${loadavg()[0]!.toFixed(1)}; ${qemuVersion}; ${RUNS} interleaved runs, medians (min–max)`,
    "",
    `${MIB} MiB guest, ${pages} pages touched, ${RANDOM} random accesses; TSC ${(hz / 1e6).toFixed(1)} MHz.`,
    "",
    "| configuration | first touch (ms) | per 4 KiB page (ns) | random 4 KiB access (ns) | first byte (ms) | wall (ms) |",
    "|---|---|---|---|---|---|",
    ...rows,
    "",
    "```",
    JSON.stringify(json),
    "```",
  ].join("\n");
  appendToBenchmarks(text);
  process.stdout.write(`${text}\n`);
  process.stdout.write(`${JSON.stringify(json)}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
