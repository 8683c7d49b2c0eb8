import type { DeviceKind } from "./launcher.js";
import { DEVICE_KINDS } from "./launcher.js";
import type { GuestRun } from "./run-guest.js";

/** Checks every micro-guest selftest run must report regardless of devices. */
export const BASE_CHECKS: readonly string[] = ["cpu.cpl3", "pio.scratch", "mem.rw"];

/** The checks the selftest reports as PASS for each device kind it drives fully. */
export const DEVICE_CHECKS: Readonly<Record<DeviceKind, readonly string[]>> = {
  blk: [
    "blk.init", "blk.get-id", "blk.write-read", "blk.multi-segment", "blk.flush", "blk.unsupported-type",
    "blk.read-past-end", "blk.read-straddling-end", "blk.write-straddling-end", "blk.reset-in-flight",
    "blk.after-reset", "blk.wrap",
  ],
  rng: ["rng.init", "rng.read"],
  console: ["console.init", "console.write", "console.echo"],
  net: ["net.init", "net.tx", "net.arp-reply"],
  vsock: ["vsock.cid", "vsock.rst"],
  balloon: ["balloon.init", "balloon.config-actual", "balloon.inflate-deflate"],
  rtc: ["rtc.init", "rtc.cfg", "rtc.read", "rtc.monotonic", "rtc.utc", "rtc.tai", "rtc.bad-clock", "rtc.alarm"],
};

/**
 * Device kinds whose selftest sends requests, so that (with interrupts on) it
 * must also report `PASS <kind>.irq`: completions announced by interrupts.
 */
export const IRQ_CHECKED_KINDS: readonly DeviceKind[] = ["blk", "rng", "console", "net", "vsock", "balloon", "rtc"];

/** What a selftest run was asked to do (see {@link selftestProblems}). */
export interface SelftestExpectation {
  /**
   * True (the selftest's default) when the guest ran with interrupts: then
   * `PASS irq.setup` and `PASS <kind>.irq` for every attached kind in
   * {@link IRQ_CHECKED_KINDS} are required. False for `irq=0` (polling): then
   * `SKIP irq polling (irq=0)` is required instead.
   */
  readonly interrupts?: boolean;
  /** RAM reaches above 4 GiB: `PASS blk.high-buffer` is required (a blk buffer above 4 GiB and one across 2 GiB). */
  readonly highMemory?: boolean;
  /** A second, read-only blk disk is attached: `PASS blk.ro.feature`, `blk.ro.write-refused`, `blk.ro.read` are required. */
  readonly readOnlyBlk?: boolean;
  /** The blk device offers VIRTIO_F_RING_PACKED (QEMU: `-global virtio-blk-device.packed=on`): `PASS blk.packed` is required. */
  readonly packedRing?: boolean;
  /**
   * The guest ran with `vsock_port=P` and the host echoes on that port
   * (`<udsPath>_P` for ours): `PASS vsock.connect`, `vsock.echo`, `vsock.close` are required.
   */
  readonly vsockEcho?: boolean;
}

/**
 * Compares a selftest run with what it should have reported: exit value 0,
 * no FAIL line, every base check and every check of each attached device
 * passed (with interrupts, also `irq.setup` and `<kind>.irq`), and
 * `SKIP <kind> absent` for every kind that was not attached.
 * Returns the list of mismatches (empty when the run is as expected).
 */
export function selftestProblems(
  run: GuestRun,
  attached: readonly DeviceKind[],
  expectation: SelftestExpectation = {},
): string[] {
  const problems: string[] = [];
  const r = run.results;
  const interrupts = expectation.interrupts ?? true;
  if (run.exitCode !== 0) problems.push(`exit value ${String(run.exitCode)} (want 0)`);
  if (r.values["exit"] !== "0") problems.push(`no "RESULT exit=0" line`);
  for (const f of r.failed) problems.push(`FAIL ${f.check} ${f.detail}`);
  const want = [...BASE_CHECKS];
  if (interrupts) want.push("irq.setup");
  else if (!r.skipped.some((s) => s.check === "irq" && s.reason === "polling (irq=0)")) problems.push("missing SKIP irq polling (irq=0)");
  for (const k of attached) {
    want.push(...DEVICE_CHECKS[k]);
    if (interrupts && IRQ_CHECKED_KINDS.includes(k)) want.push(`${k}.irq`);
  }
  if (attached.includes("blk")) {
    if (interrupts) want.push("blk.event-idx", "blk.no-interrupt");
    if (expectation.highMemory) want.push("blk.high-buffer");
    if (expectation.readOnlyBlk) want.push("blk.ro.feature", "blk.ro.write-refused", "blk.ro.read");
    if (expectation.packedRing) want.push("blk.packed");
  }
  if (attached.includes("vsock") && expectation.vsockEcho) want.push("vsock.connect", "vsock.echo", "vsock.close");
  for (const c of want) if (!r.passed.includes(c)) problems.push(`missing PASS ${c}`);
  for (const k of DEVICE_KINDS) {
    if (attached.includes(k)) continue;
    if (!r.skipped.some((s) => s.check === k && s.reason === "absent")) problems.push(`missing SKIP ${k} absent`);
  }
  return problems;
}

