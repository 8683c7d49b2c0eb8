/**
 * Host-to-guest frames for the micro-guest's `bench-net-rx` mode: builds
 * test/net_rx_sender.c with gcc and runs the guest with a sender started in the
 * namespace as soon as the guest prints `RESULT net_rx_ready=1`. Used by
 * bench/net.ts and test/net.test.ts.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { NetNamespace } from "@ts-vmm/test-utils/node";
import { runGuest, type GuestRun, type VmmLauncher } from "@ts-vmm/test-guests";
import { inNamespace } from "./ns-launcher.js";

/** Frames the sender keeps ahead of the VMM's reads (a tap queues 500 and drops beyond). */
export const RX_WINDOW = 256;

/** Builds the sender into a fresh temporary directory; returns its path. */
export function buildRxSender(): string {
  const out = join(mkdtempSync(join(tmpdir(), "tsvmm-netrx-")), "net_rx_sender");
  execFileSync("gcc", ["-O2", "-Wall", "-o", out, fileURLToPath(new URL("net_rx_sender.c", import.meta.url))], { stdio: "inherit" });
  return out;
}

/** A `bench-net-rx` run and what the sender printed (`sent=… delivered=… dropped=…`, and how it failed if it did). */
export interface RxRun {
  readonly run: GuestRun;
  readonly senderOut: string;
}

/** Runs the guest on `tap` (inside `ns`) and sends it `frames` frames of `size` bytes. */
export async function runRxGuest(ns: NetNamespace, launcher: VmmLauncher, elf: string, sender: string, tap: string, frames: number, size: number): Promise<RxRun> {
  let seen = "";
  let senderDone: Promise<string> | undefined;
  let child: ChildProcess | undefined;
  let run: GuestRun;
  try {
    run = await runGuest({
      vmm: inNamespace(launcher, ns), kernel: elf, cmdline: `mode=bench-net-rx n=${frames} size=${size}`, memMiB: 64, timeoutMs: 90_000,
      devices: [{ kind: "net", tap }],
      onSerial: (text) => {
        if (senderDone) return;
        seen = (seen + text).slice(-256);
        if (!seen.includes("RESULT net_rx_ready=1")) return;
        const [file, ...pre] = ns.execPrefix;
        const c = spawn(file!, [...pre, sender, tap, String(frames), String(size), String(RX_WINDOW)], { stdio: ["ignore", "pipe", "pipe"] });
        child = c;
        senderDone = new Promise((resolve) => {
          let out = "";
          c.stdout.on("data", (d: Buffer) => (out += d.toString()));
          c.stderr.on("data", (d: Buffer) => (out += d.toString()));
          c.on("error", (e) => resolve(`${out}sender failed to start: ${e.message}`));
          c.on("exit", (code, signal) => resolve(code === 0 ? out : `${out}sender exited ${String(code ?? signal)}`));
        });
      },
    });
  } catch (e) {
    child?.kill("SIGKILL");
    throw e;
  }
  if (!senderDone) throw new Error(`${launcher.name}: the guest never printed net_rx_ready\n${run.serial}\n${run.vmmLog}`);
  // The guest has finished: the sender ends on its own (all delivered, or stalled after 5 s); bound the wait anyway.
  const timer = setTimeout(() => child?.kill("SIGKILL"), 15_000);
  try {
    return { run, senderOut: await senderDone };
  } finally {
    clearTimeout(timer);
  }
}
