import { GuestMemoryError } from "./error.js";

/** The page size dirty tracking works in: 4 KiB, as KVM's dirty log on x86-64. */
export const DIRTY_PAGE_SIZE = 4096;

/**
 * One bit per 4 KiB page of a region, set when the VMM writes to the page.
 *
 * The bits live in a `SharedArrayBuffer` laid out as KVM's dirty log
 * (`KVM_GET_DIRTY_LOG`): an array of little-endian u64 words where bit `i % 64`
 * of word `i / 64` is page `i`. On a little-endian host that is also "bit
 * `i % 8` of byte `i / 8`", so a Uint8Array, Uint32Array or BigUint64Array over
 * KVM's buffer can be merged directly. Bits are set with `Atomics.or`, so
 * threads sharing the bitmap (see `toTransferable`) never lose each other's marks.
 */
export class DirtyBitmap {
  /** Bytes covered by the bitmap (the region size). */
  readonly size: number;
  /** Number of pages tracked: `ceil(size / 4096)`. */
  readonly pageCount: number;
  /** The shared bit storage, in KVM's layout, padded to whole u64 words. */
  readonly buffer: SharedArrayBuffer;
  readonly #words: Uint32Array;

  /**
   * @param size - the number of bytes to track (a region's size).
   * @param buffer - existing storage to adopt (from another thread's bitmap),
   *   at least `ceil(pages / 64) * 8` bytes; a new zeroed one if omitted.
   * @throws {@link GuestMemoryError} `"InvalidArgument"` if `size` is not a
   *   non-negative safe integer or `buffer` is too small.
   */
  constructor(size: number, buffer?: SharedArrayBuffer) {
    if (!(Number.isSafeInteger(size) && size >= 0)) {
      throw new GuestMemoryError("InvalidArgument", `dirty bitmap size ${size} is not a non-negative integer`);
    }
    this.size = size;
    this.pageCount = Math.ceil(size / DIRTY_PAGE_SIZE);
    const bytes = Math.ceil(this.pageCount / 64) * 8;
    if (buffer !== undefined && buffer.byteLength < bytes) {
      throw new GuestMemoryError("InvalidArgument", `dirty bitmap buffer of ${buffer.byteLength} bytes, need ${bytes}`);
    }
    this.buffer = buffer ?? new SharedArrayBuffer(bytes);
    this.#words = new Uint32Array(this.buffer, 0, bytes / 4);
  }

  /**
   * Marks the pages touched by `[offset, offset + len)` (offsets in the region).
   * Does nothing for `len === 0`. The caller (the memory's write paths) has
   * already checked the range; out-of-range parts are clamped, never written
   * outside the bitmap.
   */
  mark(offset: number, len: number): void {
    if (len <= 0) return;
    let first = Math.floor(offset / DIRTY_PAGE_SIZE);
    let last = Math.floor((offset + len - 1) / DIRTY_PAGE_SIZE);
    if (first < 0) first = 0;
    if (last >= this.pageCount) last = this.pageCount - 1;
    const w = this.#words;
    if (first === last) {
      Atomics.or(w, first >>> 5, (1 << (first & 31)) >>> 0);
      return;
    }
    for (let p = first; p <= last; ) {
      const word = p >>> 5;
      const lo = p & 31;
      const hi = Math.min(31, last - (word << 5));
      const bits = hi - lo === 31 ? 0xffffffff : (((1 << (hi - lo + 1)) - 1) << lo) >>> 0;
      Atomics.or(w, word, bits);
      p = (word + 1) << 5;
    }
  }

  /**
   * Whether page `page` (index within the region) is dirty.
   * @throws {@link GuestMemoryError} `"InvalidArgument"` if `page` is not in [0, pageCount).
   */
  isDirty(page: number): boolean {
    if (!(Number.isInteger(page) && page >= 0 && page < this.pageCount)) {
      throw new GuestMemoryError("InvalidArgument", `page ${page} outside [0, ${this.pageCount})`);
    }
    return (Atomics.load(this.#words, page >>> 5) & (1 << (page & 31))) !== 0;
  }

  /**
   * ORs a KVM dirty log for the same range (the region's memslot) into this
   * bitmap. Bit `i` of the log is page `i`; bits past `pageCount` are ignored.
   *
   * @param log - the bitmap KVM filled, as bytes or words over its buffer.
   * @throws {@link GuestMemoryError} `"InvalidArgument"` if the log is shorter
   *   than `ceil(pageCount / 8)` bytes.
   */
  mergeKvmLog(log: Uint8Array | Uint32Array | BigUint64Array): void {
    const need = Math.ceil(this.pageCount / 8);
    if (log.byteLength < need) {
      throw new GuestMemoryError("InvalidArgument", `dirty log of ${log.byteLength} bytes, need ${need}`);
    }
    const bytes = new Uint8Array(log.buffer, log.byteOffset, need);
    const w = this.#words;
    const nWords = Math.ceil(this.pageCount / 32);
    for (let i = 0; i < nWords; i++) {
      const b = i * 4;
      let v = (bytes[b] ?? 0) | ((bytes[b + 1] ?? 0) << 8) | ((bytes[b + 2] ?? 0) << 16) | ((bytes[b + 3] ?? 0) << 24);
      if (i === nWords - 1 && (this.pageCount & 31) !== 0) v &= (1 << (this.pageCount & 31)) - 1;
      if (v !== 0) Atomics.or(w, i, v >>> 0);
    }
  }

  /** Iterates over the indices of dirty pages, in increasing order. */
  *pages(): IterableIterator<number> {
    const w = this.#words;
    const nWords = Math.ceil(this.pageCount / 32);
    for (let i = 0; i < nWords; i++) {
      let v = Atomics.load(w, i);
      while (v !== 0) {
        const bit = 31 - Math.clz32(v & -v);
        yield i * 32 + bit;
        v &= v - 1;
      }
    }
  }

  /** The number of dirty pages. */
  count(): number {
    let n = 0;
    const w = this.#words;
    for (let i = 0; i < w.length; i++) {
      let v = Atomics.load(w, i);
      while (v !== 0) {
        v &= v - 1;
        n++;
      }
    }
    return n;
  }

  /** Clears every bit. */
  clear(): void {
    const w = this.#words;
    for (let i = 0; i < w.length; i++) Atomics.store(w, i, 0);
  }

  /**
   * Returns the dirty bits as a new `BigUint64Array` in KVM's layout and clears
   * them, word by word with `Atomics.exchange`, so a mark made concurrently is
   * either in the result or still set afterwards, never lost.
   */
  takeKvmLayout(): BigUint64Array {
    const out = new BigUint64Array(this.#words.length / 2);
    const o32 = new Uint32Array(out.buffer);
    const w = this.#words;
    for (let i = 0; i < w.length; i++) o32[i] = Atomics.exchange(w, i, 0);
    return out;
  }

  /** A copy of the dirty bits in KVM's layout (not cleared). */
  toKvmLayout(): BigUint64Array {
    const out = new BigUint64Array(this.#words.length / 2);
    const o32 = new Uint32Array(out.buffer);
    const w = this.#words;
    for (let i = 0; i < w.length; i++) o32[i] = Atomics.load(w, i);
    return out;
  }
}
