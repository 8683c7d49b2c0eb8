#!/usr/bin/env node
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { debugExitStatus } from "./devices/debug-exit.js";
import { VmmError } from "./error.js";
import { Vmm } from "./vmm.js";

/** The longest delay setTimeout accepts (2^31 - 1 ms, about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

const USAGE = `usage: ts-vmm run --kernel PATH [--initrd PATH] [--cmdline TEXT] [--mem MiB] [--vcpus N] [--timeout SECONDS]

Boots a PVH ELF or bzImage with N vCPUs (default 1), COM1 on stdin/stdout and
the debug-exit port 0xf4. The exit status is (value << 1) | 1 when the guest
writes value to port 0xf4 (as QEMU's isa-debug-exit), 0 when it powers off or
resets (there is no reboot), 2 on a VMM error or when KVM cannot run the guest
(emulation failure, failed VM entry), 4 when the guest triple-faults or
crashes, 124 on timeout.`;

/**
 * Runs the `ts-vmm` command line. Resolves to the process exit status.
 * Serial output goes to `stdout`, diagnostics to `stderr`. If `stdout`
 * reports an error (EPIPE when the reader went away), the VM is stopped and
 * the status is 2.
 */
export async function runCli(
  argv: readonly string[],
  stdout: {
    write(b: Uint8Array | string): unknown;
    /** A stream's 'error' events (EPIPE) are handled: the VM is stopped and the status is 2. */
    on?(event: "error", listener: (e: Error) => void): unknown;
    off?(event: "error", listener: (e: Error) => void): unknown;
  } = process.stdout,
  stderr: { write(s: string): unknown } = process.stderr,
  /** Serial input (the CLI passes process.stdin); none by default. */
  stdin?: { on(event: "data", listener: (b: Buffer) => void): unknown; off(event: "data", listener: (b: Buffer) => void): unknown; pause?(): unknown },
): Promise<number> {
  let values;
  let positionals;
  try {
    ({ values, positionals } = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        kernel: { type: "string" },
        initrd: { type: "string" },
        cmdline: { type: "string" },
        mem: { type: "string" },
        vcpus: { type: "string" },
        timeout: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    stderr.write(`${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    stdout.write(USAGE + "\n");
    return 0;
  }
  if (positionals[0] !== "run" || positionals.length !== 1 || values.kernel === undefined) {
    stderr.write(USAGE + "\n");
    return 2;
  }
  const memMiB = values.mem === undefined ? 256 : Number(values.mem);
  const timeout = values.timeout === undefined ? 0 : Number(values.timeout);
  // setTimeout takes at most 2^31 - 1 ms; a longer delay would fire after 1 ms.
  if (!Number.isFinite(timeout) || timeout < 0 || timeout * 1000 > MAX_TIMER_MS) {
    stderr.write(`--timeout must be a number of seconds from 0 to ${MAX_TIMER_MS / 1000}, got ${values.timeout}\n`);
    return 2;
  }
  const vcpus = values.vcpus === undefined ? 1 : Number(values.vcpus);
  if (!Number.isInteger(vcpus) || vcpus < 1) {
    stderr.write(`--vcpus must be a whole number of vCPUs from 1, got ${values.vcpus}\n`);
    return 2;
  }
  let vmm: Vmm;
  try {
    vmm = Vmm.create({
      kernel: values.kernel,
      ...(values.initrd !== undefined ? { initrd: values.initrd } : {}),
      ...(values.cmdline !== undefined ? { cmdline: values.cmdline } : {}),
      memMiB,
      vcpus,
    });
  } catch (e) {
    const err = e as Error;
    const cause = err.cause instanceof Error ? `\n  caused by: ${err.cause.message}` : "";
    stderr.write(`ts-vmm: ${err.message}${cause}\n`);
    return e instanceof VmmError ? 2 : 70;
  }
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
  stdout.on?.("error", onOutputError);
  const onInput = (b: Buffer): void => vmm.sendSerialInput(b);
  stdin?.on("data", onInput);
  let result;
  try {
    result = await vmm.run({ serial: (b) => { if (!outputError) stdout.write(b); } });
  } finally {
    stdin?.off("data", onInput);
    stdin?.pause?.();
    if (timer) clearTimeout(timer);
    vmm.close();
  }
  if (outputError) {
    // Stay subscribed: the stream may report the same failure again; it is already handled.
    stderr.write(`ts-vmm: serial output failed (${outputError.message}); stopped the VM\n`);
    return 2;
  }
  stdout.off?.("error", onOutputError);
  switch (result.reason) {
    case "DebugExit":
      return debugExitStatus(result.guestExitValue ?? 0);
    case "PowerOff":
    case "Reset":
      stderr.write(`ts-vmm: ${result.detail ?? result.reason}\n`);
      return 0;
    case "Shutdown":
    case "SystemEvent":
      stderr.write(`ts-vmm: ${result.detail ?? result.reason}\n`);
      return 4;
    case "Stopped":
      stderr.write(timedOut ? `ts-vmm: timed out after ${timeout} s\n` : "ts-vmm: stopped\n");
      return timedOut ? 124 : 0;
    case "Error":
      stderr.write(`ts-vmm: ${result.detail ?? "error"}\n`);
      return 2;
  }
}

const invokedDirectly = process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
if (invokedDirectly) {
  runCli(process.argv.slice(2), process.stdout, process.stderr, process.stdin).then((code) => process.exit(code), (e: unknown) => {
    process.stderr.write(`ts-vmm: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(70);
  });
}
