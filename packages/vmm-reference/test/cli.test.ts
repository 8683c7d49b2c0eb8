// ts-vmm's command line: flags, one-line errors, cpu-features, signals, the
// /dev/kvm permission message. Real KVM and real child processes.
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describeKvm, describeWith } from "@ts-vmm/test-utils";
import { describe, expect, it } from "vitest";
import { runCli } from "../src/cli.js";
import { runArgs } from "../src/cli-args.js";
import { CPU_FEATURES, REPORT_FEATURES } from "../src/index.js";
import { SPIN, exitWith, tinyElf } from "./tiny-elf.js";

const CLI = fileURLToPath(new URL("../dist/bin.js", import.meta.url));
const DIST_INDEX = fileURLToPath(new URL("../dist/index.js", import.meta.url));

async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await runCli(args, { write: (b) => { out += typeof b === "string" ? b : Buffer.from(b).toString(); return true; } }, { write: (s) => { err += s; return true; } });
  return { code, out, err };
}
const oneLine = (s: string): string => {
  expect(s.endsWith("\n")).toBe(true);
  expect(s.trimEnd().split("\n")).toHaveLength(1);
  return s.trimEnd();
};

describe("ts-vmm flags (no KVM needed)", () => {
  it("--version prints the package version", async () => {
    const r = await cli("--version");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^ts-vmm \d+\.\d+\.\d+\n$/);
  });
  it("--help lists every run flag", async () => {
    const r = await cli("--help");
    for (const f of ["--kernel", "--initrd", "--cmdline", "--memory", "--vcpus", "--cpu-template", "--cpu-features", "--config", "cpu-features [--json]", "host-info [--json]", "backend=memfd|guest_memfd|file:PATH", "hugepages=2M|1G|thp", "--vsock cid=N,uds=PATH"]) expect(r.out).toContain(f);
  });
  it.each([
    [["run", "--kernel", "k", "--memory", "lots"], 'ts-vmm: --memory must be a size from 2 MiB to 1 TiB in whole MiB: a number of MiB, or with a unit (512M, 2G, 1T), got "lots"'],
    [["run", "--kernel", "k", "--mem", "1.5"], 'ts-vmm: --mem must be a size from 2 MiB to 1 TiB in whole MiB: a number of MiB, or with a unit (512M, 2G, 1T), got "1.5"'],
    [["run", "--kernel", "k", "--memory", "2t"], 'ts-vmm: --memory must be a size from 2 MiB to 1 TiB in whole MiB: a number of MiB, or with a unit (512M, 2G, 1T), got "2t"'],
    [["run", "--kernel", "k", "--memory", "1536K"], 'ts-vmm: --memory must be a size from 2 MiB to 1 TiB in whole MiB: a number of MiB, or with a unit (512M, 2G, 1T), got "1536K"'],
    [["run", "--kernel", "k", "--memory", "64M,backend=nvme"], 'ts-vmm: --memory: backend must be memfd, guest_memfd or file:PATH, got "nvme"'],
    [["run", "--kernel", "k", "--memory", "64M,hugepages=3M"], 'ts-vmm: --memory: hugepages must be 2M, 1G, thp or none, got "3M"'],
    [["run", "--kernel", "k", "--mem", "64M,prefault=sometimes"], 'ts-vmm: --mem: prefault must be on or off, got "sometimes"'],
    [["host-info", "--all"], "ts-vmm: host-info does not take --all"],
    [["run", "--kernel", "k", "--vcpus", "0"], 'ts-vmm: --vcpus must be a whole number from 1 to 1024, got "0"'],
    [["run", "--kernel", "k", "--vcpus", "two"], 'ts-vmm: --vcpus must be a whole number from 1 to 1024, got "two"'],
    [["run", "--kernel", "k", "--vcpus", "1025"], 'ts-vmm: --vcpus must be a whole number from 1 to 1024, got "1025"'],
    [["run", "--kernel", "k", "--frobnicate"], "ts-vmm: unknown option --frobnicate (ts-vmm --help lists the options)"],
    [["run", "--kernel"], "ts-vmm: --kernel needs a value"],
    [["run"], "ts-vmm: run needs --kernel PATH (a bzImage or a PVH ELF), or --restore SNAPSHOT,mem=MEMFILE"],
    [["run", "--kernel", "k", "--json"], "ts-vmm: run does not take --json"],
    [["boot"], 'ts-vmm: unknown command "boot": use run, demo, serve, pool, cpu-features or host-info (ts-vmm --help)'],
    [[], "ts-vmm: missing command: use run, demo, serve, pool, cpu-features or host-info (ts-vmm --help)"],
    [["run", "--kernel", "k", "--mem", "64", "--memory", "64"], "ts-vmm: --mem is an alias of --memory: give one of them"],
    [["run", "--kernel", "/dev/null", "--cpu-features", "+warp"], 'ts-vmm: --cpu-features: unknown feature "warp" (ts-vmm cpu-features --all lists them)'],
    [["run", "--kernel", "/dev/null", "--cpu-template", "turbo"], 'ts-vmm: unknown CPU template "turbo": use baseline or host, or the path of a JSON template'],
    [["run", "--kernel", "k", "--vsock", "cid=2,uds=/tmp/v.sock"], 'ts-vmm: --vsock cid must be a whole number from 3 to 4294967294, got "2"'],
    [["run", "--kernel", "k", "--vsock", "uds=/tmp/v.sock"], 'ts-vmm: --vsock takes cid=N,uds=PATH, got "uds=/tmp/v.sock"'],
    [["run", "--kernel", "k", "--vsock", "cid=3,uds=/tmp/v.sock,port=5"], 'ts-vmm: --vsock takes cid=N,uds=PATH, got "cid=3,uds=/tmp/v.sock,port=5"'],
    [["run", "--kernel", "k", "--vsock", "cid=3,cid=4,uds=/tmp/v.sock"], 'ts-vmm: --vsock takes cid=N,uds=PATH, got "cid=3,cid=4,uds=/tmp/v.sock"'],
  ])("%j → exit 2 and one line naming the flag", async (args, line) => {
    const r = await cli(...args);
    expect(r.code).toBe(2);
    expect(oneLine(r.err)).toBe(line);
  });
  it("device flags become virtio devices in order (--rtc last); --help lists them", async () => {
    const a = runArgs({ kernel: "k", rtc: true, rng: true, disk: ["d.img,ro"], "console-socket": "/s" });
    expect(a.virtio).toEqual([{ kind: "blk", path: "d.img", readOnly: true }, { kind: "rng" }, { kind: "console", socketPath: "/s" }, { kind: "rtc" }]);
    expect(runArgs({ kernel: "k" }).virtio).toEqual([]);
    const help = (await cli("--help")).out;
    for (const f of ["--disk", "--rng", "--console-socket", "--rtc"]) expect(help).toContain(f);
    expect((await cli("cpu-features", "--rtc")).err).toBe("ts-vmm: cpu-features does not take --rtc\n");
  });
  it("--memory takes 512M and 1G (as QEMU's -m): the error is then about the kernel, not the flag", async () => {
    for (const m of ["512M", "1g", "2048", "1T", "64M,backend=guest_memfd,prefault=on", "64MiB,hugepages=thp", "2G,hugepages=1G,shared=off"]) {
      const r = await cli("run", "--kernel", "/nonexistent/k", "--memory", m);
      expect(r.code).toBe(2);
      expect(oneLine(r.err)).toMatch(/^ts-vmm: cannot read the kernel \/nonexistent\/k: ENOENT/);
    }
  });
  it("--config: unknown keys are named, relative paths resolve against the file, flags win", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ts-vmm-cli-"));
    const bad = join(dir, "bad.json");
    writeFileSync(bad, JSON.stringify({ kernel: "k", memroy: 64 }));
    expect(oneLine((await cli("run", "--config", bad)).err)).toBe(`ts-vmm: --config ${bad}: unknown key "memroy" (known: kernel, initrd, cmdline, memory, vcpus, cpuTemplate, cpuFeatures, timeout, irqchip, machineConfig)`);
    const good = join(dir, "vm.json");
    writeFileSync(good, JSON.stringify({ kernel: "bzImage", memory: "lots" }));
    expect(oneLine((await cli("run", "--config", good)).err)).toBe(`ts-vmm: --config ${good}: memory must be a size from 2 MiB to 1 TiB in whole MiB: a number of MiB, or with a unit (512M, 2G, 1T), got "lots"`);
    const r = await cli("run", "--config", good, "--memory", "64");
    expect(oneLine(r.err)).toBe(`ts-vmm: cannot read the kernel ${join(dir, "bzImage")}: ENOENT: no such file or directory, open '${join(dir, "bzImage")}'`);
    expect(oneLine((await cli("run", "--config", "/dev/zero")).err)).toBe("ts-vmm: --config /dev/zero: it is larger than 1048576 bytes");
    expect(oneLine((await cli("run", "--kernel", "k", "--cpu-template", "/dev/zero")).err)).toBe("ts-vmm: cannot read the CPU template /dev/zero: it is larger than 1048576 bytes");
    expect(oneLine((await cli("run", "--config", dir)).err)).toBe(`ts-vmm: --config ${dir}: it is a directory`);
    writeFileSync(bad, "{ not json");
    expect((await cli("run", "--config", bad)).err).toMatch(/^ts-vmm: --config .*bad\.json: /);
  });
});

