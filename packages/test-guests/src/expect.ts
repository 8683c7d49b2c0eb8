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
  rtc: ["rtc.init"],
};

/**
 * Device kinds whose selftest sends requests, so that (with interrupts on) it
 * must also report `PASS <kind>.irq`: completions announced by interrupts.
 */
export const IRQ_CHECKED_KINDS: readonly DeviceKind[] = ["blk", "rng", "console", "net", "vsock", "balloon"];

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
    if (interrupts) want.push("blk.event-idx");
    if (expectation.highMemory) want.push("blk.high-buffer");
    if (expectation.readOnlyBlk) want.push("blk.ro.feature", "blk.ro.write-refused", "blk.ro.read");
  }
  for (const c of want) if (!r.passed.includes(c)) problems.push(`missing PASS ${c}`);
  for (const k of DEVICE_KINDS) {
    if (attached.includes(k)) continue;
    if (!r.skipped.some((s) => s.check === k && s.reason === "absent")) problems.push(`missing SKIP ${k} absent`);
  }
  return problems;
}

/** The malformed-queue cases the micro-guest's `fuzz` mode sends, in order. */
export const FUZZ_CASES: readonly string[] = [
  "next_out_of_table", "loop", "nested_indirect", "indirect_len_not_multiple_of_16", "indirect_len_zero",
  "indirect_with_next", "indirect_table_outside_memory", "len_sum_past_4g", "buffer_outside_memory",
  "buffer_wraps_2_64", "header_device_writable", "avail_idx_ahead", "desc_table_outside_memory",
  "queue_size_not_power_of_2",
];

/** How a device reacted to one fuzz case. */
export interface FuzzReaction {
  readonly case: string;
  /**
   * `completed …` (the chain came back on the used ring, with len and blk status),
   * `needs_reset …` (the device set DEVICE_NEEDS_RESET), `no_response …`, or for the
   * queue-size case `accepted_and_works` / `accepted_then_stalled` / `rejected`;
   * undefined if the guest never reported the case.
   */
  readonly reaction: string | undefined;
  /** `ok`, `needs_reset` or `stalled …`: whether a valid request worked afterwards. */
  readonly after: string | undefined;
}

/** Collects the per-case reactions from a `fuzz` run, in {@link FUZZ_CASES} order. */
export function fuzzReactions(run: GuestRun): FuzzReaction[] {
  const v = run.results.values;
  return FUZZ_CASES.map((c) => ({ case: c, reaction: v[`fuzz.${c}`], after: v[`fuzz.${c}.after`] }));
}
