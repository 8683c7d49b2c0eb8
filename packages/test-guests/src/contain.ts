import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { constants } from "node:os";
import { delimiter, join } from "node:path";

/**
 * How the harness keeps a VMM's descendants from outliving a run (and the
 * harness itself).
 *
 * - `pid-namespace`: the VMM runs as the only child of a reaper that is pid 1
 *   of a fresh pid namespace (`unshare --pid --fork --kill-child`, needs root).
 *   When the reaper exits, or is killed with the `unshare` process above it,
 *   the kernel kills every process left in the namespace, whatever process
 *   group or session it moved to and whether or not the VMM already exited.
 *   `unshare` itself is started by `setpriv --pdeathsig KILL`, so it dies with
 *   the harness's Node process even when that is SIGKILLed (no exit hook runs).
 * - `process-group`: the fallback without root or util-linux: the VMM leads
 *   its own process group and the group is killed. A descendant that calls
 *   setsid() or setpgid() escapes it.
 */
export type Containment = "pid-namespace" | "process-group";

/**
 * The reaper, pid 1 of the namespace (perl is in every Debian base system).
 * It first reports its own pid as the host sees it (`pid <n>`: /proc is the
 * host's, so /proc/self names the host pid), so the harness can end a run by
 * killing the reaper; then it forks the VMM with stdin/stdout/stderr
 * inherited, waits for it, and reports the VMM's exact wait status on fd 3
 * (`status <n>`, or `exec-failed <why>`) so a signal death stays
 * distinguishable from an exit status (unshare itself turns a child killed by
 * SIGKILL into status 1). The VMM does not inherit fd 3. The reaper then
 * exits, which ends the namespace: the kernel kills every process left in it
 * and the reaper's exit completes only once they are all gone, so when
 * `unshare` (which waits for the reaper) exits, nothing of the run is left.
 */
const REAPER = [
  "use Fcntl;",
  'open(my $st, ">&=", 3) or die "fd 3: $!";',
  "fcntl($st, F_SETFD, FD_CLOEXEC);",
  'syswrite($st, "pid " . readlink("/proc/self") . "\\n");',
  "my $p = fork();",
  'die "fork: $!" unless defined $p;',
  'if (!$p) { exec { $ARGV[0] } @ARGV; syswrite($st, "exec-failed $!\\n"); exit 127 }',
  "waitpid($p, 0);",
  'syswrite($st, "status $?\\n");',
  "exit 0",
].join(" ");

function onPath(tool: string): boolean {
  return (process.env["PATH"] ?? "").split(delimiter).some((d) => d !== "" && existsSync(join(d, tool)));
}

let cached: Containment | undefined;

/**
 * The containment this machine supports (probed once: root, `setpriv`,
 * `unshare` and `perl` on PATH, and one trial run of the reaper).
 */
export function containment(): Containment {
  if (cached !== undefined) return cached;
  cached = "process-group";
  if (process.getuid?.() === 0 && onPath("setpriv") && onPath("unshare") && onPath("perl")) {
    const probe = containedCommand("true", [], "pid-namespace");
    const r = spawnSync(probe.file, probe.args, {
      stdio: ["ignore", "ignore", "ignore", "pipe"],
      timeout: 10_000,
    });
    const out = (r.output?.[3] as Buffer | null | undefined)?.toString("latin1") ?? "";
    const rep = parseReaperReport(out);
    if (r.status === 0 && reaperPid(out) !== null && rep.kind === "status" && rep.code === 0) cached = "pid-namespace";
  }
  return cached;
}

/** The command that runs `file args` under the given containment. */
export function containedCommand(file: string, args: readonly string[], how: Containment): { file: string; args: string[] } {
  if (how === "process-group") return { file, args: [...args] };
  return {
    file: "setpriv",
    args: ["--pdeathsig", "KILL", "unshare", "--pid", "--fork", "--kill-child", "perl", "-e", REAPER, file, ...args],
  };
}

const signalNames = new Map<number, NodeJS.Signals>(
  Object.entries(constants.signals).map(([name, n]) => [n, name as NodeJS.Signals]),
);

/** What the reaper reported on fd 3 about the VMM. */
export type ReaperReport =
  | { readonly kind: "status"; readonly code: number | null; readonly signal: NodeJS.Signals | null }
  | { readonly kind: "exec-failed"; readonly reason: string }
  | { readonly kind: "none" };

/** The reaper's host pid from its fd-3 report, once it has arrived (else null). */
export function reaperPid(text: string): number | null {
  const m = /^pid (\d+)\n/.exec(text);
  return m ? Number(m[1]) : null;
}

/** Decodes the reaper's fd-3 report about the VMM (a raw wait status, as perl's `$?`). */
export function parseReaperReport(text: string): ReaperReport {
  const line = text.split("\n").find((l) => !l.startsWith("pid ")) ?? "";
  const st = /^status (\d+)$/.exec(line);
  if (st) {
    const s = Number(st[1]);
    const sig = s & 0x7f;
    if (sig === 0) return { kind: "status", code: (s >> 8) & 0xff, signal: null };
    return { kind: "status", code: null, signal: signalNames.get(sig) ?? (`SIG${sig}` as NodeJS.Signals) };
  }
  const ex = /^exec-failed (.*)$/.exec(line);
  if (ex) return { kind: "exec-failed", reason: ex[1] ?? "" };
  return { kind: "none" };
}
