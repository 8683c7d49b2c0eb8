// The inflate, deflate and free page reporting queues: PFN arrays and reported
// ranges, checked against guest memory, coalesced, and given back to the host.
import { GuestMemoryError, type DiscardableMemory, type GuestMemory } from "@ts-vmm/vm-memory";
import type { DescriptorChain, Queue } from "@ts-vmm/virtio-queue";
import { BALLOON_PAGE_SIZE } from "./constants.js";
import type { BalloonMetrics } from "./metrics.js";

/** What the page queues need from the device. @internal */
export interface PageSink {
  readonly discard: DiscardableMemory;
  readonly metrics: BalloonMetrics;
  /** Reports something the device skipped or the host refused (one line per chain at most). */
  violation(reason: string): void;
}

/** The outcome of one turn on a queue. @internal */
export interface Turn {
  /** Chains were returned to the driver (it may need an interrupt). */
  readonly used: boolean;
  /** The budget ran out with work possibly left: come back next turn. */
  readonly more: boolean;
}

/** Pops the next chain; with EVENT_IDX re-arms the notification and looks once more. */
function pop(queue: Queue, mem: GuestMemory): DescriptorChain | undefined {
  const c = queue.popDescriptorChain(mem);
  if (c !== undefined || !queue.eventIdx) return c;
  return queue.enableNotification(mem) ? queue.popDescriptorChain(mem) : undefined;
}

/**
 * The inflate or deflate queue: each chain's readable part is an array of le32
 * PFNs of 4 KiB pages. A chain may take several turns (a cursor remembers how
 * far it got); it is returned (used length 0) once every PFN was looked at.
 * @internal
 */
export class PfnQueue {
  readonly #queue: Queue;
  readonly #inflate: boolean;
  readonly #sink: PageSink;
  readonly #buf: Uint8Array;
  readonly #dv: DataView;
  #cursor: { readonly chain: DescriptorChain; readonly total: number; done: number; invalid: number; firstInvalid: number } | undefined;

  constructor(queue: Queue, inflate: boolean, sink: PageSink, maxPfnsPerTurn: number) {
    this.#queue = queue;
    this.#inflate = inflate;
    this.#sink = sink;
    this.#buf = new Uint8Array(4 * maxPfnsPerTurn);
    this.#dv = new DataView(this.#buf.buffer);
  }

  /** Whether a chain is half done. */
  get midChain(): boolean {
    return this.#cursor !== undefined;
  }

  /**
   * Handles at most `budget` PFNs (each chain also costs one).
   * @throws VirtqueueError for a broken ring or a PFN array outside guest memory (the caller sets NEEDS_RESET).
   */
  drain(mem: GuestMemory, budget: number): Turn {
    let used = false;
    let spent = 0;
    const m = this.#sink.metrics;
    while (spent < budget) {
      if (this.#cursor === undefined) {
        const chain = pop(this.#queue, mem);
        if (chain === undefined) return { used, more: false };
        spent++;
        m.malformedBytes += chain.readableLength % 4;
        this.#cursor = { chain, total: Math.floor(chain.readableLength / 4), done: 0, invalid: 0, firstInvalid: 0 };
      }
      const c = this.#cursor;
      const n = Math.min(c.total - c.done, budget - spent, this.#buf.length / 4);
      if (n > 0) {
        // One copy of this batch of PFNs: each value is read from guest memory once.
        c.chain.readInto(mem, this.#buf.subarray(0, 4 * n), 4 * c.done);
        this.#pfns(mem, n, c);
        c.done += n;
        spent += n;
      }
      if (c.done === c.total) {
        this.#cursor = undefined;
        if (c.invalid > 0) {
          this.#sink.violation(
            `virtio-balloon: ${this.#inflate ? "inflate" : "deflate"} chain ${c.chain.head}: ${c.invalid} of ${c.total} PFNs are not guest memory (first 0x${c.firstInvalid.toString(16)}), skipped`,
          );
        }
        this.#queue.addUsed(mem, c.chain.head, 0);
        used = true;
      }
    }
    return { used, more: true };
  }

  #pfns(mem: GuestMemory, n: number, c: { invalid: number; firstInvalid: number }): void {
    const m = this.#sink.metrics;
    const dv = this.#dv;
    // Runs of adjacent pages (ascending or descending) become one discard.
    let runStart = 0;
    let runLen = 0;
    for (let i = 0; i < n; i++) {
      const pfn = dv.getUint32(4 * i, true);
      const addr = pfn * BALLOON_PAGE_SIZE; // < 2^44: exact
      if (!mem.checkRange(addr, BALLOON_PAGE_SIZE)) {
        if (c.invalid++ === 0) c.firstInvalid = pfn;
        m.invalidPfns++;
        continue;
      }
      if (!this.#inflate) {
        // No MUST_TELL_HOST: a deflated page is simply the guest's again (it refaults on touch).
        m.deflatedPages++;
        continue;
      }
      if (runLen > 0 && addr === runStart + runLen) runLen += BALLOON_PAGE_SIZE;
      else if (runLen > 0 && addr + BALLOON_PAGE_SIZE === runStart) {
        runStart = addr;
        runLen += BALLOON_PAGE_SIZE;
      } else {
        if (runLen > 0) this.#discard(runStart, runLen);
        runStart = addr;
        runLen = BALLOON_PAGE_SIZE;
      }
    }
    if (runLen > 0) this.#discard(runStart, runLen);
  }

  #discard(addr: number, len: number): void {
    const m = this.#sink.metrics;
    if (discardOrReport(this.#sink, addr, len, "inflate")) {
      m.inflatedPages += len / BALLOON_PAGE_SIZE;
      m.discardedBytes += len;
    }
  }
}

/** Discards, counting and reporting a refusal; never throws a GuestMemoryError. */
function discardOrReport(sink: PageSink, addr: number, len: number, what: string): boolean {
  try {
    sink.discard.discardRange(addr, len);
    return true;
  } catch (e) {
    if (!(e instanceof GuestMemoryError)) throw e;
    sink.metrics.discardFailures++;
    sink.violation(`virtio-balloon: ${what}: the host could not discard [0x${addr.toString(16)}, +0x${len.toString(16)}): ${e.code}: ${e.message}`);
    return false;
  }
}

/**
 * The free page reporting queue: every descriptor of a chain (Linux makes them
 * device-writable; either direction is accepted) is a range of free guest
 * memory. The whole 4 KiB pages inside each range are given back; a range
 * not inside guest memory is skipped. The chain is returned (used length 0)
 * when done; a large report is cut over several turns.
 * @internal
 */
export class ReportQueue {
  readonly #queue: Queue;
  readonly #sink: PageSink;
  #cursor: { readonly chain: DescriptorChain; desc: number; done: number; invalid: number } | undefined;

