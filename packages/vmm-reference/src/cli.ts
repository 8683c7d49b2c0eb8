#!/usr/bin/env node
import { join } from "node:path";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { UsageError, parseCommand, parseIrqchip, parseTimeout, runArgs, withConfig, parseWhole, MAX_VCPUS, type OptionValue, type RunArgs } from "./cli-args.js";
import { liveCpuFeatureReport } from "./cpu/command.js";
import { formatCpuFeatureReport } from "./cpu/report.js";
import { debugExitStatus } from "@ts-vmm/virtio-devices/legacy";
import type { VirtioDeviceConfig } from "./devices/virtio-manager.js";
import { VmmError } from "./error.js";
import { PACKAGE_ROOT } from "./package-root.js";
import { MetricsWriter } from "./metrics/writer.js";
import { Vmm, openKvm } from "./vmm.js";
import { release } from "node:os";
import { readMemoryHostFacts } from "./machine/memory-host.js";
import { formatMemoryCapabilityReport, memoryCapabilityReport } from "./machine/memory-report.js";
import type { RunResult } from "./run-result.js";
import { TRACE_STARTUP, mark, startupLines } from "./startup-trace.js";

if (TRACE_STARTUP) {
  mark("node bootstrap done", performance.timeOrigin + performance.nodeTiming.bootstrapComplete);
  mark("cli modules loaded");
}

