import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import type { Containment } from "./contain.js";
import { startEchoServer, type EchoServer } from "./echo-server.js";
import { TestGuestsError } from "./error.js";
import type { DeviceSpec, LaunchPlan, LaunchSpec, ResolvedDevice, VmmLauncher } from "./launcher.js";
import { qemuLauncher } from "./qemu.js";
import { parseResults, type GuestResults, type SerialLine } from "./results.js";
import { runInProcess } from "./run-in-process.js";
import { runProcess } from "./run-process.js";
import { SerialSink } from "./serial-sink.js";
import { guestVerdict } from "./verdict.js";

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
  /**
   * Hard limit on the run, `start()` of an in-process plan included; every
   * process the VMM started is killed after it. Default 30 s.
   */
  readonly timeoutMs?: number;
  /**
   * How long ending a run may take before the harness gives up on it and
   * reports it in {@link GuestRun.harnessProblems}: an in-process `stop()` or
   * `exited`, a late `start()`, or a process's stdio closing after SIGKILL.
   * Default 5 s.
   */
  readonly stopTimeoutMs?: number;
  /** Stop the VMM as soon as the serial output matches (the early-boot test's marker). */
  readonly stopOnSerial?: string | RegExp;
  /**
   * Called with each chunk of serial output as it arrives (for progress logs).
   * If it throws, the run is ended (every VMM process killed) and runGuest
   * rejects with that error.
   */
  readonly onSerial?: (text: string) => void;
  /** VMM-specific arguments appended last (QEMU: extra flags). */
  readonly extraArgs?: readonly string[];
}

/** How a {@link runGuest} run ended. */
export interface GuestRun {
  /**
   * The harness's verdict: the guest's exit value, non-null only when the
   * guest's own last `RESULT exit=<v>` serial line and the VMM's exit agree
   * (and the harness did not end the run). The VMM's status alone never
   * counts: a VMM that dies with status 1 reads as null here, not as 0.
   * {@link GuestRun.exitProblem} says why it is null.
   */
  readonly guestExit: number | null;
  /** Why {@link GuestRun.guestExit} is null, as a sentence (null when it is set). */
  readonly exitProblem: string | null;
  /**
   * The same value as {@link GuestRun.guestExit}.
   * @deprecated use `guestExit`; kept so that older callers read the verdict, never the raw status.
   */
  readonly exitCode: number | null;
  /**
   * What the VMM's exit alone decodes to (the launcher's `guestExitValue`, or
   * the in-process `exited` value). Untrusted on its own: QEMU and ours both
   * exit 1 on their own errors, which decodes as 0.
   */
  readonly vmmExitValue: number | null;
  /** The VMM process's own exit (null for in-process VMMs). */
  readonly vmmExit: { readonly code: number | null; readonly signal: string | null } | null;
  /** True if the harness ended the run because {@link RunGuestOptions.timeoutMs} passed. */
  readonly timedOut: boolean;
  /** True if the run was ended by {@link RunGuestOptions.stopOnSerial}. */
  readonly stoppedOnSerial: boolean;
  /**
   * What went wrong while ending the run (a `stop()` or `start()` that did not
   * settle, a VMM whose stdio stayed open after SIGKILL, a reaper that reported
   * no status); empty when the run ended cleanly.
   */
  readonly harnessProblems: readonly string[];
  /** How the VMM's descendants were contained (`in-process` for in-process plans). */
  readonly containment: Containment | "in-process";
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

function checkInt(name: string, v: number, lo: number, hi: number): void {
  if (!Number.isInteger(v) || v < lo || v > hi) {
    throw new TestGuestsError("InvalidArgument", `${name} must be an integer in ${lo}..${hi}, got ${v}`);
  }
}

/**
 * Runs a guest under a VMM and returns what it printed and how it ended.
 * Devices are validated against the launcher's `provides` before anything
 * starts; the console's echo peer is created here; a VMM process runs in a
 * pid namespace of its own where the machine allows it (see
 * {@link containment}), and it and every process it started are killed on
 * timeout, on `stopOnSerial`, on an error, and if the Node process exits
 * first. Everything the run created is removed before this resolves. The
 * exit verdict is {@link GuestRun.guestExit}.
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
  const stopTimeoutMs = options.stopTimeoutMs ?? 5_000;
  checkInt("memMiB", memMiB, 2, 65536);
  checkInt("vcpus", vcpus, 1, 64);
  checkInt("timeoutMs", timeoutMs, 1, 3_600_000);
  checkInt("stopTimeoutMs", stopTimeoutMs, 1, 600_000);
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
  let vsockDir: string | undefined;
  try {
    const resolved: ResolvedDevice[] = [];
    for (const d of devices) {
      if (d.kind === "console") {
        echo ??= await startEchoServer();
        resolved.push({ kind: "console", socketPath: echo.socketPath });
      } else if (d.kind === "blk") {
        resolved.push({ ...d, path: resolve(d.path) });
      } else if (d.kind === "vsock") {
        vsockDir ??= d.udsPath === undefined ? mkdtempSync(join(tmpdir(), "ts-vmm-vsock-")) : undefined;
        resolved.push({ kind: "vsock", cid: d.cid, udsPath: d.udsPath === undefined ? join(vsockDir!, "vsock.sock") : resolve(d.udsPath) });
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
    return await execute(launcher.name, plan, options, timeoutMs, stopTimeoutMs);
  } finally {
    await echo?.close();
    if (vsockDir !== undefined) rmSync(vsockDir, { recursive: true, force: true });
  }
}

async function execute(
  name: string,
  plan: LaunchPlan,
  options: RunGuestOptions,
  timeoutMs: number,
  stopTimeoutMs: number,
): Promise<GuestRun> {
  const t0 = performance.now();
  const sink = new SerialSink(t0, options.onSerial);
  const stop = options.stopOnSerial;
  const matches = (): boolean =>
    stop === undefined ? false : typeof stop === "string" ? sink.serial.includes(stop) : stop.test(sink.serial);
  const ctl = { sink, matches, timeoutMs, stopTimeoutMs };
  const ended =
    plan.kind === "in-process" ? { ...(await runInProcess(plan, ctl)), containment: "in-process" as const } : await runProcess(plan, ctl);
  const end = performance.now() - t0;
  sink.finish(end);
  const results = parseResults(sink.lines);
  const verdict = guestVerdict({
    vmmExitValue: ended.vmmExitValue,
    ...(ended.valueBits !== undefined ? { valueBits: ended.valueBits } : {}),
    results,
    timedOut: ended.timedOut,
    stoppedOnSerial: ended.stoppedOnSerial,
  });
  return {
    guestExit: verdict.guestExit,
    exitProblem: verdict.problem,
    exitCode: verdict.guestExit,
    vmmExitValue: ended.vmmExitValue,
    vmmExit: ended.vmmExit,
    timedOut: ended.timedOut,
    stoppedOnSerial: ended.stoppedOnSerial,
    harnessProblems: ended.problems,
    containment: ended.containment,
    serial: sink.serial,
    lines: sink.lines,
    results,
    wallMs: end,
    firstSerialByteMs: sink.firstByteMs,
    vmmLog: ended.vmmLog,
    vmm: name,
  };
}
