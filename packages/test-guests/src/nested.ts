/**
 * The nested tier (shared/DESIGN-NOTES.md, tier 3b): a full Linux boot on a
 * machine whose KVM cannot run guest kernel code natively. QEMU's TCG
 * emulates AMD SVM with nested paging, so an L1 Linux booted under
 * `qemu-system-x86_64 -accel tcg -cpu EPYC,+svm,+npt` loads kvm-amd and has a
 * hardware-style /dev/kvm; the VMM under test runs inside L1 and boots the L2
 * guest on it. {@link runNested} builds the L1 image (see l1-image.ts), boots
 * L1 once and runs every requested L2 guest in it, one after the other.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { appendFileSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, isAbsolute, join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { cacheDir, debianKernel, type DebianKernel } from "@ts-vmm/test-utils/node";
import { TestGuestsError } from "./error.js";
import {
  buildLayer,
  concatLayers,
  decompressModuleTo,
  dedupe,
  executableEntries,
  layerLabel,
  qemuEntries,
  workspacePackageEntries,
  which,
  type Layer,
  type LayerEntry,
} from "./l1-image.js";
import type { DeviceKind, DeviceSpec, LaunchSpec, ProcessPlan, ResolvedDevice, VmmLauncher } from "./launcher.js";
import { QEMU_SERIAL_CHARDEV, qemuLauncher } from "./qemu.js";
import {
  NESTED_TAP_HOST,
  sideResults,
  type NestedPeerName,
  type NestedPeers,
  type NestedSideResults,
  type NestedStream,
  type NestedTcpPeer,
  type SidePlan,
} from "./nested-peers.js";
import { ANCHOR_SOURCE, buildStaticTool, PEER_SOURCE } from "./static-tool.js";
import { parseResults, type SerialLine } from "./results.js";
import type { GuestRun } from "./run-guest.js";
import { guestVerdict } from "./verdict.js";
import {
  LOG_SPLIT_MARKER,
  planSnapshot,
  RESTORE_MARKER,
  snapshotDriver,
  snapshotReport,
  type NestedSnapshot,
  type NestedSnapshotted,
  type SnapshotPlan,
} from "./nested-snapshot.js";

/** One L2 guest to run inside L1 (the options of `runGuest`, for a VMM that runs as a process). */
export interface NestedGuest {
  /** Label in reports (unique within a run). */
  readonly name: string;
  /** `"qemu"` (QEMU with KVM, inside L1) or a launcher whose plan is a {@link ProcessPlan}. */
  readonly vmm: "qemu" | VmmLauncher;
  readonly kernel: string;
  readonly initrd?: string;
  readonly cmdline?: string;
  /** L2 RAM in MiB (default 256). */
  readonly memMiB?: number;
  /** L2 vCPUs, 1..32 (default 1; more than L1's vCPU count works but is slow under TCG). */
  readonly vcpus?: number;
  /**
   * Devices; `console` is not available inside L1 (its echo peer lives on the
   * host). blk files are copied into L1 at the same path. A `net` device with
   * a `tap` gets that tap created in L1 before the VMM starts (at most one per
   * guest), with {@link NESTED_TAP_HOST}/24 on L1's side; without a tap, QEMU
   * uses user networking. A `vsock` device's `udsPath` is a path inside L1
   * (default `/run/tsvmm/vsock-<step>.sock`); QEMU uses vhost-vsock in L1.
   */
  readonly devices?: readonly DeviceSpec[];
  /** The far ends of the guest's devices inside L1: TCP and vsock peers, RSS samples for the balloon. */
  readonly peers?: NestedPeers;
  /** Inside L1, the VMM is killed after this many ms (default 120 s). */
  readonly timeoutMs?: number;
  /** Inside L1, the VMM is killed once a serial line contains this text. */
  readonly stopOnSerial?: string;
  readonly extraArgs?: readonly string[];
  /**
   * Snapshot the guest at a serial marker and continue it in a new VMM
   * process (the launcher needs `snapshot`; see nested-snapshot.ts). The
   * step's serial, log, status and end are then the restored VMM's
   * ({@link NestedGuestRun.snapshotted} has the first one's); `timeoutMs`
   * bounds each of the two, and `stopOnSerial` applies to the restored one.
   */
  readonly snapshot?: NestedSnapshot;
}

/** Options of {@link runNested}. */
export interface NestedOptions {
  /** The L2 guests, run in this order in one L1 boot. */
  readonly guests: readonly NestedGuest[];
  /** L1 vCPUs (`-smp`), 1..8, default 1. */
  readonly l1Vcpus?: number;
  /** L1 RAM in MiB (default 4096). */
  readonly l1MemMiB?: number;
  /**
   * Built workspace package directories to put in L1 (with their run-time
   * workspace dependencies), for a VMM that runs on Node.
   */
  readonly packages?: readonly string[];
  /** Extra host files to mirror into L1 at the same paths. */
  readonly files?: readonly string[];
  /** Hard limit on the whole L1 run (default: 150 s plus every guest's timeout). */
  readonly timeoutMs?: number;
  /** Called with each chunk of L1 serial output (progress logs). */
  readonly onSerial?: (text: string) => void;
  /** The L1 kernel (default: debianKernel(), whose modules provide kvm). */
  readonly l1Kernel?: DebianKernel;
}

/** How one L2 guest ended inside L1. */
export type NestedEnd =
  /** The VMM process exited by itself. */
  | "exit"
  /** Killed after {@link NestedGuest.timeoutMs}. */
  | "timeout"
  /** Killed because {@link NestedGuest.stopOnSerial} appeared. */
  | "marker"
  /** Never started or never finished (L1 failed first; see {@link NestedRun.problem}). */
  | "missing";

/** One L2 guest's run: a {@link GuestRun} (times measured on the host, from the step's start marker) and what L1 did beside it. */
export interface NestedGuestRun extends GuestRun, NestedSideResults {
  /** The guest's {@link NestedGuest.name}. */
  readonly name: string;
  /** How it ended. */
  readonly end: NestedEnd;
  /** The VMM's exit status inside L1 (137 when killed; at a timeout, what it returned on SIGTERM if it ended within 5 s), or null if it never ended. */
  readonly status: number | null;
  /** With {@link NestedGuest.snapshot}: the first VMM, which L1 snapshotted and killed (null otherwise, or if L1 never got past it). */
  readonly snapshotted: NestedSnapshotted | null;
}

/** The result of {@link runNested}. */
export interface NestedRun {
  /** Per guest, in order. */
  readonly guests: readonly NestedGuestRun[];
  /** What went wrong with L1 itself (null if L1 ran every guest and powered off). */
  readonly problem: string | null;
  /** Everything L1 wrote to its serial console (L2 serial output included). */
  readonly l1Serial: string;
  /** The L1 QEMU's stderr. */
  readonly l1Log: string;
  /** L1 QEMU start to its exit, ms. */
  readonly wallMs: number;
  /** L1 QEMU start to L1's /init running, ms (null if never). */
  readonly l1InitMs: number | null;
  /** L1 QEMU start to /dev/kvm ready in L1, ms (null if never). */
  readonly l1KvmMs: number | null;
  /** L1's loaded modules, as its /init listed them once KVM was in. */
  readonly l1Modules: readonly L1Module[];
  /** True if the host killed L1 after {@link NestedOptions.timeoutMs}. */
  readonly timedOut: boolean;
  /** The layers of the L1 initramfs (cache files) and the total size in bytes. */
  readonly image: { readonly layers: readonly string[]; readonly bytes: number };
  /**
   * How many times L1 was booted: 2 when the first L1 kernel panicked before
   * any guest started (see {@link L1_EARLY_PANIC}) and was booted again once.
   */
  readonly l1Attempts: number;
  /** The first L1's last console lines when it was retried, else null. */
  readonly l1RetriedAfter: string | null;
}

/** How long past a guest's timeout its block may stay open before L1 counts as frozen. */
const L1_FREEZE_GRACE_MS = 30_000;

/** A module loaded in L1 (from /proc/modules). */
export interface L1Module {
  readonly name: string;
  readonly start: bigint;
  readonly size: number;
}

/**
 * A fault report of L1's own kernel (an oops, a WARN, a panic with a
 * backtrace): only L1 is the i440FX machine; the guests it runs (our VMM,
 * QEMU microvm) report no such hardware name. L1's kernel messages
 * interleave with the guests' output on its console, so this is how they
 * are told apart.
 */