const USAGE = `usage: ts-vmm run --kernel PATH [--initrd PATH] [--cmdline TEXT] [--vcpus N]
                  [--memory SIZE[,backend=memfd|guest_memfd|file:PATH][,hugepages=2M|1G|thp]
                                [,shared=on|off][,prefault=on]]
                  [--cpu-template baseline|host|FILE.json] [--cpu-features +shstk,-x2apic]
                  [--config FILE.json] [--timeout SECONDS] [--irqchip split|full] [--cmos on|off]
                  [--disk PATH[,ro][,poll_us=N][,RATE]]... [--net tap=NAME[,mac=MAC][,RATE]]...
                  [--rng] [--console | --console-socket PATH] [--rtc] [--vsock cid=N,uds=PATH]
                  [--balloon [amount_mib=N][,deflate_on_oom=on][,stats_s=N][,free_page_reporting=on]]
                  [--api-sock PATH] [--snapshot-on-signal SIGUSR1|SIGUSR2|SIGHUP:DIR]
                  [--metrics] [--metrics-path PATH]
       ts-vmm run --restore SNAPSHOT,mem=MEMFILE [--timeout SECONDS] [--snapshot-on-signal SIG:DIR]
                  [--api-sock PATH]
       ts-vmm serve --api-sock PATH [--timeout SECONDS]
       ts-vmm pool --snapshot SNAPSHOT,mem=MEMFILE --size N --api-sock PATH
                  [--max-running N] [--log-dir DIR]
       ts-vmm cpu-features [--json] [--all] [--cpu-template T] [--cpu-features …] [--vcpus N]
                  [--irqchip split|full]
       ts-vmm host-info [--json]
       ts-vmm demo [--mem SIZE] [--vcpus N] [--timeout SECONDS]
       ts-vmm --version | --help

demo boots the micro-guest shipped in this package (dist/guest/micro-guest.elf, the
guest \`npm start\` boots in the repository) in its hello mode: ts-vmm run --kernel
<that file> --cmdline mode=hello.

--restore continues a snapshotted guest (machine, devices and CPU from the
snapshot; its memory file is mapped copy-on-write and never changed).
--snapshot-on-signal: on that signal the VMM pauses the guest, writes a full
snapshot to DIR/vm.snap and DIR/vm.mem, says so on stderr, and resumes.

run boots a PVH ELF or bzImage with N vCPUs (default 1), COM1 on stdin and
stdout, and the debug-exit port 0xf4. --memory SIZE is MiB, or with a unit
(512M, 2G, 1T; default 256M; --mem is an alias); after it: backend=guest_memfd
(KVM guest_memfd mapped by the VMM, Linux 6.18) or file:PATH (shared: the file
holds guest RAM; shared=off: a private copy-on-write view of it), hugepages=2M
or 1G (hugetlb pages from the host's pool, checked before the VM starts) or thp
(transparent huge pages on private memory), prefault=on (all of RAM faulted in
before the guest runs). --config reads the same settings from JSON (kernel,
initrd, cmdline, memory, vcpus, cpuTemplate, cpuFeatures, timeout, or
machineConfig in Firecracker's shape with huge_pages); flags win. When stdin is a terminal it is in raw mode:
Ctrl-A x quits, as in QEMU. virtio-mmio devices: --disk (virtio-blk on a raw
image, repeatable, ",ro" for read-only, "poll_us=N" polls the request queue for
up to N µs after it runs empty, adaptively: 0 to 1000, default 50, 0 is off), --rng (virtio-rng), --console
(virtio-console on stdin/stdout instead of COM1's input) or --console-socket
(virtio-console on a Unix socket the VMM connects to), --net (virtio-net on a
tap interface, repeatable: attached to if it exists, created otherwise, "%d"
numbers it; mac= sets the MAC, default random), --balloon (virtio-balloon:
amount_mib=N starts with N MiB ballooned, deflate_on_oom=on lets the guest take
pages back when it runs out of memory, stats_s=N asks for memory statistics
every N seconds, free_page_reporting=on returns the pages the guest reports
free; ballooned and reported pages go back to the host), --rtc (virtio-rtc: UTC,
TAI and MONOTONIC clocks from the host, with alarms), --vsock (virtio-vsock
with guest CID N; host programs connect to the Unix socket PATH and write
"CONNECT <port>\n", answered "OK <host port>\n"; the guest's connections to
host port P go to the Unix socket PATH_P). RATE limits a disk or
each direction of a net device: bw=BYTES_PER_S, ops=OPS_PER_S (requests or
frames), bw_burst=BYTES and ops_burst=OPS (a one-time burst on top), any of
them, e.g. --disk disk.img,bw=10485760,ops=1000 or --net tap=tap0,bw=125000000.
--irqchip: split (the default: local APICs in KVM, the I/O APIC in the VMM, no
8259 or PIT; Linux needs ACPI) or full (KVM's irqchip and PIT, for acpi=off guests).
--cmos: on (the default: a CMOS real-time clock on ports 0x70/0x71 with the host's
UTC time, no interrupt) or off (no device; the FADT says "CMOS RTC not present").
--metrics prints the VMM's counters (exits by reason and by device, virtio
device counters, KVM's own statistics) as one JSON object on stderr when the
VM ends; --metrics-path appends the same as a JSON line to PATH (created if
missing; a named pipe works) every 60 s and once at the end.

--api-sock serves the Firecracker-compatible API on a Unix socket while the VM
runs (pause, snapshot, balloon, Ctrl-Alt-Del, metrics). serve waits for the
VM's configuration over the API (PUT /machine-config, /boot-source, /drives,
...) and boots it on PUT /actions {"action_type": "InstanceStart"}; serial
output and the exit status are as with run. Its --timeout counts from
InstanceStart: the wait for configuration has no limit.

pool keeps N VMs restored from the snapshot (not yet running) and hands one
out per request on its API socket: PUT /vms runs one and answers 201 with its
id once its guest runs, GET /vms lists the running ones, GET /vms/ID shows one,
DELETE /vms/ID stops it, GET / shows the pool's counters; a replacement is
restored in the background. At most --max-running (default 64) run at once.
Each VM's serial output goes to DIR/ID.log with --log-dir, else it is
discarded. SIGINT or SIGTERM stops every VM and the pool (status 130).

cpu-features prints, per CPU feature, whether the host CPU has it, KVM
supports it and the VM would see it, the kvm_amd/kvm_intel parameters, and
the APICv/AVIC inhibits the configuration would raise.

host-info prints the host's memory capabilities: KVM's guest_memfd flags,
USER_MEMORY2 and PRE_FAULT_MEMORY, the huge page pools per size, the THP
modes, and which --memory backends this host can serve.

Exit status: (value << 1) | 1 when the guest writes value to port 0xf4 (as
QEMU's isa-debug-exit); 0 when it powers off or resets (there is no reboot)
or is stopped; 2 on a usage or VMM error, a refused CPU feature, or when KVM
cannot run the guest (emulation failure, failed VM entry); 4 when the guest
triple-faults or crashes; 124 on
--timeout; 130 when stopped by SIGINT or SIGTERM (even, because odd statuses
belong to debug-exit).`;