describeKvm("ts-vmm with KVM", () => {
  const dir = mkdtempSync(join(tmpdir(), "ts-vmm-cli-"));
  const spin = join(dir, "spin.elf");
  writeFileSync(spin, tinyElf(SPIN));
  const exit7 = join(dir, "exit7.elf");
  writeFileSync(exit7, tinyElf(exitWith(7)));

  it("run --cpu-template baseline --cpu-features -x2apic boots; the debug-exit status comes through", async () => {
    const r = await cli("run", "--kernel", exit7, "--memory", "16", "--cpu-template", "baseline", "--cpu-features", "-x2apic");
    expect(r.code).toBe((7 << 1) | 1);
  });
  it("run --cpu-features +shstk here: exit 2 and the sentence naming what is missing", async () => {
    const r = await cli("run", "--kernel", exit7, "--memory", "16", "--cpu-features", "+shstk");
    expect(r.code).toBe(2);
    expect(oneLine(r.err)).toMatch(/^ts-vmm: \+shstk needs (SHSTK \(CPUID\.7\.0:ECX\[7\]\) in KVM_GET_SUPPORTED_CPUID|a host kernel 6\.18)/);
  });
  it("a setup failure in a lower layer is one line too", async () => {
    const r = await cli("run", "--kernel", "/dev/null", "--memory", "16");
    expect(r.code).toBe(2);
    expect(oneLine(r.err)).toBe("ts-vmm: setting up the VM failed: bzImage is truncated: boot_flag needs bytes 510..512 but the file has 0");
  });
  it("a triple fault exits 4 with the reason", async () => {
    const tf = join(dir, "ud2.elf");
    writeFileSync(tf, tinyElf([0x0f, 0x0b]));
    const r = await cli("run", "--kernel", tf, "--memory", "16");
    expect(r.code).toBe(4);
    expect(r.err).toMatch(/triple fault/);
    // and one line per vCPU with where it ended and its exits
    expect(r.err).toMatch(/^ts-vmm: vCPU 0: rip=\S+ rflags=\S+ cr0=\S+ mp_state=\S+; exits: /m);
  }, 30_000);
  it("cpu-features --json: every feature with its three columns, the module parameters and the inhibits", async () => {
    const r = await cli("cpu-features", "--json");
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as { features: { name: string; hostCpu: unknown; kvm: unknown; exposed: unknown }[]; inhibits: { inhibit: string; status: string; reason: string }[]; moduleParams: object; raisedByConfig: string[]; exposedSource: string; vcpuState: { guestSspReadable: boolean; readableCetMsrs: string[] } };
    expect(j.features.map((f) => f.name)).toEqual(REPORT_FEATURES);
    for (const f of j.features) for (const k of ["hostCpu", "kvm", "exposed"] as const) expect(f).toHaveProperty(k);
    expect(j.inhibits.map((i) => i.inhibit)).toContain("PIT_REINJ");
    for (const i of j.inhibits) expect(i.reason.length).toBeGreaterThan(10);
    expect(j.exposedSource).toBe("KVM_GET_CPUID2");
    expect(j.features.find((f) => f.name === "x2apic")!.exposed).toBe(true);
    expect(typeof j.moduleParams).toBe("object");
    // Measured on a vCPU: GUEST_SSP is vCPU state exactly when shadow stacks are exposed.
    expect(j.vcpuState.guestSspReadable).toBe(j.features.find((f) => f.name === "shstk")!.exposed);
  });
  it("cpu-features --all --json lists every feature of the model", async () => {
    const r = await cli("cpu-features", "--all", "--json");
    expect(r.code).toBe(0);
    expect((JSON.parse(r.out) as { features: { name: string }[] }).features.map((f) => f.name)).toEqual(CPU_FEATURES.map((f) => f.name));
  });
  it("cpu-features --cpu-features +shstk: the report carries the refusal and exits 2", async () => {
    const r = await cli("cpu-features", "--cpu-features", "+shstk");
    if (r.code === 0) return expect(r.out).not.toContain("refused:"); // a CET-capable host
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/^refused: \+shstk needs /m);
  });
  // Prints "partial" without a newline (so it sits in the worker's line buffer), then spins.
  const partial = join(dir, "partial.elf");
  writeFileSync(partial, tinyElf([0x66, 0xba, 0xf8, 0x03, ...[..."partial"].flatMap((c) => [0xb0, c.charCodeAt(0), 0xee]), ...SPIN]));
  it.each(["SIGTERM", "SIGINT"] as const)("%s stops the vCPU, flushes COM1, says so and exits 130", async (sig) => {
    const child = spawn(process.execPath, [CLI, "run", "--kernel", partial, "--memory", "16"], { stdio: ["ignore", "pipe", "pipe"] });
    let err = "";
    let out = "";
    child.stderr.on("data", (b: Buffer) => { err += b.toString(); });
    child.stdout.on("data", (b: Buffer) => { out += b.toString(); });
    await new Promise((r) => setTimeout(r, 1500)); // the guest is spinning in KVM_RUN by now
    const t0 = Date.now();
    child.kill(sig);
    const code = await new Promise<number | null>((res) => child.on("exit", (c) => res(c)));
    expect(code).toBe(130);
    expect(err).toContain(`ts-vmm: stopped by ${sig}`);
    // Where the vCPU was: in the spin loop after its 7 port writes (what a hung guest was doing).
    expect(err).toMatch(/ts-vmm: vCPU 0: rip=0x[0-9a-f]+ rflags=0x[0-9a-f]+ cr0=0x[0-9a-f]+ mp_state=runnable; exits: IoOut=7( |$)/m);
    expect(out).toBe("partial");
    expect(Date.now() - t0).toBeLessThan(5000);
  }, 20_000);
});

