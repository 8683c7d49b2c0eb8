// Helpers of the tests that run the micro-guest's mode=ticker (snapshot, pool, device snapshots):
// its "RESULT tick=N" lines, and polling for a condition.

/** The tick numbers in the guest's output, in order. */
export const ticksOf = (out: string): number[] => [...out.matchAll(/RESULT tick=(\d+)/g)].map((m) => Number(m[1]));

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