/** Where the CLI writes: serial output to `stdout`, diagnostics to `stderr`. */
export interface CliStdout {
  /** Writes the guest's serial output (and the CLI's messages). */
  write(b: Uint8Array | string): unknown;
  /** A stream's 'error' events (EPIPE) are handled: the VM is stopped and the status is 2. */
  on?(event: "error", listener: (e: Error) => void): unknown;
  /** Removes the 'error' listener when the run ends. */
  off?(event: "error", listener: (e: Error) => void): unknown;
}

/** Process-level hooks of {@link runCli}; the `ts-vmm` binary passes all of them, tests pass some. */
export interface CliHooks {
  /** SIGINT/SIGTERM stop the VM (status 130, with a message). */
  readonly signals?: boolean;
  /**
   * COM1's input (the binary passes process.stdin). A terminal is put in raw
   * mode while the VM runs, and Ctrl-A x stops it; every other byte goes to
   * the guest's UART.
   */
  readonly stdin?: CliStdin | undefined;
}

/** The input stream {@link CliHooks.stdin} takes: process.stdin, or any readable with these members. */
export interface CliStdin {
  /** Input bytes, forwarded to COM1 (Ctrl-A x on a terminal stops the VM). */
  on(event: "data", listener: (b: Buffer) => void): unknown;
  /** Removes the 'data' listener when the run ends. */
  off(event: "data", listener: (b: Buffer) => void): unknown;
  /** Stops reading when the run ends, so the process can exit. */
  pause?(): unknown;
  /** Starts reading before the VM runs. */
  resume?(): unknown;
  /** True for a terminal: raw mode and Ctrl-A x. */
  readonly isTTY?: boolean;
  /** Puts a terminal in raw mode for the run and restores it afterwards. */
  setRawMode?(raw: boolean): unknown;
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}

/**
 * Runs the `ts-vmm` command line. Resolves to the process exit status.
 * Serial output goes to `stdout`, diagnostics to `stderr` (one line per
 * error, naming the bad flag and value). If `stdout` reports an error (EPIPE
 * when the reader went away), the VM is stopped and the status is 2.
 */
export async function runCli(
  argv: readonly string[],
  stdout: CliStdout = process.stdout,
  stderr: { write(s: string): unknown } = process.stderr,
  hooks: CliHooks = {},
): Promise<number> {
  const fail = (e: unknown): number => {
    if (e instanceof UsageError || (e instanceof Error && e.name === "ApiServerError")) {
      stderr.write(`ts-vmm: ${e.message}\n`);
      return 2;
    }
    const err = e as Error;
    // One line: the cause only when the message does not already say it.
    const cause = e instanceof VmmError && err.cause instanceof Error && !err.message.includes(err.cause.message) ? ` (caused by: ${err.cause.message})` : "";
    stderr.write(`ts-vmm: ${err.message}${cause}\n`);
    return e instanceof VmmError ? 2 : 70;
  };
  let cmd;
  try {
    cmd = parseCommand(argv);
  } catch (e) {
    return fail(e);
  }
  if (cmd.command === "version") {
    stdout.write(`ts-vmm ${version()}\n`);
    return 0;
  }
  if (cmd.command === "help") {
    stdout.write(USAGE + "\n");
    return 0;
  }
  if (cmd.command === "cpu-features") {
    try {
      const v = withConfig(cmd.values);
      const s = (k: string): string | undefined => (typeof v[k] === "string" ? (v[k] as string) : undefined);
      const report = liveCpuFeatureReport({
        template: s("cpu-template"),
        switches: s("cpu-features"),
        vcpus: s("vcpus") === undefined ? 1 : parseWhole("--vcpus", s("vcpus")!, 1, MAX_VCPUS),
        irqchip: parseIrqchip(s("irqchip")),
        all: v["all"] === true,
      });
      stdout.write(v["json"] === true ? JSON.stringify(report, null, 2) + "\n" : formatCpuFeatureReport(report));
      return report.refusal ? 2 : 0;
    } catch (e) {
      return fail(e);
    }
  }
  if (cmd.command === "host-info") {
    try {
      const kvm = openKvm();
      let report;
      try {
        report = memoryCapabilityReport(readMemoryHostFacts(kvm), release());
      } finally {
        kvm.close();
      }
      stdout.write(cmd.values["json"] === true ? JSON.stringify(report, null, 2) + "\n" : formatMemoryCapabilityReport(report));
      return 0;
    } catch (e) {
      return fail(e);
    }
  }
  if (cmd.command === "serve") return serveCommand(cmd.values, stdout, stderr, hooks, fail);
  if (cmd.command === "pool") {
    const { poolCommand } = await import("./pool/command.js");
    return poolCommand(cmd.values, stderr, hooks.signals === true, fail);
  }
  if (cmd.command === "demo") {
    const guest = fileURLToPath(new URL("dist/guest/micro-guest.elf", PACKAGE_ROOT));
    if (!existsSync(guest)) return fail(new UsageError(`the micro-guest is not in this package (${guest}): in the repository, pnpm build makes it`));
    stderr.write(`ts-vmm: booting the micro-guest ${guest} (mode=hello)\n`);
    return runCommand({ ...cmd.values, kernel: guest, cmdline: "mode=hello" }, stdout, stderr, hooks, fail);
  }
  return runCommand(cmd.values, stdout, stderr, hooks, fail);
}

