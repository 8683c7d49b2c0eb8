import { readdirSync, readFileSync } from "node:fs";
import type { DeviceKind, LaunchSpec, VmmLauncher } from "./launcher.js";
import type { GuestRun } from "./run-guest.js";

/**
 * Host-side checks of what the guest's peers saw: the console's echo peer,
 * the VMM process's memory around a balloon inflate, and the number of CPUs
 * that reported in `smp` mode. They need nothing from the harness beyond a
 * {@link VmmLauncher} and the `onSerial` callback of runGuest.
 */

/**
 * Wraps a launcher so that its console device connects to `socketPath` (an
 * echo server the caller started and can read the record of) instead of the
 * one the harness created.
 */
export function withConsolePeer(base: VmmLauncher, socketPath: string): VmmLauncher {
  return {
    name: base.name,
    get provides(): readonly DeviceKind[] {
      return base.provides;
    },
    plan: (spec: LaunchSpec) =>
      base.plan({ ...spec, devices: spec.devices.map((d) => (d.kind === "console" ? { kind: "console", socketPath } : d)) }),
  };
}

/**
 * The console check on the host side: the guest prints the message it sent
 * (`RESULT console.sent="…"`) and the echo peer's record must contain exactly
 * those bytes. A VMM that loops tx back to rx itself passes the guest's own
 * echo check, but its host peer receives nothing: that is caught here.
 */
export function consoleProblems(run: GuestRun, received: Buffer): string[] {
  const m = /^"(.*)"$/.exec(run.results.values["console.sent"] ?? "");
  if (!m) return [`no "RESULT console.sent=" line`];
  const sent = Buffer.from(`${m[1]!}\n`, "latin1");
  if (received.length === 0) return ["the host's console peer received nothing"];
  if (!received.equals(sent)) {
    return [`the host's console peer received ${JSON.stringify(received.toString("latin1"))}, the guest sent ${JSON.stringify(sent.toString("latin1"))}`];
  }
  return [];
}

/** VmRSS of a process in bytes, from /proc/<pid>/status. */
export function processRss(pid: number): number {
  return statusKb(readFileSync(`/proc/${pid}/status`, "utf8"), "VmRSS", pid);
}

/** A `Name: N kB` line of a /proc/<pid>/status text, in bytes. */
function statusKb(status: string, name: string, pid: number): number {
  const m = new RegExp(`^${name}:\\s+(\\d+) kB$`, "m").exec(status);
  if (!m) throw new Error(`no ${name} in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/** The pid of the process whose command line contains `marker` (e.g. a unique QEMU `-name`), the innermost when wrappers carry the same arguments, or null. */
export function findProcess(marker: string): number | null {
  // Wrappers (the harness's setpriv/unshare/reaper chain) carry the VMM's argv too:
  // take the innermost match, the one that is no other match's parent.
  const matches = new Map<number, number>(); // pid -> ppid
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      if (!readFileSync(`/proc/${e}/cmdline`, "latin1").split("\0").includes(marker)) continue;
      const ppid = Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${e}/status`, "latin1"))?.[1] ?? -1);
      matches.set(Number(e), ppid);
    } catch {
      /* gone, or not ours to read */
    }
  }
  const parents = new Set(matches.values());
  for (const pid of matches.keys()) if (!parents.has(pid)) return pid;
  return null;
}

/** Watches a balloon selftest from the host: samples the VMM's RSS when the guest says it touched, then inflated, its pages. */
export interface BalloonWatch {
  /** Pass as runGuest's `onSerial`. */
  readonly onSerial: (text: string) => void;
  /** RSS samples in bytes, taken when the guest printed each marker line: VmRSS, and its RssShmem part. */
  readonly samples: { touched?: number; inflated?: number; touchedShmem?: number; inflatedShmem?: number };
  /**
   * The verdict: the inflate must have lowered the VMM's RSS (VmRSS, or its shared-memory
   * part RssShmem, where a VMM keeps guest RAM in a memfd) by at least `fraction` (default
   * 0.75) of the bytes the guest gave back.
   */
  problems(run: GuestRun, fraction?: number): string[];
}

