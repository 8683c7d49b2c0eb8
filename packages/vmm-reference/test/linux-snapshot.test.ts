import { randomBytes } from "node:crypto";
import { describeWith } from "@ts-vmm/test-utils";
import {
  BEAT_MARKER,
  dataDisk,
  INIT_MARKER,
  linuxGuest,
  parseHeartbeats,
  runNestedUntilSound,
  type DataDisk,
  type Heartbeat,
  type NestedGuestRun,
  type NestedRun,
  type NestedSnapshotted,
} from "@ts-vmm/test-guests";
import { afterAll, beforeAll, expect, it } from "vitest";
import { NESTED_CPU_ARGS, nestedEnvironmentProblem, nestedJudge, PACKAGE_DIR, QUIET_CMDLINE } from "./nested-linux.js";
import { oursNodeLauncher } from "./ours-launcher.js";

/*
 * Issue 11 in the nested tier: "a Linux guest snapshotted at its shell and
 * restored keeps answering". One L1 run (test-guests' runNested with a
 * snapshot step) boots the Debian kernel on `ts-vmm run` with virtio-blk and
 * virtio-rng (the devices that snapshot today) to /init's shell; /init then
 * beats (tsvmm.heartbeat: a counter every ~0.5 s, every 4th beat the disk's
 * file read again through virtio-blk with the page cache dropped). At beat 4
 * L1 pauses the guest through the API (PATCH /vm) for 3 s and resumes it,
 * then sends SIGUSR1 (--snapshot-on-signal: pause, write vm.snap and vm.mem,
 * resume), lets the guest run on 1.5 s, kills the VMM, and starts
 * `ts-vmm run --restore` from the files. What must hold:
 * - while paused the VMM writes nothing, and the guest beats again after
 *   the resume;
 * - the restored guest continues the counter from the snapshot (no reboot:
 *   no kernel banner, no /init marker), every beat after the one before;
 * - its clock goes on from the snapshot (kvmclock: no jump back, no jump
 *   ahead), and its sleeps keep ending (LAPIC timer / TSC deadline);
 * - its disk reads complete (the read counter grows, the file is right:
 *   irqfd and ioeventfd routes, the I/O APIC's routes in KVM again);
 * - the kernel logged nothing about clocks, watchdogs or stalls after the
 *   shell marker (but the watchdog skipping its check across the pause):
 *   in particular its TSC stays stable (the restore pairs TSC and kvm-clock);
 * - `poweroff -f` at the end makes the restored VMM exit with status 0.
 * It runs in the nested tier on every host (the harness lives in L1).
 */
const BEATS = 40;
const L2_TIMEOUT_MS = 150_000;
const PAUSE_MS = 3000;
/** The restored guest's clock may run on at most this far past the beat before it (s): kvmclock restored, not the host's time since. */
const MAX_CLOCK_STEP_S = 5;
/** Kernel messages after the shell marker that say the guest's time or scheduling broke. */
const CLOCK_TROUBLE = /clocksource|watchdog|unstable|backwards|stall|hung_task|soft lockup|hard lockup|hrtimer|timekeeping|BUG|WARNING|Call Trace/i;
/** The clocksource watchdog's lines about the TSC against kvm-clock (a restore whose TSC and clock part: DESIGN.md, "The clock and the TSC"). */
const TSC_WATCHDOG = /clocksource|'tsc'|TSC unstable|kvm-clock|wd_nsec|cs_nsec|wd_now|cs_now/;
/** The clocksource watchdog's line for a long gap between two of its reads: it skips that check. */
const PAUSE_SKIP = /clocksource: Long readout interval, skipping watchdog check/;
/** The timestamp of a dmesg line, s (Infinity without one). */
const dmesgTime = (l: string): number => Number(/^\[\s*(\d+\.\d+)\]/.exec(l)?.[1] ?? Infinity);
/** The serial text at which L1's driver pauses, resumes and snapshots the first VMM. */
const SNAPSHOT_AT = `${BEAT_MARKER} n=4 up=`;
const NAME = "a Linux guest snapshotted at its shell and restored in a new VMM process keeps answering (nested tier: blk + rng, pause/resume through the API)";