async function runCommand(
  values: Readonly<Record<string, OptionValue>>,
  stdout: CliStdout,
  stderr: { write(s: string): unknown },
  hooks: CliHooks,
  fail: (e: unknown) => number,
): Promise<number> {
  let vmm: Vmm;
  let a: RunArgs;
  let metricsWriter: MetricsWriter | undefined;
  try {
    a = runArgs(values);
    mark("Vmm.create start");
    vmm = a.restore !== undefined ? Vmm.restore(a.restore) : Vmm.create({
      kernel: a.kernel,
      ...(a.initrd !== undefined ? { initrd: a.initrd } : {}),
      ...(a.cmdline !== undefined ? { cmdline: a.cmdline } : {}),
      memMiB: a.memMiB,
      memory: a.memory,
      vcpus: a.vcpus,
      ...(a.cpuTemplate !== undefined ? { cpuTemplate: a.cpuTemplate } : {}),
      ...(a.cpuFeatures !== undefined ? { cpuFeatures: a.cpuFeatures } : {}),
      virtio: a.virtio,
      irqchip: a.irqchip,
      cmos: a.cmos,
    });
    if (a.restore !== undefined) {
      // The machine is the snapshot's: what the API reports and whether stdin belongs to a console come from it.
      const m = vmm.machine;
      a = { ...a, memMiB: m.memMiB, vcpus: m.vcpus, irqchip: m.irqchip, virtio: [...m.virtio] };
    }
    if (a.metricsPath !== undefined) {
      const m = vmm;
      try {
        metricsWriter = MetricsWriter.open({ path: a.metricsPath, source: () => m.metrics() });
      } catch (e) {
        m.close();
        throw e;
      }
    }
  } catch (e) {
    return fail(e);
  }
  const run = {
    timeoutS: a.timeoutS,
    consoleOnStdio: a.virtio.some((d) => d.kind === "console" && d.socketPath === undefined),
    snapshotOnSignal: a.snapshotOnSignal,
    printMetrics: a.metrics,
    metricsWriter,
  };
  if (a.apiSock === undefined) return superviseRun(vmm, run, stdout, stderr, hooks);
  // The API serves runtime calls on the VM the flags started (loaded only when asked for).
  const { startApiServer } = await import("./api/server.js");
  const { VmmBackend } = await import("./api/vmm-backend.js");
  const { configOfRunArgs } = await import("./api/run-config.js");
  let ended!: () => void;
  const done = new Promise<void>((resolve) => { ended = resolve; });
  const backend = new VmmBackend({
    run: () => Promise.reject(new Error("the VM already runs")),
    metricsSink: apiMetricsSink,
  });
  backend.adopt(vmm, done);
  let server;
  try {
    server = await startApiServer({ socketPath: a.apiSock, backend, started: configOfRunArgs(a) });
  } catch (e) {
    vmm.close();
    return fail(e);
  }
  try {
    return await superviseRun(vmm, run, stdout, stderr, hooks);
  } finally {
    ended();
    await server.close();
  }
}

/**
 * `ts-vmm serve --api-sock PATH`: the API configures the VM; InstanceStart
 * (or a snapshot load) runs it as `ts-vmm run` would, and the process ends
 * with the run's status. SIGINT/SIGTERM before the start: status 130.
 */