export const L1_KERNEL_FAULT = /Hardware name: QEMU Standard PC \(i440FX[^\n]*/;

/**
 * Whether a guest run shows the emulator handing it L1's state: the VMM (ours
 * prints where each vCPU was when it stopped on a signal or timeout, or after
 * a triple fault of one of them) reports
 * a vCPU RIP inside one of L1's modules, code the guest cannot have. Seen
 * under QEMU 7.2's multi-threaded TCG with two L2 vCPUs running at once:
 * the L2 vCPU resumed at an address in L1's kvm_amd. Returns the line that
 * shows it, or null.
 */
export function guestHasL1State(run: Pick<NestedRun, "l1Modules">, guest: Pick<NestedGuestRun, "vmmLog">): string | null {
  for (const m of guest.vmmLog.matchAll(/vCPU (\d+): rip=0x([0-9a-f]+)/g)) {
    const rip = BigInt(`0x${m[2]!}`);
    const mod = run.l1Modules.find((x) => rip >= x.start && rip < x.start + BigInt(x.size));
    if (mod) return `vCPU ${m[1]} of the guest was at 0x${m[2]}, inside L1's ${mod.name}`;
  }
  return null;
}

/**
 * Whether a guest's console shows it trapped on an int3 that its memory no
 * longer holds: an "Oops: int3" whose Code: dump has something other than
 * 0xcc in the byte before the trapping RIP (the kernel prints the RIP after
 * the int3, marked `<..>`, from memory). The kernel patches its text through
 * int3 breakpoints (text_poke_bp: int3, IPI sync on every CPU, new bytes, sync
 * again); a CPU that traps on the int3 after the final bytes are in place and
 * after serializing ran a stale translation of that page. Seen here
 * (2026-12-03, 2-vCPU L2 Debian boot on ours, a jump label in
 * sched_clock_cpu): QEMU 7.2's multi-threaded TCG does it to L1 too
 * ({@link L1_EARLY_PANIC}). A VMM cannot cause it: memory holds the right
 * bytes. Returns the line that shows it, or null.
 */
export function guestRanStaleText(guest: Pick<NestedGuestRun, "serial">): string | null {
  const text = guest.serial;
  for (const m of text.matchAll(/Oops: int3[^\n]*/g)) {
    const after = text.slice(m.index ?? 0, (m.index ?? 0) + 4000);
    const code = /Code: ((?:[0-9a-f]{2} )*)<([0-9a-f]{2})>/.exec(after);
    if (!code) continue;
    const before = code[1]!.trim().split(" ");
    const prev = before[before.length - 1];
    if (prev !== undefined && prev !== "" && prev !== "cc") return `${m[0].trim()}, but memory holds 0x${prev} where the int3 was (a stale translation)`;
  }
  return null;
}

/**
 * An L1 kernel panic. Seen here (2026-12-01) once in about ten `-smp 2` L1 boots:
 * "Oops: int3" in __schedule while kvm-amd loads. The kernel patches its text
 * through int3 breakpoints, and QEMU 7.2's multi-threaded TCG sometimes runs
 * a stale translation on the other vCPU. It is the emulator's fault, not the
 * guest's or the VMM's, so runNested boots L1 once more when it happens
 * before any guest started; a second panic, or one after a guest started, is
 * reported as the run's `problem`. (Single-threaded TCG avoids the race but
 * made `-smp 2` boots about five times slower.)
 */
export const L1_EARLY_PANIC = /Kernel panic - not syncing|Oops: /;

/**
 * Whether L1's console shows a kernel panic before its /init finished and
 * before any guest step started: the case runNested retries once.
 * @internal
 */
export function l1PanickedEarly(parser: L1Parser): boolean {
  return !parser.done && parser.started === 0 && L1_EARLY_PANIC.test(parser.serial);
}

/** The QEMU that emulates L1 (TCG): TS_VMM_L1_QEMU with TS_VMM_L1_QEMU_DATA, else the system's. */
export function l1Qemu(): { readonly bin: string; readonly args: readonly string[] } {
  const bin = process.env["TS_VMM_L1_QEMU"];
  if (!bin) return { bin: which("qemu-system-x86_64"), args: [] };
  const data = process.env["TS_VMM_L1_QEMU_DATA"];
  return { bin, args: data ? ["-L", data, "-L", "/usr/share/qemu"] : [] };
}

/** The L1 machine: the recipe of shared/DESIGN-NOTES.md tier 3b. */
export function l1QemuArgs(kernel: string, initrd: string, vcpus: number, memMiB: number): string[] {
  return [
    "-accel", "tcg", "-cpu", "EPYC,+svm,+npt", "-m", String(memMiB), "-smp", String(vcpus),
    "-nographic", "-no-reboot", "-kernel", kernel, "-initrd", initrd,
    // maxcpus=1: /init brings the other CPUs online once KVM is loaded and its anchor VM open.
    "-append", "console=ttyS0 quiet panic=-1 rdinit=/init maxcpus=1",
  ];
}

/** Markers L1's /init prints on its console (one per line). */
export const NESTED_MARKERS = {
  up: "TSVMM-L1 up",
  kvm: "TSVMM-L1 kvm=",
  module: "TSVMM-L1 module ",
  begin: "TSVMM-STEP-BEGIN ",
  end: "TSVMM-STEP-END ",
  logBegin: "TSVMM-STEP-LOG-BEGIN ",
  logEnd: "TSVMM-STEP-LOG-END ",
  sideBegin: "TSVMM-STEP-SIDE-BEGIN ",
  sideEnd: "TSVMM-STEP-SIDE-END ",
  done: "TSVMM-L1 done",
} as const;

/** Modules of the L1 kernel package for the guests' devices, loaded in this order after kvm. */
const L1_DEVICE_MODULES = ["tun", "vhost_iotlb", "vhost", "vsock", "vmw_vsock_virtio_transport_common", "vhost_vsock"] as const;

const L1_INIT = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "${NESTED_MARKERS.up} uptime=$(cut -d' ' -f1 /proc/uptime) cpus=$(grep -c ^processor /proc/cpuinfo)"
mod=kvm-amd
grep -q '^flags.* vmx' /proc/cpuinfo && mod=kvm-intel
# tun for the guests' taps; vhost-vsock (and what it needs) for QEMU's vsock device.
# Parameters for kvm-amd/kvm-intel from the job layer (TS_VMM_L1_KVM_PARAMS), if any.
params=""; [ -f /tsvmm/kvm-params ] && params=$(cat /tsvmm/kvm-params)
for m in irqbypass kvm $mod ${L1_DEVICE_MODULES.join(" ")}; do
  p=""; [ $m = $mod ] && p=$params
  insmod /tsvmm/modules/$m.ko $p || echo "TSVMM-L1 insmod $m failed"
done
[ -d /sys/module/\${mod/-/_}/parameters ] && echo "TSVMM-L1 params $(cd /sys/module/\${mod/-/_}/parameters && for f in *; do printf '%s=%s ' "$f" "$(cat $f)"; done)"
ip link set lo up
if [ -c /dev/kvm ]; then
  # L1 booted with maxcpus=1: the modules are in and the anchor VM is open (see
  # kvm-anchor.c) before the other CPUs come online, so no later VM start or end
  # patches kernel text while another L1 vCPU runs.
  /tsvmm/kvm-anchor >/tmp/anchor.log 2>&1 &
  i=0; while ! grep -q ready /tmp/anchor.log && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
  anchor=ok; grep -q ready /tmp/anchor.log || anchor=failed
  for c in /sys/devices/system/cpu/cpu*/online; do [ -e "$c" ] && echo 1 > "$c"; done
  # Where L1's modules are: a guest vCPU found at one of these addresses was handed L1 state.
  while read -r name size _ _ _ addr; do echo "${NESTED_MARKERS.module}$name $addr $size"; done < /proc/modules
  echo "${NESTED_MARKERS.kvm}ok module=$mod cpus=$(grep -c ^processor /proc/cpuinfo) anchor=$anchor uptime=$(cut -d' ' -f1 /proc/uptime)"
  [ $anchor = ok ] || { echo "TSVMM-L1 kvm-anchor: $(cat /tmp/anchor.log)"; }
  . /tsvmm/job.sh
else
  echo "${NESTED_MARKERS.kvm}missing module=$mod"
  dmesg | tail -n 20
fi
echo "${NESTED_MARKERS.done}"
poweroff -f
`;

/** tsvmm-peer inside L1. */
const L1_PEER = "/tsvmm/peer";

function findModule(modulesDir: string, name: string): string {
  const order = readFileSync(join(modulesDir, "modules.order"), "utf8").split("\n");
  const rel = order.find((l) => basename(l).replace(/\.ko.*$/, "") === name);
  if (rel) {
    for (const ext of ["", ".xz", ".zst", ".gz"]) {
      const p = join(modulesDir, rel + ext);
      if (existsSync(p)) return p;
    }
  }
  throw new TestGuestsError("DownloadFailed", `${name}.ko is not in ${modulesDir}`);
}

/** The base layer: busybox-static, /init, kvm-anchor, tsvmm-peer, and the KVM, tun and vhost-vsock modules (decompressed) of the L1 kernel. */
async function baseLayer(k: DebianKernel, busybox = "/bin/busybox"): Promise<Layer> {
  if (!existsSync(busybox)) throw new TestGuestsError("MissingTool", `${busybox} not found: install busybox-static (scripts/setup.sh)`);
  const dir = cacheDir("nested", "modules", k.version);
  const entries: LayerEntry[] = [
    { path: "/bin/busybox", from: busybox, mode: 0o755 },
    { path: "/init", content: L1_INIT, mode: 0o755 },
    { path: "/tsvmm/kvm-anchor", from: buildStaticTool(ANCHOR_SOURCE), mode: 0o755 },
    { path: L1_PEER, from: buildStaticTool(PEER_SOURCE), mode: 0o755 },
  ];
  for (const m of ["irqbypass", "kvm", "kvm-amd", "kvm-intel", ...L1_DEVICE_MODULES]) {
    const out = join(dir, `${m}.ko`);
    if (!existsSync(out)) {
      const tmp = `${out}.tmp-${process.pid}`;
      await decompressModuleTo(findModule(k.modulesDir, m), tmp);
      renameSync(tmp, out);
    }
    entries.push({ path: `/tsvmm/modules/${m}.ko`, from: out, mode: 0o644 });
  }
  return { name: "base", entries };
}

/** A short tag for a set of paths (layer names). */
function pathsTag(paths: readonly string[]): string {
  return createHash("sha256").update([...paths].sort().join("\0")).digest("hex").slice(0, 8);
}

/** Shell-quotes one word. */
export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function checkInt(name: string, v: number, lo: number, hi: number): void {
  if (!Number.isInteger(v) || v < lo || v > hi) {
    throw new TestGuestsError("InvalidArgument", `${name} must be an integer in ${lo}..${hi}, got ${v}`);
  }
}

interface Prepared {
  readonly guest: NestedGuest;
  readonly plan: ProcessPlan;
  readonly launcher: string;
  /** The whole step's limit (both VMMs of a snapshot step). */
  readonly timeoutMs: number;
  /** Each VMM's limit inside L1. */
  readonly vmmTimeoutMs: number;
  readonly side: SidePlan;
  /** With {@link NestedGuest.snapshot}: the checked plan (its restore process included). */
  readonly snap: SnapshotPlan | null;
  /** Inside L1, the file the VMM itself logs its serial output to (QEMU's chardev `logfile=`), or null. */
  readonly serialLog: string | null;
}

/**
 * `cmd` in the background, detached from the shell that runs this: a subshell starts it and
 * ends at once, writing its pid to `pidFile` (appended), so `cmd`'s end is not signalled to
 * this shell. `cmd` is a shell command (a function name works: the subshell has them).
 * @internal
 */
export function detached(cmd: string, pidFile: string): string {
  return `( ${cmd} & echo $! >> ${pidFile} )`;
}

/**
 * A loop over the lines of `fifo` (each in `$l`, the last one even without a line break),
 * running `body` for each, in a subshell that must have no background children of its own.
 * Why: busybox ash's \`read\` throws away the part of a line it has read so far when a
 * signal interrupts it (it restarts with an empty buffer after EINTR), and SIGCHLD is such a
 * signal. A peer or the VMM ending while L1 read a serial line cut the line's head off, in
 * both VMMs' runs (`TS-VMM-VSOCK g2h …` arrived as its last 6 characters, 2026-12-03/04: the
 * h2g peer, started by this loop, ended while the guest printed it). In the subshell, the
 * VMM, the peers and the watchdog are the parent shell's children; what the body starts in
 * the background goes through {@link detached} (orphans go to PID 1, the parent shell, which
 * waits in the foreground meanwhile); the body's foreground children end before the next read.
 * Variables the body sets do not survive the loop: use files.
 * @internal
 */
export function serialReadLoop(fifo: string, body: readonly string[]): string[] {
  return [
    `( while IFS= read -r l || [ -n "$l" ]; do`,
    ...body.map((b) => `  ${b}`),
    `  l=""`,
    `done ) < ${fifo}`,
  ];
}

/**
 * The job script: one block per guest, markers around its serial output and
 * its stderr. Step markers carry the run's nonce, so a guest cannot end its
 * block early by printing one. Each VMM runs in its own session (setsid),
 * and the watchdog and the stop marker kill its whole process group.
 * Around the VMM, L1's side of the guest's devices (a tap, peers that listen
 * before the VMM starts, a peer that connects at a serial marker, RSS
 * samples and QMP at the balloon's markers); everything it saw goes to the
 * side file, printed in its own block after the step.
 * Exported for unit tests.
 *
 * @internal
 */
export function jobScript(steps: readonly Prepared[], nonce: string): string {
  const M = NESTED_MARKERS;
  const lines = [
    "# generated by runNested",
    // VmRSS and its parts of a process, one "Name:kB" word each.
    `rss() { awk '/^(VmRSS|RssAnon|RssFile|RssShmem):/ { printf "%s%s ", $1, $2 }' /proc/$1/status 2>/dev/null; }`,
    "mkdir -p /run/tsvmm",
  ];
  steps.forEach((s, i) => {
    const env = Object.entries(s.plan.env ?? {}).map(([k, v]) => shq(`${k}=${v}`));
    const cmd = ["setsid", ...(env.length ? ["env", ...env] : []), shq(which(s.plan.file)), ...s.plan.args.map(shq)].join(" ");
    const secs = Math.max(1, Math.ceil(s.vmmTimeoutMs / 1000));
    const stop = s.guest.stopOnSerial;
    const kill = "{ kill -9 -$pid || kill -9 $pid; } 2>/dev/null";
    const id = `${i}#${nonce}`;
    const side = `/tmp/side-${i}`;
    const { tap, tcp, vsock, balloon } = s.side;
    const names: NestedPeerName[] = [];
    // A peer in the background; its result line goes to /tmp/peer-<i>-<name>, its stderr to
    // /tmp/peerlog-<i>-<name>, its pid to /tmp/peerpids-<i>. Started through a subshell that ends
    // at once (detached): the read loop must never be the parent of a process that ends while
    // it reads (see serialReadLoop).
    const peer = (name: NestedPeerName, args: readonly (string | number)[]): string => {
      names.push(name);
      return `${detached(`${L1_PEER} ${args.map((a) => shq(String(a))).join(" ")} >/tmp/peer-${i}-${name} 2>/tmp/peerlog-${i}-${name}`, `/tmp/peerpids-${i}`)}; ` +
        `echo /tmp/peer-${i}-${name} >> /tmp/peerfiles-${i}`;
    };
    const listening = (name: NestedPeerName): string =>
      `k=0; while ! grep -q listening /tmp/peerlog-${i}-${name} 2>/dev/null && [ $k -lt 100 ]; do sleep 0.05; k=$((k+1)); done`;
    // Runs once, at the first serial line that contains `marker`.
    const onMarker = (marker: string, tag: string, body: string): string =>
      `case "$l" in *${shq(marker)}*) [ -e /tmp/at-${i}-${tag} ] || { : > /tmp/at-${i}-${tag}; ${body}; } ;; esac`;
    const pre: string[] = [`: > ${side}; : > /tmp/peerpids-${i}; : > /tmp/peerfiles-${i}`];
    const during: string[] = [];
    if (tap !== null) {
      pre.push(
        `if tunctl -t ${tap} >/tmp/tap-${i} 2>&1 && ip addr add ${NESTED_TAP_HOST}/24 dev ${tap} 2>>/tmp/tap-${i} && ip link set ${tap} up 2>>/tmp/tap-${i}; ` +
          `then echo "tap ${tap} up ${NESTED_TAP_HOST}/24" >> ${side}; else echo "tap ${tap} failed: $(tr '\\n' ' ' < /tmp/tap-${i})" >> ${side}; fi`,
      );
    }
    if (tcp !== null) {
      pre.push(peer("tcp", ["tcp-listen", NESTED_TAP_HOST, tcp.port, tcp.guestToHost, tcp.hostToGuest, tcp.seed, secs]), listening("tcp"));
    }
    if (vsock !== null) {
      const v = vsock.peer;
      const seed2 = (v.seed + 1) >>> 0;
      if (vsock.transport === "uds") {
        pre.push(`rm -f ${shq(vsock.udsPath)} ${shq(`${vsock.udsPath}_${v.hostPort}`)}`);
        pre.push(peer("vsock-g2h", ["unix-listen", `${vsock.udsPath}_${v.hostPort}`, v.guestToHost, v.hostToGuest, v.seed, secs]), listening("vsock-g2h"));
        during.push(onMarker(v.listenMarker, "h2g", peer("vsock-h2g", ["unix-connect", vsock.udsPath, v.guestPort, v.hostToGuest, v.guestToHost, seed2, secs])));
      } else {
        pre.push(peer("vsock-g2h", ["vsock-listen", v.hostPort, v.guestToHost, v.hostToGuest, v.seed, secs]), listening("vsock-g2h"));
        during.push(onMarker(v.listenMarker, "h2g", peer("vsock-h2g", ["vsock-connect", vsock.cid, v.guestPort, v.hostToGuest, v.guestToHost, seed2, secs])));
      }
    }
    if (balloon !== null) {
      let touched = `echo "rss before $(rss $pid)" >> ${side}`;
      if (balloon.qmp !== null) {
        const cmdJson = JSON.stringify({ execute: "balloon", arguments: { value: balloon.qmp.targetBytes } });
        names.push("qmp");
        touched += `; ${L1_PEER} qmp ${shq(balloon.qmp.path)} ${shq(cmdJson)} 10 >/tmp/peer-${i}-qmp 2>/tmp/peerlog-${i}-qmp`;
      }
      during.push(onMarker(balloon.watch.touchedMarker, "touched", touched));
      during.push(onMarker(balloon.watch.inflatedMarker, "inflated", `echo "rss after $(rss $pid)" >> ${side}`));
    }
    // After the VMM: give the peers 10 s to write their result, then end them; report what each said.
    const post: string[] = [
      `peers=$(cat /tmp/peerpids-${i}); pf=$(cat /tmp/peerfiles-${i})`,
      `k=0; while [ $k -lt 100 ]; do w=0; for f in $pf; do [ -s $f ] || w=1; done; [ $w = 0 ] && break; sleep 0.1; k=$((k+1)); done`,
      `for p in $peers; do kill -9 $p 2>/dev/null; done`,
      ...[...new Set(names)].map(
        (n) =>
          `if [ -e /tmp/peer-${i}-${n} ]; then echo "${n} $(head -n 1 /tmp/peer-${i}-${n})" >> ${side}; ` +
          `e=$(grep -v '^listening$' /tmp/peerlog-${i}-${n} 2>/dev/null | head -c 300 | tr '\\n' ' '); [ -n "$e" ] && echo "${n}-stderr $e" >> ${side}; fi`,
      ),
      ...(tap !== null ? [`tunctl -d ${tap} >/dev/null 2>&1`] : []),
    ];
    // One VMM process under step tag `t`: started with its watchdog, its serial read and
    // echoed line by line (with `extra` actions per line); leaves $st and $why.
    const runVmm = (t: string, command: string, extra: readonly string[], stopText: string | undefined): string[] => [
      `rm -f /tmp/fifo-${t}; mkfifo /tmp/fifo-${t}`,
      `${command} </dev/null >/tmp/fifo-${t} 2>/tmp/err-${t} &`,
      `pid=$!`,
      // At the timeout the VMM gets SIGTERM first (ours then says where each vCPU was), SIGKILL 5 s later.
      `( sleep ${secs}; [ -e /tmp/done-${t} ] || { echo timeout > /tmp/why-${t}; { kill -TERM -$pid || kill -TERM $pid; } 2>/dev/null; sleep 5; ${kill}; } ) >/dev/null 2>&1 &`,
      `: > /tmp/loopser-${t}`,
      ...serialReadLoop(`/tmp/fifo-${t}`, [
        `printf '%s\\n' "$l"`,
        // L1's own copy of what it read, for serialCopies.
        `printf '%s\\n' "$l" >> /tmp/loopser-${t}`,
        ...extra,
        ...(stopText !== undefined
          ? [`case "$l" in *${shq(stopText)}*) [ -e /tmp/why-${t} ] || { echo marker > /tmp/why-${t}; ${kill}; } ;; esac`]
          : []),
      ]),
      `{ wait $pid; } 2>/dev/null; st=$?`,
      `touch /tmp/done-${t}`,
      `why=exit; [ -e /tmp/why-${t} ] && why=$(cat /tmp/why-${t})`,
    ];
    const snap = s.snap;
    const begin = `echo "${M.begin}${id} uptime=$(cut -d' ' -f1 /proc/uptime)"`;
    if (snap === null) {
      lines.push(...pre, begin, ...runVmm(String(i), cmd, during, stop));
    } else {
      // The first VMM runs to the snapshot (L1's driver kills it after), then the restored one.
      const restore = snap.restore;
      const renv = Object.entries(restore.env ?? {}).map(([k, v]) => shq(`${k}=${v}`));
      const cmd2 = ["setsid", ...(renv.length ? ["env", ...renv] : []), shq(which(restore.file)), ...restore.args.map(shq)].join(" ");
      const up = `$(cut -d' ' -f1 /proc/uptime)`;
      lines.push(
        ...pre,
        ...snapshotDriver(snap, String(i), side, process.execPath, shq),
        `mkdir -p ${shq(snap.dir)}; rm -f ${shq(snap.dir)}/*; : > /tmp/serial-${i}; rm -f /tmp/snp-${i}`,
        ...(snap.apiSock !== null ? [`rm -f ${shq(snap.apiSock)}`] : []),
        begin,
        ...runVmm(String(i), cmd, [
          `printf '%s\\n' "$l" >> /tmp/serial-${i}`,
          `case "$l" in *${shq(snap.atSerial)}*) [ -e /tmp/snp-${i} ] || ${detached("snapdrv", `/tmp/snp-${i}`)} ;; esac`,
          ...during,
        ], undefined),
        `snp=$(cat /tmp/snp-${i} 2>/dev/null); [ -n "$snp" ] && kill $snp 2>/dev/null`,
        `echo; echo "${RESTORE_MARKER}${id} status=$st reason=$why uptime=${up}"`,
        `echo "snap-restore-start at=${up}" >> ${side}`,
        // L1's clocksource: its KVM keeps a master clock (kvm-clock tied to the TSC) only on "tsc".
        `echo "snap-l1-clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null) $(dmesg | grep -i -m 3 -E 'tsc.*(unstable|calibrat)' | tr '\\n' ';')" >> ${side}`,
        ...runVmm(`${i}r`, cmd2, snap.restoredMarker !== null
          ? [`case "$l" in *${shq(snap.restoredMarker)}*) [ -e /tmp/at-${i}-restored ] || { : > /tmp/at-${i}-restored; echo "snap-restored-marker at=${up}" >> ${side}; } ;; esac`]
          : [`  [ -e /tmp/at-${i}-restored ] || { : > /tmp/at-${i}-restored; echo "snap-restored-marker at=${up}" >> ${side}; }`], stop),
      );
    }
    // L1's copy of the serial output of the step's last VMM (the restored one of a snapshot step).
    const loopCopy = `/tmp/loopser-${snap === null ? i : `${i}r`}`;
    lines.push(
      `echo; echo "${M.end}${id} status=$st reason=$why uptime=$(cut -d' ' -f1 /proc/uptime)"`,
      // At most 64 KiB of stderr travels over the console (per VMM).
      `echo "${M.logBegin}${id}"; ${snap === null ? "" : `tail -c 65536 /tmp/err-${i}; echo; echo "${LOG_SPLIT_MARKER}${id}"; `}tail -c 65536 /tmp/err-${snap === null ? i : `${i}r`}; echo; echo "${M.logEnd}${id}"`,
      ...post,
      // How many bytes the VMM wrote to its serial (QEMU's chardev log) and how many lines and bytes L1 read of it.
      `echo "serial-copies vmm=${s.serialLog !== null ? `$(wc -c < ${s.serialLog} 2>/dev/null || echo none)` : "none"} loop=$(wc -c < ${loopCopy}) loop_lines=$(grep -c '' ${loopCopy}) loop_nocr=$(tr -d '\\r' < ${loopCopy} | wc -c)" >> ${side}`,
      `echo "${M.sideBegin}${id}"; tail -c 16384 ${side}; echo; echo "${M.sideEnd}${id}"`,
    );
  });
  return lines.join("\n") + "\n";
}