function check(r: NestedGuestRun, first: NestedSnapshotted, token: string): void {
  const why = `first VMM:\n${first.serial.slice(-2500)}\n--- its stderr:\n${first.vmmLog}\n=== restored VMM:\n${r.serial.slice(-2500)}\n--- its stderr:\n${r.vmmLog}\n--- L1 side:\n${r.side.join("\n")}`;
  // The first VMM: shell, beats, pause/resume, snapshot, killed by L1 as planned.
  expect(first.serial, why).toContain(`${INIT_MARKER}-SHELL`);
  expect(first.reason, why).toBe("snapshot");
  const rep = first.report;
  expect(rep.pause, why).not.toBeNull();
  const pause = rep.pause!;
  expect([pause.paused, pause.resumed], why).toEqual(["204", "204"]);
  expect(pause.info, why).toMatch(/^200 .*"state":"Paused"/);
  expect(pause.linesAtPause, why).toBeGreaterThan(0);
  expect(pause.linesAtResume, `lines written while paused; ${why}`).toBe(pause.linesAtPause);
  const before = parseHeartbeats(first.lines).beats;
  const atResume = Math.max(...parseHeartbeats(first.lines.slice(0, pause.linesAtResume)).beats.map((b) => b.n), 0);
  expect(before.some((b) => b.n > atResume), `no beat after the resume; ${why}`).toBe(true);
  expect(rep.written, why).toBe(true);
  expect(first.vmmLog, why).toMatch(/ts-vmm: snapshot written to \S+vm\.snap and \S+vm\.mem \([\d.]+ ms\)/);
  // The beats printed before the signal (counted by L1) were certainly in the snapshot.
  const firstLines = first.lines.slice(0, rep.linesAtSignal ?? 0);
  const atSignal = Math.max(...parseHeartbeats(firstLines).beats.map((b) => b.n), 0);
  expect(atSignal, why).toBeGreaterThan(atResume);

  // The restored VMM: the same guest, going on.
  const text = r.lines.map((l) => l.text);
  expect(text.some((t) => t.includes("Linux version") || t.includes(INIT_MARKER)), `the restored guest booted again; ${why}`).toBe(false);
  const log = parseHeartbeats(r.lines);
  const after = log.beats;
  expect(after.length, why).toBeGreaterThan(4);
  const r1 = after[0]!;
  const firstMax = Math.max(...before.map((b) => b.n));
  // A beat cut in half by the snapshot is not counted: the first whole one may be the next.
  expect(r1.n, `restored at beat ${r1.n}; signal after ${atSignal}, first VMM's last ${firstMax}; ${why}`).toBeGreaterThan(atSignal);
  expect(r1.n, why).toBeLessThanOrEqual(firstMax + 1);
  after.forEach((b, i) => { if (i > 0) expect([i, b.n], why).toEqual([i, after[i - 1]!.n + 1]); });
  expect(after.at(-1)!.n, why).toBe(BEATS);
  expect(log.done, why).toBe(BEATS);
  // kvmclock: the restored clock goes on from the beat before (taken before the snapshot), never back, not by the time the VM was away.
  const prev = before.find((b) => b.n === r1.n - 1);
  expect(prev, why).toBeDefined();
  expect(r1.up - prev!.up, why).toBeGreaterThanOrEqual(0);
  expect(r1.up - prev!.up, why).toBeLessThan(MAX_CLOCK_STEP_S);
  // Timers: every sleep ends, on the guest's clock and on L1's (line arrival).
  after.forEach((b, i) => {
    if (i === 0) return;
    const a = after[i - 1]!;
    expect([b.n, b.up - a.up > 0 && b.up - a.up < MAX_CLOCK_STEP_S], why).toEqual([b.n, true]);
    expect([b.n, b.tMs - a.tMs < 15_000], why).toEqual([b.n, true]);
  });
  // virtio-blk after the restore: the file read again each time, the read count growing.
  const disk = after.filter((b): b is Heartbeat & { disk: string; reads: number } => b.disk !== undefined);
  expect(disk.length, why).toBeGreaterThanOrEqual(3);
  for (const b of disk) expect([b.n, b.disk], why).toEqual([b.n, token]);
  disk.forEach((b, i) => { if (i > 0) expect([b.n, b.reads > disk[i - 1]!.reads], why).toEqual([b.n, true]); });
  const lastBefore = before.filter((b) => b.reads !== undefined && b.n < r1.n).at(-1);
  if (lastBefore) expect(disk[0]!.reads, why).toBeGreaterThan(lastBefore.reads!);
  // poweroff -f: the restored VMM ends with 0.
  expect([r.end, r.status], why).toEqual(["exit", 0]);
}

/**
 * The kernel's messages since the shell marker about clocks, watchdogs or stalls, but for
 * the watchdog skipping its check across the API pause before the snapshot (our pause keeps
 * the clock running, as Firecracker's does).
 */
function clockTrouble(r: NestedGuestRun, first: NestedSnapshotted): string[] {
  const after = parseHeartbeats(r.lines);
  const r1 = after.beats[0];
  const prev = r1 ? parseHeartbeats(first.lines).beats.find((b) => b.n === r1.n - 1) : undefined;
  const snapshotUp = prev?.up ?? 0;
  return after.dmesg.filter((l) => CLOCK_TROUBLE.test(l) && !(PAUSE_SKIP.test(l) && dmesgTime(l) < snapshotUp));
}

