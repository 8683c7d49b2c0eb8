import type { DescriptorChain } from "./chain.js";

/** Most chains {@link UndoLog} remembers; older pops can no longer be given back. */
export const UNDO_WINDOW = 1024;

/**
 * One pop that can still be given back: the chain and the avail position
 * (split index, or packed ring position with its wrap counter) before it.
 * @internal
 */
export interface UndoRecord {
  readonly chain: DescriptorChain;
  readonly availBefore: number;
  readonly wrapBefore: boolean;
}

/**
 * The chains popped and neither returned (`addUsed`) nor given back
 * (`undoPop`), oldest first, at most {@link UNDO_WINDOW}. Only the newest can
 * be given back: its avail position is the one right before the current one.
 * Returning a chain forgets it and every older record (the ring position can
 * no longer be rewound past it). A FIFO device returns the oldest record,
 * found first, so each operation is O(1) for it.
 * @internal
 */
export class UndoLog {
  // Records live in #items[#start, #end). The array is reused rather than replaced: a device
  // that returns each chain before the next pop empties the log on every chain, and a fresh
  // `[]` each time grew a new backing store per pop (5-7% of bench:queue's split profiles).
  // Slots outside the live range are set to undefined so no returned chain stays reachable.
  #items: (UndoRecord | undefined)[] = [];
  #start = 0;
  #end = 0;

  /** Records a pop. */
  push(r: UndoRecord): void {
    this.#items[this.#end++] = r;
    if (this.#end - this.#start > UNDO_WINDOW) this.#items[this.#start++] = undefined;
    this.#compact();
  }

  /** The newest record, or undefined. */
  top(): UndoRecord | undefined {
    return this.#end > this.#start ? this.#items[this.#end - 1] : undefined;
  }

  /** Drops the newest record. */
  dropTop(): void {
    if (this.#end > this.#start) this.#items[--this.#end] = undefined;
    if (this.#end === this.#start) this.clear();
  }

  /** The chain with `head` was returned: forgets its oldest record and everything older. */
  returned(head: number): void {
    const items = this.#items;
    for (let i = this.#start; i < this.#end; i++) {
      if ((items[i] as UndoRecord).chain.head === head) {
        for (let j = this.#start; j <= i; j++) items[j] = undefined;
        this.#start = i + 1;
        if (this.#start === this.#end) this.clear();
        else this.#compact();
        return;
      }
    }
  }

  /** Forgets everything (reset, a consumed malformed chain, a layout change). */
  clear(): void {
    const items = this.#items;
    for (let i = this.#start; i < this.#end; i++) items[i] = undefined;
    this.#start = 0;
    this.#end = 0;
  }

  /** Records held. */
  get length(): number {
    return this.#end - this.#start;
  }

  #compact(): void {
    if (this.#start > 64 && this.#start * 2 > this.#end) {
      const items = this.#items;
      const n = this.#end - this.#start;
      items.copyWithin(0, this.#start, this.#end);
      items.fill(undefined, n, this.#end);
      this.#start = 0;
      this.#end = n;
    }
  }
}
