#!/usr/bin/env node
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { debugExitStatus } from "./devices/debug-exit.js";
import type { VirtioDeviceConfig } from "./devices/virtio-manager.js";
import { VmmError } from "./error.js";
import { Vmm } from "./vmm.js";

/** The longest delay setTimeout accepts (2^31 - 1 ms, about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

const USAGE = `usage: ts-vmm run --kernel PATH [--initrd PATH] [--cmdline TEXT] [--mem MiB] [--timeout SECONDS]
                  [--disk PATH[,ro]]... [--rng] [--console | --console-socket PATH]

Boots a PVH ELF or bzImage with one vCPU, COM1 on stdout and the debug-exit
port 0xf4, and virtio-mmio devices: --disk (virtio-blk on a raw image,
repeatable), --rng (virtio-rng), --console (virtio-console on stdin/stdout) or
--console-socket (virtio-console on a Unix socket the VMM connects to).
The exit status is (value << 1) | 1 when the guest writes value to
port 0xf4 (as QEMU's isa-debug-exit), 0 when it shuts down, 2 on a VMM error,
124 on timeout.`;

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
        timeout: { type: "string" },
        disk: { type: "string", multiple: true },
        rng: { type: "boolean" },
        console: { type: "boolean" },
        "console-socket": { type: "string" },
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
  const virtio: VirtioDeviceConfig[] = [];
  for (const d of values.disk ?? []) {
    const readOnly = d.endsWith(",ro");
    const path = readOnly ? d.slice(0, -3) : d;
    if (path === "") {
      stderr.write(`--disk takes PATH or PATH,ro, got ${d}\n`);
      return 2;
    }
    virtio.push({ kind: "blk", path, readOnly });
  }
  if (values.rng) virtio.push({ kind: "rng" });
  if (values.console && values["console-socket"] !== undefined) {
    stderr.write("--console and --console-socket are exclusive\n");
    return 2;
  }
  if (values.console) virtio.push({ kind: "console" });
  if (values["console-socket"] !== undefined) virtio.push({ kind: "console", socketPath: values["console-socket"] });
  let vmm: Vmm;
  try {
    vmm = Vmm.create({
      kernel: values.kernel,
      ...(values.initrd !== undefined ? { initrd: values.initrd } : {}),
      ...(values.cmdline !== undefined ? { cmdline: values.cmdline } : {}),
      memMiB,
      virtio,
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
  let result;
  try {
    result = await vmm.run({ serial: (b) => { if (!outputError) stdout.write(b); } });
  } finally {
    if (timer) clearTimeout(timer);
    vmm.close();
  }
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
    case "Shutdown":
    case "SystemEvent":
      stderr.write(`ts-vmm: ${result.detail ?? result.reason}\n`);
      return 0;
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
  runCli(process.argv.slice(2)).then((code) => process.exit(code), (e: unknown) => {
    process.stderr.write(`ts-vmm: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(70);
  });
}