function body(): void {
  let run: NestedRun;
  let disk: DataDisk | undefined;
  const token = randomBytes(8).toString("hex");
  beforeAll(async () => {
    const g = await linuxGuest();
    disk = await dataDisk(token);
    // Retried (three L1 runs at most) only for the environment: an L1 problem, or one of
    // our two VMMs stopped with a vCPU in L1's modules; and once for a triple fault of the
    // first VMM while it was still booting (nestedJudge). Any other failure is reported as it is.
    const { run: r, discarded } = await runNestedUntilSound(
      {
        l1Vcpus: 1,
        packages: [PACKAGE_DIR],
        guests: [{
          name: "ours-snapshot", vmm: oursNodeLauncher, kernel: g.bzImage, initrd: g.initramfs,
          cmdline: `${QUIET_CMDLINE} tsvmm.heartbeat=${BEATS}`, memMiB: 256, vcpus: 1,
          devices: [{ kind: "blk", path: disk.path, readOnly: true }, { kind: "rng" }],
          timeoutMs: L2_TIMEOUT_MS, extraArgs: NESTED_CPU_ARGS,
          snapshot: {
            atSerial: SNAPSHOT_AT, pauseMs: PAUSE_MS, beforeSnapshotMs: 2000, keepRunningMs: 1500,
            restoredMarker: `${BEAT_MARKER} n=`,
          },
        }],
      },
      // A triple fault of the first VMM is retried once only while it was a plain boot, before
      // L1's driver saw the snapshot marker (then it pauses, resumes and snapshots it); one
      // after that, or after the restore, never is: our pause, snapshot or restore could cause it.
      nestedJudge(nestedEnvironmentProblem, (x) => x.guests.flatMap((y) =>
        (y.snapshotted && !y.snapshotted.serial.includes(SNAPSHOT_AT) ? [{ name: `${y.name} (booting, before the snapshot marker)`, vmmLog: y.snapshotted.vmmLog }] : []))),
      3,
    );
    if (discarded.length > 0) console.warn(`[nested snapshot] discarded runs: ${discarded.join("; ")}`);
    run = r;
  }, 3 * (150_000 + 2 * L2_TIMEOUT_MS + 40_000)); // at most three L1 runs
  afterAll(() => disk?.remove());

  it("one L1 run: shell, pause/resume, snapshot, kill, restore in a new process; the guest's counter, clock, timers and disk go on; poweroff ends the restored VMM with 0", () => {
    expect(run.problem, `L1 problem; L1 console:\n${run.l1Serial.slice(-3000)}\n--- L1 qemu:\n${run.l1Log}`).toBeNull();
    const r = run.guests[0]!;
    const first = r.snapshotted;
    expect(first, `no first VMM; step:\n${r.serial.slice(-3000)}\n${r.vmmLog}`).not.toBeNull();
    const rep = first!.report;
    const ms = /snapshot written to .* \(([\d.]+) ms\)/.exec(first!.vmmLog)?.[1];
    const span = (a: number | null, b: number | null): string => (a === null || b === null ? "never" : `${((b - a) * 1000).toFixed(0)} ms`);
    console.log(
      `[nested snapshot] snapshot write ${ms ?? "?"} ms (the VMM's own figure; L1: signal to done on stderr ${span(rep.signalAt, rep.writtenAt)}); ` +
      `restore process start to its first beat ${span(rep.restoreStartAt, rep.restoredMarkerAt)} (L1 uptime, 10 ms steps); ` +
      `files: ${rep.files}; L1 clocksource: ${rep.l1Clocksource}; L1 run ${(run.wallMs / 1000).toFixed(1)} s`,
    );
    const dmesg = parseHeartbeats(r.lines).dmesg;
    if (dmesg.length > 0) console.log(`[nested snapshot] kernel messages after the shell marker:\n  ${dmesg.join("\n  ")}`);
    check(r, first!, token);
  });

  // The restore sets the TSC as an offset paired with kvm-clock (ClockRestore): before that the
  // watchdog marked the TSC unstable about 1 s after restore (2-3 ms of skew; DESIGN.md, "The clock and the TSC").
  it("the restored kernel keeps its TSC stable and logs no clocksource line, stall, lockup, BUG, WARNING or backwards clock", () => {
    const r = run.guests[0]!;
    expect(r.snapshotted, "no first VMM").not.toBeNull();
    const trouble = clockTrouble(r, r.snapshotted!);
    const all = `kernel messages after the shell marker:\n${parseHeartbeats(r.lines).dmesg.join("\n")}`;
    expect(trouble.filter((l) => TSC_WATCHDOG.test(l)), `the clocksource watchdog after restore; ${all}`).toEqual([]);
    expect(trouble, all).toEqual([]);
  });
}

describeWith({ tools: ["qemu-system-x86_64", "apt-get", "dpkg-deb", "cpio", "zstd", "xz", "ldd", "busybox", "mke2fs", "gcc"] }, NAME, body);