async function serveCommand(
  values: Readonly<Record<string, OptionValue>>,
  stdout: CliStdout,
  stderr: { write(s: string): unknown },
  hooks: CliHooks,
  fail: (e: unknown) => number,
): Promise<number> {
  const sock = values["api-sock"];
  let timeoutS: number;
  try {
    if (typeof sock !== "string" || sock === "") throw new UsageError("serve needs --api-sock PATH");
    timeoutS = parseTimeout(typeof values["timeout"] === "string" ? values["timeout"] : undefined);
  } catch (e) {
    return fail(e);
  }
  const { startApiServer } = await import("./api/server.js");
  const { VmmBackend } = await import("./api/vmm-backend.js");
  let signal: NodeJS.Signals | undefined;
  let wake!: (r: Promise<number> | undefined) => void;
  const first = new Promise<Promise<number> | undefined>((resolve) => { wake = resolve; });
  const onSignal = (s: NodeJS.Signals): void => {
    signal ??= s;
    wake(undefined);
  };
  const unhook = (): void => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };
  const backend = new VmmBackend({
    run: (vmm) => {
      if (hooks.signals) unhook(); // the run's own handlers take over
      const p = superviseRun(vmm, { timeoutS, consoleOnStdio: false }, stdout, stderr, hooks);
      wake(p);
      return p;
    },
    metricsSink: apiMetricsSink,
  });
  let server;
  try {
    server = await startApiServer({ socketPath: sock, backend });
  } catch (e) {
    return fail(e);
  }
  if (hooks.signals) {
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
  }
  try {
    const run = await first;
    if (run === undefined) {
      stderr.write(`ts-vmm: stopped by ${signal ?? "a signal"} before the VM was started\n`);
      return 130;
    }
    return await run;
  } finally {
    if (hooks.signals) unhook();
    await server.close();
  }
}

/** The API's `PUT /metrics` file: a MetricsWriter on the VM's counters. */
const apiMetricsSink = (path: string, vmm: Vmm): MetricsWriter => MetricsWriter.open({ path, source: () => vmm.metrics() });

/** How {@link superviseRun} runs the VM. */
interface SuperviseOptions {
  /** --timeout (0: none). */
  readonly timeoutS: number;
  /** A virtio-console on stdio takes stdin (not COM1). */
  readonly consoleOnStdio: boolean;
  /** `--snapshot-on-signal`: on this signal, pause, write DIR/vm.snap and DIR/vm.mem, resume. */
  readonly snapshotOnSignal?: { readonly signal: NodeJS.Signals; readonly dir: string } | undefined;
  /** `--metrics`: print Vmm.metrics() on stderr when the VM ends. */
  readonly printMetrics?: boolean;
  /** `--metrics-path`: closed (with a last line) when the VM ends. */
  readonly metricsWriter?: MetricsWriter | undefined;
}

/**
 * Runs a created VM as `ts-vmm run` does: serial output to stdout, stdin to
 * COM1 (raw mode and Ctrl-A x on a terminal), signals and the timeout stop
 * it; resolves to the exit status.
 */
