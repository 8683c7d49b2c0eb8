#!/usr/bin/env node
/**
 * Command line of @ts-vmm/test-guests:
 *
 *   build-guest                 build the micro-guest (cached), print the ELF path
 *   run [options]               run the micro-guest under QEMU, stream its serial output
 *       --mode M                hello | selftest | bench-exits | bench-blk | fuzz | smp (default selftest)
 *       --devices all|none|k,k  devices to attach (default: all QEMU provides)
 *       --vcpus N --mem MiB --timeout ms --append "extra cmdline"
 *   linux-kit                   fetch Debian's 6.12 cloud kernel, build the initramfs, print paths
 *   linux-nested [options]      the nested tier: boot that kernel under QEMU+KVM inside a TCG L1
 *       --l1-vcpus N --vcpus N  L1 -smp and L2 vCPUs (default 1 and 1); streams L1's console
 *
 * `run --mode selftest` exits 0 only if the selftest reported exactly what it
 * should for the attached devices, the disk image holds what the guest wrote,
 * and the console peer received what the guest sent.
 */
import { parseArgs } from "node:util";
import { buildMicroGuest } from "./build-guest.js";
import { blkImageProblems } from "./blk-image.js";
import { startEchoServer } from "./echo-server.js";
import { selftestProblems } from "./expect.js";
import { consoleProblems, withConsolePeer } from "./peer-checks.js";
import { DEVICE_KINDS, type DeviceKind, type DeviceSpec } from "./launcher.js";
import { INIT_MARKER, linuxGuest } from "./linux-kit.js";
import { runNested } from "./nested.js";
import { qemuLauncher, qemuProvides } from "./qemu.js";
import { runGuest } from "./run-guest.js";
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === "build-guest") {
    const g = await buildMicroGuest();
    console.log(`${g.built ? "built" : "cached"} ${g.elf}`);
    return 0;
  }
  if (cmd === "linux-kit") {
    const g = await linuxGuest();
    console.log(JSON.stringify(g, null, 2));
    return 0;
  }
  if (cmd === "linux-nested") {
    const { values } = parseArgs({ args: rest, options: { "l1-vcpus": { type: "string", default: "1" }, vcpus: { type: "string", default: "1" } } });
    const g = await linuxGuest();
    const run = await runNested({
      l1Vcpus: Number(values["l1-vcpus"]),
      guests: [{
        name: "qemu", vmm: "qemu", kernel: g.bzImage, initrd: g.initramfs, cmdline: "console=ttyS0 rdinit=/init panic=-1",
        vcpus: Number(values.vcpus), devices: [{ kind: "rng" }, { kind: "net" }], extraArgs: ["-M", "acpi=on", "-no-reboot"],
        timeoutMs: 150_000,
      }],
      onSerial: (t) => process.stdout.write(t),
    });
    const r = run.guests[0]!;
    const t = r.lines.find((l) => l.text.startsWith(INIT_MARKER))?.tMs;
    console.error(
      `--- L1: /dev/kvm after ${run.l1KvmMs?.toFixed(0) ?? "-"} ms, whole run ${run.wallMs.toFixed(0)} ms, image ${run.image.bytes} bytes (${run.image.layers.join(" + ")})` +
        `\n--- L2: ended by ${r.end} (status ${String(r.status)}), /init marker after ${t?.toFixed(0) ?? "-"} ms${run.problem ? `\n--- problem: ${run.problem}` : ""}`,
    );
    return run.problem === null && r.end === "exit" && r.status === 0 && t !== undefined ? 0 : 1;
  }
  if (cmd !== "run") {
    console.error("usage: ts-vmm-test-guests build-guest | run [--mode M] [--devices all|none|k,k] [--vcpus N] [--mem MiB] [--timeout ms] [--append S] | linux-kit | linux-nested [--l1-vcpus N] [--vcpus N]");
    return 2;
  }
  const { values } = parseArgs({
    args: rest,
    options: {
      mode: { type: "string", default: "selftest" },
      devices: { type: "string", default: "all" },
      vcpus: { type: "string", default: "1" },
      mem: { type: "string", default: "64" },
      timeout: { type: "string", default: "60000" },
      append: { type: "string", default: "" },
    },
  });
  const provided = qemuProvides();
  const kinds: DeviceKind[] =
    values.devices === "all" ? provided : values.devices === "none" ? [] : (values.devices.split(",") as DeviceKind[]);
  for (const k of kinds) {
    if (!DEVICE_KINDS.includes(k)) {
      console.error(`unknown device kind ${k}`);
      return 2;
    }
  }
  const g = await buildMicroGuest();
  console.error(`micro-guest: ${g.elf} (${g.built ? "built" : "cached"})`);
  const dir = mkdtempSync(join(tmpdir(), "ts-vmm-cli-"));
  try {
    const disk = join(dir, "disk.img");
    const fd = openSync(disk, "w");
    ftruncateSync(fd, 64 << 20);
    closeSync(fd);
    const devices: DeviceSpec[] = kinds.map((k): DeviceSpec =>
      k === "blk" ? { kind: "blk", path: disk } : k === "vsock" ? { kind: "vsock", cid: 42 } : k === "net" ? { kind: "net" } : { kind: k },
    );
    const vcpus = Number(values.vcpus);
    const cmdline = `mode=${values.mode}${values.mode === "smp" ? ` cpus=${vcpus}` : ""} ${values.append}`.trim();
    // selftest: the console talks to a peer whose record is checked here; the disk image is re-read after the run
    const peer = values.mode === "selftest" && kinds.includes("console") ? await startEchoServer() : undefined;
    const r = await runGuest({
      vmm: peer ? withConsolePeer(qemuLauncher, peer.socketPath) : "qemu",
      kernel: g.elf,
      cmdline,
      devices,
      vcpus,
      memMiB: Number(values.mem),
      timeoutMs: Number(values.timeout),
      onSerial: (t) => process.stdout.write(t),
    }).finally(() => peer?.close());
    if (r.vmmLog) process.stderr.write(`--- qemu stderr\n${r.vmmLog}`);
    console.error(
      `--- guest exit ${String(r.guestExit)}${r.exitProblem ? ` (${r.exitProblem})` : ""}, wall ${r.wallMs.toFixed(0)} ms, first serial byte ${r.firstSerialByteMs?.toFixed(0) ?? "-"} ms${r.timedOut ? ", TIMED OUT" : ""}`,
    );
    if (values.mode === "selftest") {
      const problems = selftestProblems(r, kinds, { interrupts: !/(^|\s)irq=0(\s|$)/.test(values.append) });
      if (kinds.includes("blk")) problems.push(...blkImageProblems(r.results, disk).map((p) => `disk image: ${p}`));
      if (peer) problems.push(...consoleProblems(r, peer.received()).map((p) => `console peer: ${p}`));
      console.error(problems.length === 0 ? `selftest OK: ${r.results.passed.length} checks passed, absent: ${r.results.skipped.map((s) => s.check).join(" ")}` : `selftest FAILED:\n  ${problems.join("\n  ")}`);
      return problems.length === 0 ? 0 : 1;
    }
    return r.guestExit === 0 ? 0 : 1;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e instanceof Error ? `${e.name}: ${e.message}` : String(e));
    process.exit(1);
  },
);