/** The cases the micro-guest's `fuzz` mode sends (malformed chains and queue set-ups, then two valid indirect chains), in order. */
export const FUZZ_CASES: readonly string[] = [
  "next_out_of_table", "loop", "nested_indirect", "indirect_len_not_multiple_of_16", "indirect_len_zero",
  "indirect_with_next", "indirect_table_outside_memory", "len_sum_past_4g", "buffer_outside_memory",
  "buffer_wraps_2_64", "header_device_writable", "avail_idx_ahead", "desc_table_outside_memory",
  "valid_indirect_read", "valid_indirect_write", "queue_size_not_power_of_2",
];

/**
 * The fuzz cases QEMU 7.2's virtio-blk gets wrong (measured here): a buffer
 * outside guest memory, or one wrapping past 2^64, completes with status OK
 * although nothing could have been read into it. The guest's verdict for
 * them is `fail`; tests assert exactly this list, so a verdict that stops
 * catching them fails the test.
 */
export const QEMU_FUZZ_DEFECTS: readonly string[] = ["buffer_outside_memory", "buffer_wraps_2_64"];

/** How a device reacted to one fuzz case, and the guest's verdict. */
export interface FuzzReaction {
  readonly case: string;
  /**
   * `completed …` (the chain came back on the used ring, with len and blk status),
   * `needs_reset …` (the device set DEVICE_NEEDS_RESET), `no_response …`, or for the
   * queue-size case `accepted_and_works` / `accepted_then_stalled` / `needs_reset` / `rejected`;
   * undefined if the guest never reported the case.
   */
  readonly reaction: string | undefined;
  /** `ok`, `recovered_after_reset`, `stalled…` or `wrong_data…`: whether a valid request worked afterwards. */
  readonly after: string | undefined;
  /** The guest's verdict: `pass`, `fail` (with a `FAIL fuzz.<case>` line) or `skip` (INDIRECT not offered). */
  readonly verdict: "pass" | "fail" | "skip" | undefined;
  /** The reason the guest gave for a `fail`. */
  readonly reason: string | undefined;
}

/** Collects the per-case reactions and verdicts from a `fuzz` run, in {@link FUZZ_CASES} order. */
export function fuzzReactions(run: GuestRun): FuzzReaction[] {
  const v = run.results.values;
  return FUZZ_CASES.map((c) => {
    const verdict = v[`fuzz.${c}.verdict`];
    return {
      case: c,
      reaction: v[`fuzz.${c}`],
      after: v[`fuzz.${c}.after`],
      verdict: verdict === "pass" || verdict === "fail" || verdict === "skip" ? verdict : undefined,
      reason: run.results.failed.find((f) => f.check === `fuzz.${c}`)?.detail,
    };
  });
}

/**
 * Judges a `fuzz` run against the defects a VMM is known to have: every case
 * must have a verdict; exactly the cases in `knownDefects` must be `fail`
 * (so a verdict that stops catching a known defect is a problem too); no case
 * may be skipped unless `allowSkips`; no other FAIL line; and the device must
 * recover after the last reset. Returns the mismatches (empty if as expected).
 */
export function fuzzProblems(run: GuestRun, knownDefects: readonly string[] = [], allowSkips = false): string[] {
  const problems: string[] = [];
  if (!/^\d+$/.test(run.results.values["seed"] ?? "")) problems.push(`no "RESULT seed=" line`);
  for (const f of fuzzReactions(run)) {
    const want = knownDefects.includes(f.case) ? "fail" : "pass";
    if (f.verdict === undefined) problems.push(`${f.case}: no verdict`);
    else if (f.verdict === "skip" && allowSkips) continue;
    else if (f.verdict !== want) problems.push(`${f.case}: verdict ${f.verdict}${f.reason ? ` (${f.reason})` : ""}, want ${want}`);
  }
  const caseChecks = new Set(FUZZ_CASES.map((c) => `fuzz.${c}`));
  for (const f of run.results.failed) if (!caseChecks.has(f.check)) problems.push(`FAIL ${f.check} ${f.detail}`);
  if (!run.results.passed.includes("fuzz.recovers-after-reset")) problems.push("missing PASS fuzz.recovers-after-reset");
  // the guest exits 1 when any case failed, 0 otherwise
  const wantExit = knownDefects.length > 0 ? 1 : 0;
  if (run.exitCode !== wantExit) problems.push(`exit value ${String(run.exitCode)} (want ${wantExit})`);
  return problems;
}