async function superviseRun(
  vmm: Vmm,
  opts: SuperviseOptions,
  stdout: CliStdout,
  stderr: { write(s: string): unknown },
  hooks: CliHooks,
): Promise<number> {
  const timeout = opts.timeoutS;
  const consoleOnStdio = opts.consoleOnStdio;
  let timedOut = false;
  const timer = timeout > 0 ? setTimeout(() => { timedOut = true; vmm.stop(); }, timeout * 1000) : undefined;
  // If the serial output goes away (`ts-vmm run | head`: EPIPE), stop the VM
  // instead of dying of an unhandled 'error' event, and write no more.
  let outputError: Error | undefined;
  const onOutputError = (e: Error): void => {
    if (outputError) return;
    outputError = e;
    vmm.stop();
  };
  let signal: NodeJS.Signals | undefined;
  const onSignal = (s: NodeJS.Signals): void => {
    signal ??= s;
    vmm.stop();
  };
  if (hooks.signals) {
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
  }
  // --snapshot-on-signal: pause, write DIR/vm.snap and DIR/vm.mem, resume; one at a time.
  const snapshotOnSignal = opts.snapshotOnSignal;
  let snapshotting = false;
  const onSnapshotSignal = (): void => {
    if (snapshotting || snapshotOnSignal === undefined) return;
    snapshotting = true;
    const dir = snapshotOnSignal.dir;
    // Resume only a VM this handler paused: one the API paused stays paused.
    const wasRunning = vmm.state === "Running";
    void (async () => {
      try {
        await vmm.pause();
        const info = await vmm.snapshot({ snapshotPath: join(dir, "vm.snap"), memFilePath: join(dir, "vm.mem") });
        stderr.write(`ts-vmm: snapshot written to ${info.snapshotPath} and ${info.memFilePath} (${info.durationMs.toFixed(1)} ms)\n`);
      } catch (e) {
        stderr.write(`ts-vmm: snapshot failed: ${(e as Error).message}\n`);
      } finally {
        snapshotting = false;
        try {
          if (vmm.state === "Paused" && wasRunning) vmm.resume();
        } catch (e) {
          // A snapshot of the API's is being written: the VM stays paused.
          stderr.write(`ts-vmm: not resumed after the signal's snapshot: ${(e as Error).message}\n`);
        }
      }
    })();
  };
  if (snapshotOnSignal !== undefined) process.on(snapshotOnSignal.signal, onSnapshotSignal);
  // stdin feeds COM1. A terminal goes to raw mode, so Ctrl-C reaches the guest
  // as a byte, and Ctrl-A x quits (as QEMU); Ctrl-A Ctrl-A sends one Ctrl-A.
  let quitByKey = false;
  // With a virtio-console on stdio, stdin is the console's (VirtioConsole reads it), not COM1's.
  const input = consoleOnStdio ? undefined : hooks.stdin;
  let tty: CliStdin | undefined;
  let ctrlA = false;
  const onInput = (chunk: Buffer): void => {
    if (!tty) {
      vmm.sendSerialInput(chunk);
      return;
    }
    const pass: number[] = [];
    for (const b of chunk) {
      if (ctrlA) {
        ctrlA = false;
        if (b === 0x78 || b === 0x58) {
          quitByKey = true;
          vmm.stop();
        } else if (b === 0x01) pass.push(0x01);
        // any other key after Ctrl-A is dropped, as QEMU's escape does
      } else if (b === 0x01) ctrlA = true;
      else pass.push(b);
    }
    if (pass.length > 0) vmm.sendSerialInput(Uint8Array.from(pass));
  };
  // Even if the process dies on the way, leave the terminal as we found it.
  const restoreTty = (): void => { tty?.setRawMode?.(false); };
  let result;
  try {
    const running = vmm.run({ serial: (b) => { if (!outputError) stdout.write(b); } });
    // The streams are set up while the guest starts: the binary passes process.stdout and
    // process.stdin lazily, and their first use loads Node's stream modules (~3 ms here,
    // DESIGN.md, start-up). With vCPU 0's early window, run() has already written the
    // window's serial output (io.serial is called inline there, which loads stdout then);
    // the workers' output and stdin's data come in later events, so nothing is missed (a
    // write error of the window's is emitted asynchronously, after the handler below is on).
    stdout.on?.("error", onOutputError);
    tty = input?.isTTY === true && input.setRawMode !== undefined ? input : undefined;
    if (tty) {
      tty.setRawMode?.(true);
      process.on("exit", restoreTty);
    }
    if (input) {
      input.on("data", onInput);
      input.resume?.();
    }
    result = await running;
  } finally {
    if (timer) clearTimeout(timer);
    if (snapshotOnSignal !== undefined) process.off(snapshotOnSignal.signal, onSnapshotSignal);
    if (hooks.signals) {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    }
    if (input) {
      input.off("data", onInput);
      input.pause?.();
    }
    if (tty) {
      restoreTty();
      process.off("exit", restoreTty);
    }
    vmm.close();
    opts.metricsWriter?.close();
  }
  if (opts.printMetrics === true) stderr.write(`${JSON.stringify(vmm.metrics())}\n`);
  const metricsWriter = opts.metricsWriter;
  if (metricsWriter !== undefined && metricsWriter.missed > 0) {
    stderr.write(`ts-vmm: ${metricsWriter.missed} metrics line(s) not written to ${metricsWriter.path}: ${metricsWriter.lastError ?? "unknown error"}\n`);
  }
  if (TRACE_STARTUP) for (const l of startupLines()) stderr.write(`${l}\n`);
  if (outputError) {
    // Stay subscribed: the stream may report the same failure again; it is already handled.
    stderr.write(`ts-vmm: serial output failed (${outputError.message}); stopped the VM\n`);
    return 2;
  }
  stdout.off?.("error", onOutputError);
  // What the devices refused or reset for (as QEMU logs its virtio errors), at most 20 lines.
  for (const v of vmm.virtio.violations.slice(0, 20)) stderr.write(`ts-vmm: virtio: ${v}\n`);
  switch (result.reason) {
    case "DebugExit":
      return debugExitStatus(result.guestExitValue ?? 0);
    case "PowerOff":
    case "Reset":
    case "SystemEvent":
      stderr.write(`ts-vmm: ${result.detail ?? result.reason}\n`);
      return 0;
    case "Shutdown":
      stderr.write(`ts-vmm: ${result.detail ?? "the guest shut down (triple fault)"}\n`);
      // Where the other vCPUs were and how many exits each had: what is left to go on (on AMD,
      // KVM has reset the faulting vCPU's registers before it reports the fault).
      writeVcpuStates(stderr, result.vcpus);
      return 4;
    case "Stopped":
      if (signal) {
        stderr.write(`\nts-vmm: stopped by ${signal}\n`);
        writeVcpuStates(stderr, result.vcpus);
        return 130;
      }
      if (quitByKey) {
        stderr.write("\r\nts-vmm: quit (Ctrl-A x)\r\n");
        return 0;
      }
      stderr.write(timedOut ? `ts-vmm: timed out after ${timeout} s\n` : "ts-vmm: stopped\n");
      if (timedOut) writeVcpuStates(stderr, result.vcpus);
      return timedOut ? 124 : 0;
    case "Error":
      stderr.write(`ts-vmm: ${result.detail ?? "error"}\n`);
      return 2;
  }
}

