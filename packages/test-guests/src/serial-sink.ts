import { performance } from "node:perf_hooks";
import type { SerialLine } from "./results.js";

/** Collects serial output into lines with arrival times (ms since `t0`). */
export class SerialSink {
  readonly lines: SerialLine[] = [];
  private partial = "";
  serial = "";
  firstByteMs: number | null = null;
  constructor(private readonly t0: number, private readonly onText?: (t: string) => void) {}
  push(bytes: Uint8Array): void {
    const now = performance.now() - this.t0;
    if (this.firstByteMs === null && bytes.length > 0) this.firstByteMs = now;
    const text = Buffer.from(bytes).toString("latin1");
    this.serial += text;
    const parts = (this.partial + text).split("\n");
    this.partial = parts.pop() ?? "";
    for (const p of parts) this.lines.push({ text: p.replace(/\r$/, ""), tMs: now });
    this.onText?.(text);
  }
  finish(now: number): void {
    if (this.partial) this.lines.push({ text: this.partial.replace(/\r$/, ""), tMs: now });
    this.partial = "";
  }
}

/** What an executor hands back to runGuest. */
export interface Ended {
  readonly vmmExit: { readonly code: number | null; readonly signal: string | null } | null;
  /** The launcher's decoding of the VMM's exit (untrusted on its own). */
  readonly vmmExitValue: number | null;
  readonly valueBits?: number;
  readonly timedOut: boolean;
  readonly stoppedOnSerial: boolean;
  readonly vmmLog: string;
  readonly problems: readonly string[];
}

/** Shared by the executors. */
export interface RunControl {
  readonly sink: SerialSink;
  readonly matches: () => boolean;
  readonly timeoutMs: number;
  readonly stopTimeoutMs: number;
}

/** Waits for `p` at most `ms`; never rejects. */
export async function bounded<T>(p: PromiseLike<T>, ms: number): Promise<{ ok: true; value: T } | { ok: false; error?: unknown }> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<{ ok: false }>((res) => (timer = setTimeout(() => res({ ok: false }), ms)));
  try {
    return await Promise.race([
      Promise.resolve(p).then(
        (value) => ({ ok: true as const, value }),
        (error: unknown) => ({ ok: false as const, error }),
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
