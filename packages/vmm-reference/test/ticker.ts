// Helpers of the tests that run the micro-guest's mode=ticker (snapshot, pool, device snapshots):
// its "RESULT tick=N" lines, and polling for a condition.

/**
 * The tick numbers of the complete "RESULT tick=N" lines in the guest's output, in order. A
 * last line still being written ("RESULT tick=2" of a coming "tick=24") is not a tick yet:
 * counting it made a growing log read mid-line look like a gap.
 */
export const ticksOf = (out: string): number[] => [...out.matchAll(/RESULT tick=(\d+)\r?\n/g)].map((m) => Number(m[1]));

/** Whether the ticks follow one another with none missing or repeated. */
export const contiguous = (t: readonly number[]): boolean => t.every((v, i) => i === 0 || v === t[i - 1]! + 1);

/** Polls `cond` every 2 ms; rejects after `ms` (default 20 s), naming `what` when given. */
export async function until(cond: () => boolean, opts: { readonly ms?: number; readonly what?: string } = {}): Promise<void> {
  const end = Date.now() + (opts.ms ?? 20_000);
  while (!cond()) {
    if (Date.now() > end) throw new Error(opts.what === undefined ? "timed out waiting" : `timed out waiting for ${opts.what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