/**
 * Starts watching for the guest's `RESULT balloon.touched=<bytes>` and
 * `RESULT balloon.inflated=<bytes>` lines; at each the VMM process (found by
 * `marker` in its command line) has its RSS sampled. The guest waits after each
 * line so the sample is taken in the right state.
 */
export function watchBalloon(marker: string): BalloonWatch {
  let partial = "";
  let pid: number | null = null;
  const samples: { touched?: number; inflated?: number; touchedShmem?: number; inflatedShmem?: number } = {};
  const errors: string[] = [];
  const sample = (at: "touched" | "inflated"): void => {
    pid ??= findProcess(marker);
    if (pid === null) {
      errors.push(`no process with ${marker} in its command line`);
      return;
    }
    // One read of the status, so both figures are of the same moment.
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    samples[at] = statusKb(status, "VmRSS", pid);
    samples[at === "touched" ? "touchedShmem" : "inflatedShmem"] = statusKb(status, "RssShmem", pid);
  };
  return {
    samples,
    onSerial(text) {
      const lines = (partial + text).split("\n");
      partial = lines.pop() ?? "";
      for (const l of lines) {
        if (l.startsWith("RESULT balloon.touched=")) sample("touched");
        else if (l.startsWith("RESULT balloon.inflated=")) sample("inflated");
      }
    },
    problems(run, fraction = 0.75) {
      const p = [...errors];
      const bytes = Number(run.results.values["balloon.inflated"]);
      if (!(bytes > 0)) p.push(`no "RESULT balloon.inflated=" line`);
      if (samples.touched === undefined || samples.inflated === undefined) p.push("RSS not sampled at both markers");
      else if (bytes > 0) {
        const released = samples.touched - samples.inflated;
        // Guest RAM in shared memory (our memfd) is RssShmem, part of VmRSS: its drop is the
        // ballooned pages alone, while VmRSS also moves with the VMM's own heap (V8's young
        // generation grew ~4 MiB between the two samples in a CI run, 2026-12-04: 12.49 of 16
        // MiB seen in VmRSS). Either drop counts; guest RAM in private memory (QEMU's) shows
        // only in VmRSS.
        const releasedShmem = (samples.touchedShmem ?? 0) - (samples.inflatedShmem ?? 0);
        if (released < bytes * fraction && releasedShmem < bytes * fraction) {
          p.push(`the VMM's RSS went from ${samples.touched} to ${samples.inflated} bytes: ${released} released of ${bytes} ballooned`);
        }
      }
      return p;
    },
  };
}

/**
 * `smp` judged against the vCPUs the VMM was asked for: the guest must have
 * been told `cpus=<vcpus>`, exactly vcpus - 1 APs must have started, each must
 * have counted, and both checks must have passed.
 */
export function smpProblems(run: GuestRun, vcpus: number): string[] {
  const p: string[] = [];
  const v = run.results.values;
  const m = /(?:^|\s)cpus=(\d+)(?:\s|$)/.exec((v["cmdline"] ?? "").replace(/^"|"$/g, ""));
  if (!m || Number(m[1]) !== vcpus) p.push(`the guest was not told cpus=${vcpus}`);
  if (v["smp.started"] !== String(vcpus - 1)) p.push(`smp.started=${v["smp.started"] ?? "-"}, want ${vcpus - 1}`);
  for (let i = 1; i < vcpus; i++) if (!(Number(v[`smp.ap${i}_count_delta`]) > 0)) p.push(`AP ${i} did not count`);
  for (const c of ["smp.started", "smp.counting"]) if (!run.results.passed.includes(c)) p.push(`missing PASS ${c}`);
  for (const f of run.results.failed) p.push(`FAIL ${f.check} ${f.detail}`);
  if (run.exitCode !== 0) p.push(`exit value ${String(run.exitCode)} (want 0)`);
  return p;
}
