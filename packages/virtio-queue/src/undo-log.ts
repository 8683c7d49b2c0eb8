/** Most chains {@link UndoLog} remembers; older pops can no longer be given back. */
export const UNDO_WINDOW = 1024;

/**
 * The chains popped and neither returned (`addUsed`) nor given back
 * (`undoPop`), oldest first, at most {@link UNDO_WINDOW}, each with the avail
 * position (split index, or packed ring position with its wrap counter)
 * before it. Only the newest can be given back: its avail position is the one
 * right before the current one. Returning a chain forgets it and every older
 * record (the ring position can no longer be rewound past it). A FIFO device
 * returns the oldest record, found first, so each operation is O(1) for it.
 * @internal
 */
export class UndoLog {
  // Records live in [#start, #end) of three parallel arrays (chain, avail position before it,
  // wrap counter before it), reused rather than replaced and never holding an object per pop:
  // a record object a pop cost an allocation on every chain (~3 % of the main thread on
  // bench:net rx). A device that returns each chain before the next pop empties the log on
  // every chain, and a fresh `[]` each time grew a new backing store per pop (5-7 % of
  // bench:queue's split profiles). Chain slots outside the live range are set to undefined so
  // no returned chain stays reachable.
  // The chain objects are only compared by identity (a `ReusableChain` is refilled by later
  // pops, so its `head` is not that of an older record): each record keeps its head itself.
  #chains: (object | undefined)[] = [];
  #heads: number[] = [];
  #avail: number[] = [];
  #wrap: boolean[] = [];
  #start = 0;
  #end = 0;

  /** Records a pop: the chain object, its head, and the avail position and wrap counter before it. */
  push(chain: object, head: number, availBefore: number, wrapBefore: boolean): void {
    const i = this.#end++;
    this.#chains[i] = chain;
    this.#heads[i] = head;
    this.#avail[i] = availBefore;
    this.#wrap[i] = wrapBefore;
    if (this.#end - this.#start > UNDO_WINDOW) this.#chains[this.#start++] = undefined;
    this.#compact();
  }

  /** The newest record's chain, or undefined. */
  topChain(): object | undefined {
    return this.#end > this.#start ? this.#chains[this.#end - 1] : undefined;
  }

  /** The head of the newest record's chain (only while {@link UndoLog.topChain} is defined). */
  topHead(): number {
    return this.#heads[this.#end - 1] as number;
  }

  /** The avail position before the newest record's pop (only while {@link UndoLog.topChain} is defined). */
  topAvailBefore(): number {
    return this.#avail[this.#end - 1] as number;
  }

  /** The wrap counter before the newest record's pop (only while {@link UndoLog.topChain} is defined). */
  topWrapBefore(): boolean {
    return this.#wrap[this.#end - 1] as boolean;
  }

  /** Drops the newest record. */
  dropTop(): void {
    if (this.#end > this.#start) this.#chains[--this.#end] = undefined;
    if (this.#end === this.#start) this.clear();
  }

  /** The chain with `head` was returned: forgets its oldest record and everything older. */
  returned(head: number): void {
    const chains = this.#chains;
    const heads = this.#heads;
    for (let i = this.#start; i < this.#end; i++) {
      if (heads[i] === head) {
        for (let j = this.#start; j <= i; j++) chains[j] = undefined;
        this.#start = i + 1;
        if (this.#start === this.#end) this.clear();
        else this.#compact();
        return;
      }
    }
  }

  /** Forgets everything (reset, a consumed malformed chain, a layout change). */
  clear(): void {
    const chains = this.#chains;
    for (let i = this.#start; i < this.#end; i++) chains[i] = undefined;
    this.#start = 0;
    this.#end = 0;
  }

  /** Records held. */
  get length(): number {
    return this.#end - this.#start;
  }

  #compact(): void {
    if (this.#start > 64 && this.#start * 2 > this.#end) {
      const n = this.#end - this.#start;
      this.#chains.copyWithin(0, this.#start, this.#end);
      this.#chains.fill(undefined, n, this.#end);
      this.#heads.copyWithin(0, this.#start, this.#end);
      this.#avail.copyWithin(0, this.#start, this.#end);
      this.#wrap.copyWithin(0, this.#start, this.#end);
      this.#start = 0;
      this.#end = n;
    }
  }
}