// A real pseudo-terminal (python3's pty module) on the CLI's stdin and stdout.
const PTY_DRIVER = String.raw`
import os, pty, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
time.sleep(1.5)
os.write(fd, b"abc\x01x")
out = b""
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(repr(out) + "\n" + str(os.waitstatus_to_exitcode(status)) + "\n")
`;

describeWith({ kvm: true, tools: ["python3"] }, "serial on a terminal", () => {
  it("stdin in raw mode: Ctrl-A x quits with status 0 and says so", () => {
    const dir = mkdtempSync(join(tmpdir(), "ts-vmm-pty-"));
    const spin = join(dir, "spin.elf");
    writeFileSync(spin, tinyElf(SPIN));
    const r = spawnSync("python3", ["-c", PTY_DRIVER, process.execPath, CLI, "run", "--kernel", spin, "--memory", "16"], { encoding: "utf8", timeout: 20_000 });
    const [out, code] = r.stdout.trim().split("\n");
    expect(code).toBe("0");
    expect(out).toContain("ts-vmm: quit (Ctrl-A x)");
    // Raw mode: the typed keys were not echoed by the terminal.
    expect(out).not.toContain("abc");
  }, 30_000);
});

describeWith({ kvm: true, root: true, tools: ["setpriv"] }, "/dev/kvm permission errors", () => {
  const asNobody = (args: string[]) => spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, ...args], { encoding: "utf8", timeout: 20_000 });
  it("openKvm on a node this user cannot open: KvmPermissionDenied suggesting the kvm group", () => {
    const dir = mkdtempSync(join(tmpdir(), "ts-vmm-perm-"));
    chmodSync(dir, 0o755);
    const node = join(dir, "kvm");
    writeFileSync(node, "");
    chmodSync(node, 0o600);
    const r = asNobody(["--input-type=module", "-e", `import { openKvm } from ${JSON.stringify(DIST_INDEX)}; try { openKvm(${JSON.stringify(node)}); } catch (e) { console.log(e.code + ": " + e.message); }`]);
    expect(r.stdout.trim()).toBe(`KvmPermissionDenied: cannot open ${node}: permission denied; add your user to the kvm group (sudo usermod -aG kvm "$USER", then log in again) or run as root`);
  });
  const worldRw = (statSync("/dev/kvm").mode & 0o006) === 0o006;
  it.skipIf(worldRw)("ts-vmm cpu-features as a user outside the kvm group: one line, exit 2 (skipped only where /dev/kvm is world read-write, so every user may open it; the openKvm test above still runs)", () => {
    const r = asNobody([CLI, "cpu-features"]);
    expect(r.status).toBe(2);
    expect(oneLine(r.stderr)).toMatch(/^ts-vmm: cannot open \/dev\/kvm: permission denied; add your user to the kvm group/);
  });
});