  constructor(queue: Queue, sink: PageSink) {
    this.#queue = queue;
    this.#sink = sink;
  }

  /** Whether a chain is half done. */
  get midChain(): boolean {
    return this.#cursor !== undefined;
  }

  /**
   * Gives back at most `byteBudget` bytes and looks at most at `chainBudget` chains.
   * @throws VirtqueueError for a broken ring (the caller sets NEEDS_RESET).
   */
  drain(mem: GuestMemory, byteBudget: number, chainBudget: number): Turn {
    let used = false;
    let bytes = 0;
    let chains = 0;
    const m = this.#sink.metrics;
    while (bytes < byteBudget && chains < chainBudget) {
      if (this.#cursor === undefined) {
        const chain = pop(this.#queue, mem);
        if (chain === undefined) return { used, more: false };
        chains++;
        this.#cursor = { chain, desc: 0, done: 0, invalid: 0 };
      }
      const c = this.#cursor;
      const descs = c.chain.descriptors;
      while (c.desc < descs.length && bytes < byteBudget) {
        const d = descs[c.desc]!;
        if (c.done === 0 && !mem.checkRange(d.addr, d.len)) {
          m.invalidReports++;
          c.invalid++;
          c.desc++;
          continue;
        }
        // Only pages wholly inside the range: a partial page may hold live data.
        const start = Math.ceil(d.addr / BALLOON_PAGE_SIZE) * BALLOON_PAGE_SIZE;
        const end = Math.floor((d.addr + d.len) / BALLOON_PAGE_SIZE) * BALLOON_PAGE_SIZE;
        const from = start + c.done;
        const room = Math.floor((byteBudget - bytes) / BALLOON_PAGE_SIZE) * BALLOON_PAGE_SIZE;
        const n = Math.min(Math.max(end - from, 0), Math.max(room, BALLOON_PAGE_SIZE));
        if (n > 0 && discardOrReport(this.#sink, from, n, "free page report")) {
          m.reportedBytes += n;
          m.discardedBytes += n;
        }
        bytes += Math.max(n, 1);
        if (from + n >= end) {
          c.desc++;
          c.done = 0;
        } else c.done += n;
      }
      if (c.desc === descs.length) {
        this.#cursor = undefined;
        if (c.invalid > 0) this.#sink.violation(`virtio-balloon: free page report ${c.chain.head}: ${c.invalid} ranges are not guest memory, skipped`);
        m.reports++;
        this.#queue.addUsed(mem, c.chain.head, 0);
        used = true;
      }
    }
    return { used, more: true };
  }
}
