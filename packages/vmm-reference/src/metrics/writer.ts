// Firecracker's metrics file (PUT /metrics `metrics_path`): one JSON object per
// line, appended on each flush: every 60 s while it is open, and on demand
// (the API's FlushMetrics action). Our lines are VmmMetrics, not Firecracker's fields.
import { closeSync, constants, openSync, writeSync } from "node:fs";
import { VmmError } from "../error.js";
import type { VmmMetrics } from "./types.js";

/** Firecracker's period: a line every 60 s. */
export const METRICS_FLUSH_INTERVAL_MS = 60_000;

/** One line of the metrics file: a {@link VmmMetrics} and its flush number. */
export type MetricsLine = VmmMetrics & {
  /** 0 for the first line this writer appended, then 1, 2, … (a gap never happens; a missed line is counted in `missed`). */
  readonly seq: number;
};

/** Options of {@link MetricsWriter.open}. */
export interface MetricsWriterOptions {
  /** The file (created if missing, mode 0644) or named pipe to append to. */
  readonly path: string;
  /** Where each line's metrics come from ({@link Vmm.metrics}). */
  readonly source: () => VmmMetrics;
  /** Period of the automatic flush in ms (default {@link METRICS_FLUSH_INTERVAL_MS}); 0 turns it off. */
  readonly intervalMs?: number;
}

/**
 * Appends a {@link MetricsLine} per flush to a file, as Firecracker does for
 * `PUT /metrics`: newline-delimited JSON, a line on every {@link MetricsWriter.flush}
 * and every `intervalMs`. Values are cumulative since the VM was created (Firecracker
 * writes most counters as deltas since the previous line; subtract consecutive lines
 * for those).
 *
 * The file is opened with O_APPEND | O_NONBLOCK, so a named pipe nobody drains makes
 * a flush miss its line (counted in {@link MetricsWriter.missed}) instead of blocking
 * the event loop. A line is written with one write(2) (whole, or counted as missed).
 * The periodic timer does not keep the process alive.
 */
export class MetricsWriter {
  #fd: number;
  readonly #source: () => VmmMetrics;
  readonly #timer: ReturnType<typeof setInterval> | undefined;
  #seq = 0;
  #missed = 0;
  /** The last write error, if any (kept for diagnostics; flushes go on). */
  lastError: string | undefined;
  /** The path written to. */
  readonly path: string;

  private constructor(fd: number, opts: MetricsWriterOptions, intervalMs: number) {
    this.#fd = fd;
    this.#source = opts.source;
    this.path = opts.path;
    if (intervalMs > 0) {
      this.#timer = setInterval(() => this.flush(), intervalMs);
      this.#timer.unref();
    }
  }

  /**
   * Opens (or creates) `path` for appending and starts the periodic flush.
   * @throws {@link VmmError} `InvalidConfig` for a bad interval or a non-function source;
   *   `FileNotWritable` if the file cannot be opened for writing (the message says why).
   */
  static open(opts: MetricsWriterOptions): MetricsWriter {
    if (opts === null || typeof opts !== "object" || typeof opts.path !== "string" || opts.path === "") {
      throw new VmmError("InvalidConfig", "the metrics writer needs a path");
    }
    if (typeof opts.source !== "function") throw new VmmError("InvalidConfig", "the metrics writer needs a source function");
    const interval = opts.intervalMs ?? METRICS_FLUSH_INTERVAL_MS;
    if (!Number.isSafeInteger(interval) || interval < 0 || interval > 2 ** 31 - 1) {
      throw new VmmError("InvalidConfig", `the metrics flush interval must be a whole number of ms from 0 to 2^31 - 1, got ${String(interval)}`);
    }
    let fd: number;
    try {
      fd = openSync(opts.path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NONBLOCK, 0o644);
    } catch (e) {
      throw new VmmError("FileNotWritable", `cannot open the metrics file ${opts.path}: ${(e as Error).message}`, { cause: e });
    }
    return new MetricsWriter(fd, opts, interval);
  }

  /** Lines appended so far. */
  get written(): number {
    return this.#seq;
  }

  /** Flushes whose line could not be written (a full pipe, a write error). */
  get missed(): number {
    return this.#missed;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /**
   * Appends one line now. Returns whether it was written; a failure is counted in
   * {@link MetricsWriter.missed} with the reason in `lastError`, never thrown (the
   * timer calls this too). A source that throws counts as a missed line.
   * @throws {@link VmmError} `InvalidState` after close().
   */
  flush(): boolean {
    if (this.#fd < 0) throw new VmmError("InvalidState", "the metrics writer is closed");
    let line: Buffer;
    try {
      const m: MetricsLine = { seq: this.#seq, ...this.#source() };
      line = Buffer.from(`${JSON.stringify(m)}\n`);
    } catch (e) {
      this.#missed++;
      this.lastError = `reading the metrics failed: ${(e as Error).message}`;
      return false;
    }
    try {
      const n = writeSync(this.#fd, line);
      if (n !== line.byteLength) {
        // Only a pipe can take part of a line; what got in is cut off at the next newline by readers.
        this.#missed++;
        this.lastError = `short write: ${n} of ${line.byteLength} bytes`;
        return false;
      }
    } catch (e) {
      this.#missed++;
      this.lastError = `writing ${this.path} failed: ${(e as Error).message}`;
      return false;
    }
    this.#seq++;
    return true;
  }

  /**
   * Stops the timer, appends a last line (unless `finalFlush` is false) and closes the file.
   * Idempotent.
   */
  close(finalFlush = true): void {
    if (this.#fd < 0) return;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    if (finalFlush) this.flush();
    const fd = this.#fd;
    this.#fd = -1;
    try {
      closeSync(fd);
    } catch {
      // close(2) errors leave nothing to do
    }
  }
}