const MP_STATES = ["runnable", "uninitialized", "init-received", "halted", "sipi-received", "stopped", "check-stop", "operating", "load"];

/** After a stop from outside (signal, timeout) or a triple fault: one line per vCPU saying where it was. */
function writeVcpuStates(stderr: { write(s: string): unknown }, states: RunResult["vcpus"]): void {
  for (const v of states ?? []) {
    const exits = Object.entries(v.exits).map(([k, n]) => `${k}=${n}`).join(" ");
    const mp = v.mpState === null ? "unknown" : (MP_STATES[v.mpState] ?? String(v.mpState));
    stderr.write(`ts-vmm: vCPU ${v.id}: rip=${v.rip} rflags=${v.rflags} cr0=${v.cr0} mp_state=${mp}; exits: ${exits || "none"}\n`);
  }
}

// process.stdout, process.stderr and process.stdin are getters that create their streams (and
// load Node's stream modules) when first read: ~3 ms here. The binary reads them when first
// used, which for `run` is after the guest started (superviseRun).
const lazyStdout: CliStdout = {
  write: (b) => process.stdout.write(b),
  on: (event, listener) => process.stdout.on(event, listener),
  off: (event, listener) => process.stdout.off(event, listener),
};
const lazyStderr = { write: (s: string): unknown => process.stderr.write(s) };
const lazyStdin: CliStdin = {
  on: (event, listener) => process.stdin.on(event, listener),
  off: (event, listener) => process.stdin.off(event, listener),
  pause: () => process.stdin.pause(),
  resume: () => process.stdin.resume(),
  get isTTY() {
    return process.stdin.isTTY === true;
  },
  setRawMode: (raw) => process.stdin.setRawMode?.(raw),
};

/**
 * The process entry: runs {@link runCli} on process.argv with signals and
 * stdin, then exits with its status (bin.ts calls it; so does running cli.js).
 */
export function main(): void {
  runCli(process.argv.slice(2), lazyStdout, lazyStderr, { signals: true, stdin: lazyStdin }).then(
    // Exit once stdout has taken everything written so far (a pipe or file may lag).
    (code) => { process.stdout.write("", () => process.exit(code)); },
    (e: unknown) => {
      process.stderr.write(`ts-vmm: ${(e as Error).stack ?? String(e)}\n`);
      process.exit(70);
    },
  );
}

const invokedDirectly = process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
if (invokedDirectly) main();