const MAX_BLK_BYTES = 512 << 20;

/** What QEMU can attach inside L1: vsock through vhost-vsock (L1 loads vhost_vsock), no console (its peer is on the host), no rtc. */
const QEMU_IN_L1: readonly DeviceKind[] = ["blk", "rng", "net", "balloon", "vsock"];

function checkMarker(name: string, what: string, m: string): void {
  if (m.length === 0 || /[\r\n]/.test(m)) throw new TestGuestsError("InvalidArgument", `${name}: ${what} must be non-empty text without line breaks`);
}

function checkStream(name: string, what: string, s: NestedStream): void {
  checkInt(`${name}: ${what}.guestToHost`, s.guestToHost, 0, 1 << 30);
  checkInt(`${name}: ${what}.hostToGuest`, s.hostToGuest, 0, 1 << 30);
  checkInt(`${name}: ${what}.seed`, s.seed, 0, 0xffffffff);
}

/** The longest socket path: sun_path holds 108 bytes with the NUL, and `_<port>` may follow (up to 11 more). */
const MAX_UDS_PATH = 107 - 11;

/** Exported for unit tests. @internal */
export async function prepare(g: NestedGuest, index = 0): Promise<{ prepared: Prepared; files: string[] }> {
  const launcher = g.vmm === "qemu" ? qemuLauncher : g.vmm;
  const isQemu = launcher === qemuLauncher;
  const memMiB = g.memMiB ?? 256;
  const vcpus = g.vcpus ?? 1;
  const timeoutMs = g.timeoutMs ?? 120_000;
  checkInt(`${g.name}: memMiB`, memMiB, 2, 3072);
  checkInt(`${g.name}: vcpus`, vcpus, 1, 32);
  checkInt(`${g.name}: timeoutMs`, timeoutMs, 1000, 3_600_000);
  const files = [resolve(g.kernel)];
  if (g.initrd !== undefined) files.push(resolve(g.initrd));
  const provides = isQemu ? QEMU_IN_L1 : launcher.provides;
  const resolved: ResolvedDevice[] = [];
  const extraArgs = [...(g.extraArgs ?? [])];
  let tap: string | null = null;
  let vsockDev: { cid: number; udsPath: string } | null = null;
  let balloonDev: { amountMiB: number | undefined } | null = null;
  for (const d of g.devices ?? []) {
    if (d.kind === "console") {
      throw new TestGuestsError("Unsupported", `${g.name}: a console device is not available inside L1 (its echo peer lives on the host)`);
    }
    if (!provides.includes(d.kind)) {
      throw new TestGuestsError("Unsupported", `${launcher.name} does not provide a ${d.kind} device${isQemu ? " inside L1" : ""}`);
    }
    if (d.kind === "blk") {
      const p = resolve(d.path);
      if (statSync(p).size > MAX_BLK_BYTES) throw new TestGuestsError("InvalidArgument", `${g.name}: ${p} is larger than ${MAX_BLK_BYTES} bytes`);
      files.push(p);
      resolved.push({ ...d, path: p });
    } else if (d.kind === "net" && d.tap !== undefined) {
      // IFNAMSIZ is 16 with the NUL; the name also goes into the job script unquoted.
      if (!/^[A-Za-z0-9_.-]{1,15}$/.test(d.tap)) throw new TestGuestsError("InvalidArgument", `${g.name}: tap name ${JSON.stringify(d.tap)} must be 1-15 of [A-Za-z0-9_.-]`);
      if (tap !== null) throw new TestGuestsError("Unsupported", `${g.name}: one tap per guest inside L1 (both would take ${NESTED_TAP_HOST}/24)`);
      tap = d.tap;
      resolved.push(d);
    } else if (d.kind === "vsock") {
      if (vsockDev !== null) throw new TestGuestsError("Unsupported", `${g.name}: one vsock device per guest`);
      checkInt(`${g.name}: vsock cid`, d.cid, 3, 0xfffffffe);
      const udsPath = d.udsPath ?? `/run/tsvmm/vsock-${index}.sock`;
      if (!isAbsolute(udsPath) || udsPath.length > MAX_UDS_PATH || /[\s'"\\]/.test(udsPath)) {
        throw new TestGuestsError("InvalidArgument", `${g.name}: vsock udsPath must be an absolute path inside L1 of at most ${MAX_UDS_PATH} bytes without spaces or quotes`);
      }
      vsockDev = { cid: d.cid, udsPath };
      resolved.push({ kind: "vsock", cid: d.cid, udsPath });
    } else if (d.kind === "balloon") {
      if (d.amountMiB !== undefined) checkInt(`${g.name}: balloon amountMiB`, d.amountMiB, 0, memMiB - 1);
      balloonDev = { amountMiB: d.amountMiB };
      resolved.push(d);
    } else resolved.push(d);
  }

  const peers = g.peers ?? {};
  let tcp: NestedTcpPeer | null = null;
  if (peers.tcp) {
    if (tap === null) throw new TestGuestsError("InvalidArgument", `${g.name}: a TCP peer needs a net device with a tap`);
    checkInt(`${g.name}: peers.tcp.port`, peers.tcp.port, 1, 65535);
    checkStream(g.name, "peers.tcp", peers.tcp);
    tcp = peers.tcp;
  }
  let vsock: SidePlan["vsock"] = null;
  if (peers.vsock) {
    if (vsockDev === null) throw new TestGuestsError("InvalidArgument", `${g.name}: a vsock peer needs a vsock device`);
    checkInt(`${g.name}: peers.vsock.hostPort`, peers.vsock.hostPort, 0, 0xfffffffe);
    checkInt(`${g.name}: peers.vsock.guestPort`, peers.vsock.guestPort, 0, 0xfffffffe);
    checkMarker(g.name, "peers.vsock.listenMarker", peers.vsock.listenMarker);
    checkStream(g.name, "peers.vsock", peers.vsock);
    vsock = { peer: peers.vsock, transport: isQemu ? "vhost" : "uds", udsPath: vsockDev.udsPath, cid: vsockDev.cid };
  }
  let balloon: SidePlan["balloon"] = null;
  if (peers.balloon) {
    if (balloonDev === null) throw new TestGuestsError("InvalidArgument", `${g.name}: a balloon watch needs a balloon device`);
    checkMarker(g.name, "peers.balloon.touchedMarker", peers.balloon.touchedMarker);
    checkMarker(g.name, "peers.balloon.inflatedMarker", peers.balloon.inflatedMarker);
    let qmp: { path: string; targetBytes: number } | null = null;
    if (isQemu) {
      if (balloonDev.amountMiB === undefined) throw new TestGuestsError("InvalidArgument", `${g.name}: QEMU's balloon watch needs the balloon device's amountMiB (the QMP target)`);
      qmp = { path: `/run/tsvmm/qmp-${index}.sock`, targetBytes: (memMiB - balloonDev.amountMiB) * 1024 * 1024 };
      extraArgs.push("-qmp", `unix:${qmp.path},server=on,wait=off`);
    }
    balloon = { watch: peers.balloon, qmp };
  }

  let snap: SnapshotPlan | null = null;
  if (g.snapshot !== undefined) {
    if (isQemu) throw new TestGuestsError("Unsupported", `${g.name}: the nested harness snapshots only launchers with a SnapshotLauncher (not QEMU)`);
    const planned = planSnapshot(g.name, g.snapshot, launcher.snapshot, index);
    if (planned.plan.restore.kind !== "process") throw new TestGuestsError("Unsupported", `${g.name}: the restore plan must be a process`);
    snap = planned.plan;
    extraArgs.push(...planned.firstArgs);
  }

  const spec: LaunchSpec = {
    kernel: resolve(g.kernel),
    ...(g.initrd !== undefined ? { initrd: resolve(g.initrd) } : {}),
    cmdline: g.cmdline ?? "",
    memMiB,
    vcpus,
    devices: resolved,
    extraArgs,
  };
  let plan = await launcher.plan(spec);
  if (plan.kind !== "process") throw new TestGuestsError("Unsupported", `${g.name}: ${launcher.name} runs in-process; inside L1 only process plans run`);
  // QEMU also logs what its 8250 wrote to stdout into a file in L1, so that a run whose serial
  // lost bytes on the way tells at which hop (serialCopies).
  let serialLog: string | null = null;
  if (isQemu) {
    const at = plan.args.indexOf(QEMU_SERIAL_CHARDEV);
    if (at < 0 || plan.args.indexOf(QEMU_SERIAL_CHARDEV, at + 1) >= 0) throw new TestGuestsError("Unsupported", `${g.name}: expected QEMU's serial chardev once in its arguments`);
    serialLog = `/tmp/vmmser-${index}`;
    plan = { ...plan, args: plan.args.map((a, k) => (k === at ? `${a},logfile=${serialLog},logappend=off` : a)) };
  }
  // A snapshot step runs two VMMs one after the other, each bounded by timeoutMs.
  return { prepared: { guest: g, plan, launcher: launcher.name, vmmTimeoutMs: timeoutMs, timeoutMs: snap === null ? timeoutMs : 2 * timeoutMs + 10_000, side: { tap, tcp, vsock, balloon }, snap, serialLog }, files };
}

/**
 * Collects L1's console stream into per-guest blocks (see NESTED_MARKERS).
 * Line times are host times (performance.now()) relative to each step's
 * start marker. Exported for unit tests.
 *
 * @internal
 */
export class L1Parser {
  serial = "";
  private partial = "";
  initMs: number | null = null;
  kvmMs: number | null = null;
  kvmMissing = false;
  /** L1 CPUs online once /init brought them up, from the kvm marker (null before it). */
  l1Cpus: number | null = null;
  /** False if L1's kvm-anchor could not open its VM (see nested/kvm-anchor.c). */
  anchorOk = true;
  /** L1's loaded modules (name, start address, size), as /init listed them. */
  readonly l1Modules: L1Module[] = [];
  done = false;
  /** Guest steps whose start marker was seen. */
  started = 0;
  private cur: { i: number; t0: number; lines: SerialLine[]; serial: string[]; first?: { lines: SerialLine[]; status: number; reason: string } } | null = null;
  private log: { i: number; kind: "log" | "side"; lines: string[] } | null = null;
  readonly ends = new Map<number, {
    status: number; reason: string; lines: SerialLine[]; serial: string; wallMs: number; log: string; side: string[];
    /** A snapshot step's first VMM (its lines, end and stderr). */
    first?: { lines: SerialLine[]; status: number; reason: string; log: string };
  }>();
  private readonly partialSteps = new Map<number, { t0: number; lines: SerialLine[]; serial: string; first?: { lines: SerialLine[]; status: number; reason: string } }>();

  /**
   * @param t0 - host time of L1's start
   * @param nonce - the run's nonce, which every step marker carries
   */
  constructor(
    private readonly t0: number,
    private readonly nonce: string,
  ) {}

  /** Feeds a chunk of console output received at host time `now`. */
  push(text: string, now: number = performance.now()): void {
    this.serial += text;
    const parts = (this.partial + text).split("\n");
    this.partial = parts.pop() ?? "";
    for (const p of parts) this.line(p.replace(/\r+$/, ""), now);
  }

  /** Ends the stream (L1 exited): a trailing partial line and an unfinished block are kept. */
  finish(now: number = performance.now()): void {
    if (this.partial) this.line(this.partial.replace(/\r+$/, ""), now);
    this.partial = "";
    if (this.cur) this.partialSteps.set(this.cur.i, { t0: this.cur.t0, lines: this.cur.lines, serial: this.cur.serial.join("\n"), ...(this.cur.first ? { first: this.cur.first } : {}) });
  }

  private line(text: string, now: number): void {
    const M = NESTED_MARKERS;
    if (this.log) {
      const { i, kind } = this.log;
      if (text === `${kind === "log" ? M.logEnd : M.sideEnd}${i}#${this.nonce}`) {
        const e = this.ends.get(i);
        const split = this.log.lines.indexOf(`${LOG_SPLIT_MARKER}${i}#${this.nonce}`);
        if (e && kind === "log" && e.first && split >= 0) {
          e.first.log = this.log.lines.slice(0, split).join("\n").trim();
          e.log = this.log.lines.slice(split + 1).join("\n").trim();
        } else if (e && kind === "log") e.log = this.log.lines.join("\n").trim();
        if (e && kind === "side") e.side = this.log.lines.filter((l) => l.trim() !== "");
        this.log = null;
      } else this.log.lines.push(text);
      return;
    }
    if (this.cur) {
      const end = new RegExp(`^${M.end}${this.cur.i}#${this.nonce} status=(\\d+) reason=(\\w+)`).exec(text);
      const restore = new RegExp(`^${RESTORE_MARKER}${this.cur.i}#${this.nonce} status=(\\d+) reason=(\\w+)`).exec(text);
      if (restore && !this.cur.first) {
        const lines = this.cur.lines;
        if (lines.length > 0 && lines.at(-1)!.text === "") lines.pop();
        this.cur.first = { lines, status: Number(restore[1]), reason: restore[2]! };
        this.cur.lines = [];
        this.cur.serial = [];
        return;
      }
      if (end) {
        // The job prints an empty line before the end marker (the guest's last line may lack a newline).
        const lines = this.cur.lines;
        if (lines.length > 0 && lines.at(-1)!.text === "") lines.pop();
        this.ends.set(this.cur.i, {
          ...(this.cur.first ? { first: { ...this.cur.first, log: "" } } : {}),
          status: Number(end[1]),
          reason: end[2]!,
          lines,
          serial: lines.map((l) => l.text).join("\n"),
          wallMs: now - this.cur.t0,
          log: "",
          side: [],
        });
        this.cur = null;
        return;
      }
      this.cur.lines.push({ text, tMs: now - this.cur.t0 });
      this.cur.serial.push(text);
      return;
    }
    // Outside a guest's block, markers may follow firmware or terminal escape bytes on their line.
    const at = (m: string): string | null => {
      const k = text.indexOf(m);
      return k < 0 ? null : text.slice(k + m.length);
    };
    let rest: string | null;
    if (at(M.up) !== null) this.initMs ??= now - this.t0;
    else if ((rest = at(M.kvm)) !== null) {
      if (rest.startsWith("ok")) {
        this.kvmMs = now - this.t0;
        const cpus = /\bcpus=(\d+)/.exec(rest);
        if (cpus) this.l1Cpus = Number(cpus[1]);
        if (/\banchor=failed\b/.test(rest)) this.anchorOk = false;
      } else this.kvmMissing = true;
    } else if ((rest = at(M.module)) !== null) {
      const m = /^(\S+) 0x([0-9a-f]+) (\d+)/.exec(rest);
      if (m) this.l1Modules.push({ name: m[1]!, start: BigInt(`0x${m[2]!}`), size: Number(m[3]) });
    } else if (at(M.done) !== null) this.done = true;
    else if ((rest = at(M.begin)) !== null) {
      const [i, n] = (rest.split(" ")[0] ?? "").split("#");
      if (n === this.nonce) this.started++;
      if (n === this.nonce) this.cur = { i: Number(i), t0: now, lines: [], serial: [] };
    } else if ((rest = at(M.logBegin)) !== null) {
      const [i, n] = rest.trim().split("#");
      if (n === this.nonce) this.log = { i: Number(i), kind: "log", lines: [] };
    } else if ((rest = at(M.sideBegin)) !== null) {
      const [i, n] = rest.trim().split("#");
      if (n === this.nonce) this.log = { i: Number(i), kind: "side", lines: [] };
    }
  }

  /** The guest block open now: its step index and the host time its start marker arrived. */
  current(): { readonly i: number; readonly t0: number } | null {
    return this.cur ? { i: this.cur.i, t0: this.cur.t0 } : null;
  }

  /** The lines of guest `i` if its block never ended. */
  unfinished(i: number): { t0: number; lines: SerialLine[]; serial: string; first?: { lines: SerialLine[]; status: number; reason: string } } | undefined {
    return this.partialSteps.get(i);
  }
}

const live = new Set<ChildProcess>();
let exitHook = false;
function killGroup(c: ChildProcess): void {
  if (c.pid === undefined || c.exitCode !== null || c.signalCode !== null) return;
  try {
    process.kill(-c.pid, "SIGKILL");
  } catch {
    try {
      c.kill("SIGKILL");
    } catch {
      /* gone */
    }
  }
}

/** A snapshot step's first VMM, as the parser collected it. */
function snapshottedOf(s: Prepared, first: { lines: SerialLine[]; status: number; reason: string; log?: string } | undefined, side: readonly string[]): NestedSnapshotted | null {
  if (s.snap === null || first === undefined) return null;
  return {
    lines: first.lines,
    serial: first.lines.map((l) => l.text).join("\n"),
    vmmLog: first.log ?? "",
    status: first.status,
    reason: first.reason,
    report: snapshotReport(side, s.snap.apiSock !== null),
  };
}

/**
 * Boots L1 (`qemu-system-x86_64 -accel tcg -cpu EPYC,+svm,+npt`, the Debian
 * cloud kernel of `debianKernel()`) with an initramfs holding busybox, the
 * kernel's irqbypass/kvm/kvm-amd modules, each guest's VMM (QEMU with its
 * libraries and firmware, or node with its libraries plus
 * {@link NestedOptions.packages}), the L2 kernels, initramfs images and
 * disks; L1's /init loads the modules, checks /dev/kvm, runs the guests one
 * after the other (each bounded by its timeout inside L1) and powers off.
 * The L1 QEMU runs in its own process group and is killed on the overall
 * timeout and if Node exits first; the per-run initramfs is deleted at the
 * end, the cached layers stay.
 *
 * @throws {@link TestGuestsError} `InvalidArgument` for bad options,
 *   `Unsupported` for devices or launchers that cannot run inside L1,
 *   `MissingTool` when busybox, cpio, zstd or a VMM binary is missing,
 *   `DownloadFailed` if the kernel cannot be fetched, `SpawnFailed` if QEMU
 *   cannot start.
 */
export async function runNested(options: NestedOptions): Promise<NestedRun> {
  const l1Vcpus = options.l1Vcpus ?? 1;
  const l1MemMiB = options.l1MemMiB ?? 4096;
  checkInt("l1Vcpus", l1Vcpus, 1, 8);
  checkInt("l1MemMiB", l1MemMiB, 512, 16384);
  if (options.guests.length === 0) throw new TestGuestsError("InvalidArgument", "runNested needs at least one guest");
  if (new Set(options.guests.map((g) => g.name)).size !== options.guests.length) {
    throw new TestGuestsError("InvalidArgument", "guest names must be unique");
  }
  let k: DebianKernel;
  try {
    k = options.l1Kernel ?? (await debianKernel());
  } catch (cause) {
    throw new TestGuestsError("DownloadFailed", `could not obtain the Debian kernel: ${String(cause)}`, { cause });
  }

  const steps: Prepared[] = [];
  const l2Files: string[] = [...(options.files ?? []).map((f) => resolve(f))];
  const blkFiles = new Set<string>();
  for (const [index, g] of options.guests.entries()) {
    const { prepared, files } = await prepare(g, index);
    steps.push(prepared);
    for (const f of files) l2Files.push(f);
    for (const d of g.devices ?? []) if (d.kind === "blk") blkFiles.add(resolve(d.path));
  }

  const timeoutMs = options.timeoutMs ?? 150_000 + steps.reduce((a, s) => a + s.timeoutMs + 10_000, 0);
  checkInt("timeoutMs", timeoutMs, 1000, 4 * 3_600_000);

  // Layers: big and stable first, per-run last.
  const layers: Layer[] = [await baseLayer(k)];
  const exes = new Set(steps.flatMap((s) => [
    which(s.plan.file),
    ...(s.snap ? [which(s.snap.restore.file)] : []),
    // L1's API client for a pause is a node script.
    ...(s.snap?.apiSock ? [process.execPath] : []),
  ]));
  for (const exe of exes) {
    const name = basename(exe);
    if (name.startsWith("qemu-system-")) layers.push({ name: "qemu", entries: await qemuEntries(exe) });
    else layers.push({ name: exe === process.execPath ? "node" : `exe-${name}`, entries: await executableEntries(exe) });
  }
  // Layers whose paths depend on the caller are named by a hash of those paths, so that
  // different worktrees and guest sets never prune each other's cache files.
  if (options.packages && options.packages.length > 0) {
    const dirs = options.packages.map((d) => resolve(d));
    layers.push({ name: `workspace-${pathsTag(dirs)}`, entries: await workspacePackageEntries(dirs) });
  }
  const l2Paths = [...new Set(l2Files.filter((f) => !blkFiles.has(f)))];
  const l2 = dedupe(l2Paths.map((f): LayerEntry => ({ path: f, from: f, mode: 0o644 })));
  if (l2.length > 0) layers.push({ name: `l2-${pathsTag(l2Paths)}`, entries: l2 });

  const work = mkdtempSync(join(tmpdir(), "ts-vmm-nested-"));
  const nonce = randomBytes(6).toString("hex");
  let child: ChildProcess | undefined;
  try {
    const job: Layer = {
      name: "job",
      entries: [
        { path: "/tsvmm/job.sh", content: jobScript(steps, nonce), mode: 0o755 },
        // Module parameters for L1's kvm-amd/kvm-intel (experiments on the emulator's SVM: e.g. "vgif=0 vls=0").
        ...(process.env["TS_VMM_L1_KVM_PARAMS"] ? [{ path: "/tsvmm/kvm-params", content: process.env["TS_VMM_L1_KVM_PARAMS"], mode: 0o644 }] : []),
        ...[...blkFiles].map((f): LayerEntry => ({ path: f, from: f, mode: 0o644 })),
      ],
    };
    const files: string[] = [];
    for (const l of layers) files.push(await buildLayer(l));
    files.push(await buildLayer(job, work));
    const initrd = join(work, "l1-initrd");
    concatLayers(files, initrd);
    const bytes = statSync(initrd).size;

    let retriedAfter: string | null = null;
    for (let attempt = 0; ; attempt++) {
      const args = l1QemuArgs(k.bzImage, initrd, l1Vcpus, l1MemMiB);
      if (!exitHook) {
        exitHook = true;
        process.on("exit", () => {
          for (const c of live) killGroup(c);
        });
      }
      const t0 = performance.now();
      const parser = new L1Parser(t0, nonce);
      let stderr = "";
      let timedOut = false;
      try {
        const l1 = l1Qemu();
        child = spawn(l1.bin, [...l1.args, ...args], { detached: true, stdio: ["ignore", "pipe", "pipe"] });
      } catch (cause) {
        throw new TestGuestsError("SpawnFailed", "could not start qemu-system-x86_64 for L1", { cause });
      }
      live.add(child);
      const c = child;
      c.stdout?.on("data", (b: Buffer) => {
        const t = b.toString("latin1");
        parser.push(t);
        options.onSerial?.(t);
      });
      c.stderr?.on("data", (b: Buffer) => {
        if (stderr.length < 1 << 20) stderr += b.toString("utf8");
      });
      const timer = setTimeout(() => {
        timedOut = true;
        killGroup(c);
      }, timeoutMs);
      // L1's own watchdog ends each guest at its timeout (SIGTERM, SIGKILL 5 s later). A block
      // still open well past that means L1 itself stopped (seen once in ~20 guest runs under
      // QEMU 7.2's multi-threaded TCG: its console and timers froze): kill it now rather than at
      // the overall limit.
      let frozen: string | null = null;
      const watchdog = setInterval(() => {
        const cur = parser.current();
        const step = cur ? steps[cur.i] : undefined;
        if (!cur || !step) return;
        const over = performance.now() - cur.t0 - step.timeoutMs;
        if (over > L1_FREEZE_GRACE_MS) {
          frozen = `L1 stopped responding: guest ${step.guest.name} had no end marker ${Math.round((step.timeoutMs + over) / 1000)} s after it started (its limit: ${step.timeoutMs / 1000} s); killed`;
          killGroup(c);
        }
      }, 1000);
      let code: number | null;
      let signal: NodeJS.Signals | null;
      try {
        [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((res, rej) => {
          c.once("error", (cause) => rej(new TestGuestsError("SpawnFailed", `could not start L1 QEMU: ${cause.message}`, { cause })));
          c.once("close", (cc, s) => res([cc, s]));
        });
      } finally {
        clearTimeout(timer);
        clearInterval(watchdog);
      }
      const wallMs = performance.now() - t0;
      parser.finish();

      const guests = steps.map((s, i): NestedGuestRun => {
        const e = parser.ends.get(i);
        const u = e ? undefined : parser.unfinished(i);
        const lines = e?.lines ?? u?.lines ?? [];
        const end: NestedEnd = e ? (e.reason === "timeout" ? "timeout" : e.reason === "marker" ? "marker" : "exit") : "missing";
        const status = e ? e.status : null;
        const signalled = status !== null && status > 128;
        const vmmExitValue = end === "exit" && status !== null ? s.plan.guestExitValue(signalled ? null : status, signalled ? "SIGKILL" : null) : null;
        const results = parseResults(lines);
        // The same rule as runGuest: a guest value only when the guest printed it and the VMM's status agrees.
        const verdict = guestVerdict({
          vmmExitValue, results, timedOut: end === "timeout", stoppedOnSerial: end === "marker",
          ...(s.plan.exitValueBits !== undefined ? { valueBits: s.plan.exitValueBits } : {}),
        });
        return {
          name: s.guest.name,
          end,
          status,
          guestExit: verdict.guestExit,
          exitProblem: verdict.problem,
          exitCode: verdict.guestExit,
          vmmExitValue,
          vmmExit: status === null ? null : { code: signalled ? null : status, signal: signalled ? "SIGKILL" : null },
          timedOut: end === "timeout",
          stoppedOnSerial: end === "marker",
          // Inside L1 each guest runs in its own process group, killed at its timeout or marker;
          // the whole L1 (and so every guest process) is killed at the overall timeout.
          harnessProblems: [],
          containment: "process-group",
          serial: e?.serial ?? u?.serial ?? "",
          lines,
          results,
          wallMs: e?.wallMs ?? 0,
          firstSerialByteMs: lines[0]?.tMs ?? null,
          vmmLog: e?.log ?? "",
          vmm: s.launcher,
          ...sideResults(s.side, e?.side ?? []),
          snapshotted: snapshottedOf(s, e?.first ?? u?.first, e?.side ?? []),
        };
      });
      if (attempt === 0 && !timedOut && l1PanickedEarly(parser)) {
        // The emulator's early L1 panic (L1_EARLY_PANIC): boot L1 once more.
        retriedAfter = parser.serial.slice(-2000);
        killGroup(c);
        live.delete(c);
        child = undefined;
        continue;
      }
      let problem: string | null = null;
      if (frozen !== null) problem = frozen;
      else if (timedOut) problem = `L1 did not finish within ${timeoutMs} ms (killed)`;
      else if (parser.initMs === null) problem = `L1 never ran /init (QEMU exit ${String(code ?? signal)})`;
      else if (parser.kvmMissing || parser.kvmMs === null) problem = "/dev/kvm did not appear in L1 (kvm modules failed to load)";
      else if (!parser.anchorOk) problem = "L1's kvm-anchor could not open its VM (see its line on the L1 console)";
      else if (parser.l1Cpus !== null && parser.l1Cpus !== l1Vcpus) problem = `L1 brought ${parser.l1Cpus} of its ${l1Vcpus} CPUs online`;
      else if (L1_KERNEL_FAULT.test(parser.serial)) problem = `L1's kernel failed: ${L1_KERNEL_FAULT.exec(parser.serial)![0]}`;
      else if (!parser.done) problem = `L1 stopped before its /init finished (QEMU exit ${String(code ?? signal)})`;
      return {
        guests,
        problem,
        l1Serial: parser.serial,
        l1Log: stderr,
        wallMs,
        l1InitMs: parser.initMs,
        l1KvmMs: parser.kvmMs,
        l1Modules: parser.l1Modules,
        timedOut,
        image: { layers: files.map(layerLabel), bytes },
        l1Attempts: attempt + 1,
        l1RetriedAfter: retriedAfter,
      };
    }
  } finally {
    if (child) {
      killGroup(child);
      live.delete(child);
    }
    rmSync(work, { recursive: true, force: true });
  }
}

/** Where {@link runNestedUntilSound} lists the runs it discarded: the repo's `npm test` prints them in its summary. */
export const NESTED_DISCARD_LOG = "discards.log";

function recordDiscard(why: string): void {
  try {
    appendFileSync(join(nestedCacheDir(), NESTED_DISCARD_LOG), `${new Date().toISOString()} ${why.replace(/\s+/g, " ").slice(0, 400)}\n`);
  } catch {
    // only a report: the warning above has it too
  }
}

/**
 * Runs {@link runNested} up to `attempts` times (default 2) until `unsound`
 * returns null, and returns the last run with the reasons of the runs it
 * discarded. `unsound` must judge the *environment*, not the VMM under test:
 * an L1 problem, or a reference guest (QEMU) that did not reach its marker.
 * Under QEMU 7.2's multi-threaded TCG with a 2-vCPU L1 we saw, in one session,
 * the L1 kernel panic inside KVM_RUN once and QEMU's own 2-vCPU L2 reset
 * itself mid-boot once; a second failing run is reported as it is.
 */
export async function runNestedUntilSound(
  options: NestedOptions,
  unsound: (run: NestedRun) => string | null,
  attempts = 2,
): Promise<{ readonly run: NestedRun; readonly discarded: readonly string[] }> {
  checkInt("attempts", attempts, 1, 5);
  const discarded: string[] = [];
  for (let i = 1; ; i++) {
    const run = await runNested(options);
    const why = unsound(run);
    if (why === null || i >= attempts) return { run, discarded };
    discarded.push(why);
    console.warn(`[nested] attempt ${i} discarded (the emulated tier, not the VMM under test): ${why}`);
    recordDiscard(why);
  }
}

/** What {@link serialCopies} reads from a step's side lines: the serial output at each hop inside L1. */
export interface SerialCopies {
  /**
   * Bytes in the VMM's own log of its serial writes (QEMU's chardev `logfile=`), or null where the
   * VMM keeps none. QEMU logs a write that failed with EAGAIN too, and again at each retry.
   */
  readonly vmmBytes: number | null;
  /** Bytes of L1's copy of what its job read from the VMM's stdout (each line with its newline). */
  readonly loopBytes: number;
  /** Lines of that copy. */
  readonly loopLines: number;
  /** Bytes of that copy without carriage returns (L1's console adds its own; the host drops them at line ends). */
  readonly loopBytesNoCr: number;
  /** Lines the host received in the step's block. */
  readonly hostLines: number;
  /** Bytes the host received in the step's block (each line with a newline, without carriage returns at line ends). */
  readonly hostBytes: number;
}

/** The step's `serial-copies` side line, or null if L1 never printed it (the step did not finish). */
export function serialCopies(g: Pick<NestedGuestRun, "side" | "lines">): SerialCopies | null {
  for (const l of g.side) {
    const m = /^serial-copies vmm=\s*(\d+|none) loop=\s*(\d+) loop_lines=\s*(\d+) loop_nocr=\s*(\d+)/.exec(l);
    if (m) {
      let hostBytes = 0;
      for (const x of g.lines) hostBytes += x.text.length + 1;
      return { vmmBytes: m[1] === "none" ? null : Number(m[1]), loopBytes: Number(m[2]), loopLines: Number(m[3]), loopBytesNoCr: Number(m[4]), hostLines: g.lines.length, hostBytes };
    }
  }
  return null;
}

/**
 * Whether a step's serial output lost bytes on L1's console, between what L1's job read of the
 * VMM's stdout and what the host received: fewer lines or bytes on the host than L1 read. Null
 * when the host has it all (or more: an L1 kernel message inside the block adds bytes, and can
 * so hide a loss of as many), or when the copies are unknown.
 *
 * The VMM's own count ({@link SerialCopies.vmmBytes}, QEMU's chardev log) is not compared: QEMU
 * logs a byte also when writing it failed with EAGAIN (its 16550 then retries it, logging it
 * again; after four failures it drops it), so a larger count there shows back-pressure, not a
 * loss, and a byte the VMM's UART dropped is the VMM's loss, which the test reports.
 */
export function serialTransportLoss(g: Pick<NestedGuestRun, "side" | "lines" | "name">): string | null {
  const c = serialCopies(g);
  if (c === null) return null;
  if (c.hostLines < c.loopLines || c.hostBytes < c.loopBytesNoCr) {
    return `${g.name}: the host received ${c.hostLines} lines, ${c.hostBytes} bytes of the ${c.loopLines} lines, ${c.loopBytesNoCr} bytes (without CR) L1 read`;
  }
  return null;
}

/** The layers cache directory (for size reports). */
export function nestedCacheDir(): string {
  return cacheDir("nested");
}
