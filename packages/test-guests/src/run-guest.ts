import { spawn, type ChildProcess } from "node:child_process";
import { resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { startEchoServer, type EchoServer } from "./echo-server.js";
import { TestGuestsError } from "./error.js";
import type { DeviceSpec, GuestIo, LaunchSpec, ResolvedDevice, RunningVm, VmmLauncher } from "./launcher.js";
import { qemuLauncher } from "./qemu.js";
import { parseResults, type GuestResults, type SerialLine } from "./results.js";

/** Options of {@link runGuest}. */
export interface RunGuestOptions {
  /** `"qemu"` or any {@link VmmLauncher} (ours, once it exists). */
  readonly vmm: "qemu" | VmmLauncher;
  /** PVH ELF (see buildMicroGuest) or bzImage. */
  readonly kernel: string;
  /** Initial ramdisk (Linux guests). */
  readonly initrd?: string;
  /** Guest command line (the VMM appends `virtio_mmio.device=` entries). Default "". */
  readonly cmdline?: string;
  /** Guest RAM in MiB, 2..65536 (default 64; the micro-guest needs >= 32, fuzz mode >= 64). */
  readonly memMiB?: number;
  /** vCPUs, 1..64 (default 1). */
  readonly vcpus?: number;
  /** virtio-mmio devices to attach; each kind must be in the launcher's `provides`. */
  readonly devices?: readonly DeviceSpec[];
  /** Hard limit on the run; the VMM's process group is killed after it. Default 30 s. */
  readonly timeoutMs?: number;
  /** Stop the VMM as soon as the serial output matches (the early-boot test's marker). */
  readonly stopOnSerial?: string | RegExp;
  /** Called with each chunk of serial output as it arrives (for progress logs). */
  readonly onSerial?: (text: string) => void;
  /** VMM-specific arguments appended last (QEMU: extra flags). */
  readonly extraArgs?: readonly string[];
}

/** How a {@link runGuest} run ended. */
export interface GuestRun {
  /** The value the guest wrote to debug-exit port 0xf4, or null if it did not exit that way. */
  readonly exitCode: number | null;
  /** The VMM process's own exit (null for in-process VMMs). */
  readonly vmmExit: { readonly code: number | null; readonly signal: string | null } | null;
  /** True if the harness killed the VMM because {@link RunGuestOptions.timeoutMs} passed. */
  readonly timedOut: boolean;
  /** True if the run was ended by {@link RunGuestOptions.stopOnSerial}. */
  readonly stoppedOnSerial: boolean;
  /** Everything the guest wrote to its serial port, decoded as latin1. */
  readonly serial: string;
  /** The serial output split into lines, each with its host arrival time. */
  readonly lines: readonly SerialLine[];
  /** The micro-guest's PASS/FAIL/SKIP/RESULT lines, parsed (empty for other guests). */
  readonly results: GuestResults;
  /** Start of the VMM process to its end, in ms. */
  readonly wallMs: number;
  /** Start of the VMM process to the first serial byte, in ms (null if none). */
  readonly firstSerialByteMs: number | null;
  /** The VMM's stderr (QEMU's warnings and errors: virtio_error messages land here). */
  readonly vmmLog: string;
  /** The launcher's name. */
  readonly vmm: string;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function killGroup(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    try {
      child.kill("SIGKILL");
    } catch {
      /* already gone */
    }
  }
}

function checkInt(name: string, v: number, lo: number, hi: number): void {
  if (!Number.isInteger(v) || v < lo || v > hi) {
    throw new TestGuestsError("InvalidArgument", `${name} must be an integer in ${lo}..${hi}, got ${v}`);
  }
}

/**
 * Runs a guest under a VMM and returns what it printed and how it ended.
 * Devices are validated against the launcher's `provides` before anything
 * starts; the console's echo peer is created here; the VMM process runs in
 * its own process group and the whole group is killed on timeout, on
 * `stopOnSerial`, and if the Node process exits first. Everything the run
 * created is removed before this resolves.
 *
 * @throws {@link TestGuestsError} `InvalidArgument` for out-of-range options,
 *   `Unsupported` if the VMM cannot provide a requested device, `SpawnFailed`
 *   if the VMM process cannot be started.
 */
export async function runGuest(options: RunGuestOptions): Promise<GuestRun> {
  const launcher = options.vmm === "qemu" ? qemuLauncher : options.vmm;
  const memMiB = options.memMiB ?? 64;
  const vcpus = options.vcpus ?? 1;
  const timeoutMs = options.timeoutMs ?? 30_000;
  checkInt("memMiB", memMiB, 2, 65536);
  checkInt("vcpus", vcpus, 1, 64);
  checkInt("timeoutMs", timeoutMs, 1, 3_600_000);
  const devices = options.devices ?? [];
  const provided = launcher.provides;
  for (const d of devices) {
    if (!provided.includes(d.kind)) {
      throw new TestGuestsError("Unsupported", `${launcher.name} does not provide a ${d.kind} device`);
    }
    if (d.kind === "vsock") checkInt("vsock cid", d.cid, 3, 0xffffffff);
  }
  if (devices.filter((d) => d.kind === "console").length > 1) {
    throw new TestGuestsError("InvalidArgument", "at most one console device");
  }

  let echo: EchoServer | undefined;
  try {
    const resolved: ResolvedDevice[] = [];
    for (const d of devices) {
      if (d.kind === "console") {
        echo ??= await startEchoServer();
        resolved.push({ kind: "console", socketPath: echo.socketPath });
      } else if (d.kind === "blk") {
        resolved.push({ ...d, path: resolve(d.path) });
      } else resolved.push(d);
    }
    let cmdline = options.cmdline ?? "";
    const vsock = devices.find((d) => d.kind === "vsock");
    if (vsock && vsock.kind === "vsock") cmdline = `${cmdline} vsock_cid=${vsock.cid}`.trim();
    const spec: LaunchSpec = {
      kernel: resolve(options.kernel),
      ...(options.initrd !== undefined ? { initrd: resolve(options.initrd) } : {}),
      cmdline,
      memMiB,
      vcpus,
      devices: resolved,
      extraArgs: options.extraArgs ?? [],
    };
    const plan = await launcher.plan(spec);
    return await execute(launcher.name, plan, options, timeoutMs);
  } finally {
    await echo?.close();
  }
}

/** Collects serial output into lines with arrival times. */
class SerialSink {
  readonly lines: SerialLine[] = [];
  private partial = "";
  serial = "";
  firstByteMs: number | null = null;
  constructor(private readonly t0: number, private readonly onText?: (t: string) => void) {}
  push(bytes: Uint8Array): void {
    const now = performance.now() - this.t0;
    if (this.firstByteMs === null && bytes.length > 0) this.firstByteMs = now;
    const text = Buffer.from(bytes).toString("latin1");
    this.serial += text;
    this.onText?.(text);
    const parts = (this.partial + text).split("\n");
    this.partial = parts.pop() ?? "";
    for (const p of parts) this.lines.push({ text: p.replace(/\r$/, ""), tMs: now });
  }
  finish(now: number): void {
    if (this.partial) this.lines.push({ text: this.partial.replace(/\r$/, ""), tMs: now });
    this.partial = "";
  }
}

async function execute(
  name: string,
  plan: Awaited<ReturnType<VmmLauncher["plan"]>>,
  options: RunGuestOptions,
  timeoutMs: number,
): Promise<GuestRun> {
  const t0 = performance.now();
  const sink = new SerialSink(t0, options.onSerial);
  const stop = options.stopOnSerial;
  const matches = (): boolean =>
    stop === undefined ? false : typeof stop === "string" ? sink.serial.includes(stop) : stop.test(sink.serial);
  let timedOut = false;
  let stoppedOnSerial = false;

  if (plan.kind === "in-process") {
    let vm: RunningVm | undefined;
    const io: GuestIo = {
      serial: (b) => {
        sink.push(b);
        if (!stoppedOnSerial && matches()) {
          stoppedOnSerial = true;
          void vm?.stop();
        }
      },
    };
    vm = await plan.start(io);
    const timer = setTimeout(() => {
      timedOut = true;
      void vm?.stop();
    }, timeoutMs);
    let exited: { guestExitValue: number | null; detail?: string };
    try {
      exited = await vm.exited;
    } finally {
      clearTimeout(timer);
      await vm.stop();
    }
    const end = performance.now() - t0;
    sink.finish(end);
    return {
      exitCode: timedOut || stoppedOnSerial ? null : exited.guestExitValue,
      vmmExit: null,
      timedOut,
      stoppedOnSerial,
      serial: sink.serial,
      lines: sink.lines,
      results: parseResults(sink.lines),
      wallMs: end,
      firstSerialByteMs: sink.firstByteMs,
      vmmLog: exited.detail ?? "",
      vmm: name,
    };
  }

  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", () => {
      for (const c of live) killGroup(c);
    });
  }
  let child: ChildProcess;
  try {
    child = spawn(plan.file, [...plan.args], {
      detached: true, // own process group, killed as a whole
      stdio: ["ignore", "pipe", "pipe"],
      env: plan.env ? { ...process.env, ...plan.env } : process.env,
    });
  } catch (cause) {
    throw new TestGuestsError("SpawnFailed", `could not start ${plan.file}`, { cause });
  }
  live.add(child);
  let stderr = "";
  child.stderr?.on("data", (b: Buffer) => {
    if (stderr.length < 1 << 20) stderr += b.toString("utf8");
  });
  child.stdout?.on("data", (b: Buffer) => {
    sink.push(b);
    if (!stoppedOnSerial && matches()) {
      stoppedOnSerial = true;
      killGroup(child);
    }
  });
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(child);
  }, timeoutMs);
  try {
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((res, rej) => {
      child.once("error", (cause) => rej(new TestGuestsError("SpawnFailed", `could not start ${plan.file}: ${cause.message}`, { cause })));
      child.once("close", (c, s) => res([c, s]));
    });
    const end = performance.now() - t0;
    sink.finish(end);
    return {
      exitCode: timedOut || stoppedOnSerial ? null : plan.guestExitValue(code, signal),
      vmmExit: { code, signal },
      timedOut,
      stoppedOnSerial,
      serial: sink.serial,
      lines: sink.lines,
      results: parseResults(sink.lines),
      wallMs: end,
      firstSerialByteMs: sink.firstByteMs,
      vmmLog: stderr,
      vmm: name,
    };
  } finally {
    clearTimeout(timer);
    killGroup(child);
    live.delete(child);
  }
}
