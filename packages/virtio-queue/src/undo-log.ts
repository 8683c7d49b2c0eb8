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
  #items: UndoRecord[] = [];
  #start = 0;

  /** Records a pop. */
  push(r: UndoRecord): void {
    this.#items.push(r);
    if (this.#items.length - this.#start > UNDO_WINDOW) this.#start++;
    this.#compact();
  }

  /** The newest record, or undefined. */
  top(): UndoRecord | undefined {
    return this.#items.length > this.#start ? this.#items[this.#items.length - 1] : undefined;
  }

  /** Drops the newest record. */
  dropTop(): void {
    if (this.#items.length > this.#start) this.#items.pop();
    if (this.#items.length === this.#start) this.clear();
  }

  /** The chain with `head` was returned: forgets its oldest record and everything older. */
  returned(head: number): void {
    const items = this.#items;
    for (let i = this.#start; i < items.length; i++) {
      if ((items[i] as UndoRecord).chain.head === head) {
        this.#start = i + 1;
        if (this.#start === items.length) this.clear();
        else this.#compact();
        return;
      }
    }
  }

  /** Forgets everything (reset, a consumed malformed chain, a layout change). */
  clear(): void {
    if (this.#items.length > 0) this.#items = [];
    this.#start = 0;
  }

  /** Records held. */
  get length(): number {
    return this.#items.length - this.#start;
  }

  #compact(): void {
    if (this.#start > 64 && this.#start * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#start);
      this.#start = 0;
    }
  }
}
