/**
 * Nested-tier soak: N full boots of ours (and optionally QEMU) to /init's shell and
 * `poweroff -f` inside one L1 (2 vCPUs, as the full-boot test), to measure how often a
 * boot fails and how. Env: SOAK_RUNS (default 4), SOAK_VCPUS (2), SOAK_VARIANTS
 * (comma list of `early`, `noearly`, `qemu`; default `early,noearly`).
 */
import { randomBytes } from "node:crypto";
import { INIT_MARKER, linuxGuest, runNested, dataDisk, guestHasL1State, guestRanStaleText, type NestedGuest, type DeviceSpec, type VmmLauncher } from "@ts-vmm/test-guests";
import { NESTED_CPU_ARGS, PACKAGE_DIR, QUIET_CMDLINE } from "../test/nested-linux.js";
import { oursNodeLauncher } from "../test/ours-launcher.js";

const RUNS = Number(process.env["SOAK_RUNS"] ?? 4);
const VCPUS = Number(process.env["SOAK_VCPUS"] ?? 2);
const VARIANTS = (process.env["SOAK_VARIANTS"] ?? "early,noearly").split(",");

function withEnv(l: VmmLauncher, env: Record<string, string>): VmmLauncher {
  return { ...l, plan: async (spec) => { const p = await l.plan(spec); return p.kind === "process" ? { ...p, env: { ...(p.env ?? {}), ...env } } : p; } };
}

async function main(): Promise<void> {
  const g = await linuxGuest();
  const disk = await dataDisk(randomBytes(8).toString("hex"));
  const devices: DeviceSpec[] = [{ kind: "blk", path: disk.path }, { kind: "rng" }];
  const guests: NestedGuest[] = [];
  for (let i = 0; i < RUNS; i++) {
    for (const v of VARIANTS) {
      const base = { kernel: g.bzImage, initrd: g.initramfs, cmdline: QUIET_CMDLINE, memMiB: 256, vcpus: VCPUS } as const;
      if (v === "qemu") guests.push({ ...base, name: `qemu-${i}`, vmm: "qemu", devices: [...devices, { kind: "net" }], timeoutMs: 150_000, extraArgs: ["-M", "acpi=on", "-no-reboot"] });
      else guests.push({ ...base, name: `${v}-${i}`, vmm: withEnv(oursNodeLauncher, { TS_VMM_EARLY_VCPU: v === "early" ? "1" : "0" }), devices, timeoutMs: 120_000, extraArgs: NESTED_CPU_ARGS });
    }
  }
  const run = await runNested({ l1Vcpus: 2, packages: [PACKAGE_DIR], guests });
  console.log(`L1 problem: ${run.problem}`);
  for (const r of run.guests) {
    const ok = r.serial.includes(`${INIT_MARKER}-SHELL`) && r.end === "exit" && r.status === 0;
    const env = guestHasL1State(run, r) ?? guestRanStaleText(r);
    console.log(`SOAK ${r.name} ok=${ok} end=${r.end} status=${r.status} wall=${(r.wallMs / 1000).toFixed(1)}s env=${env ?? "-"}`);
    if (!ok) console.log(`  last: ${r.lines.slice(-6).map((l) => `[${(l.tMs / 1000).toFixed(1)}] ${l.text}`).join("\n        ")}\n  vmm: ${r.vmmLog.slice(0, 600)}`);
  }
  disk.remove();
}
main().catch((e: unknown) => { console.error(e); process.exit(1); });
