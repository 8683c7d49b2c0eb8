import { GUEST_ADDRESS_LIMIT, checkGuestAddress, checkLength, type GuestAddress } from "./address.js";
import { type BulkCopier, copyRefused, resolveCopier } from "./bulk-copy.js";
import { DIRTY_PAGE_SIZE } from "./dirty-bitmap.js";
import { GuestMemoryError } from "./error.js";
import type { GuestMemory, U64Halves } from "./guest-memory.js";
import { BackedRegion, EMPTY_REGION, type GuestMemoryRegion } from "./region.js";

const U64_MAX = 0xffff_ffff_ffff_ffffn;
const TWO_32 = 2 ** 32;
const HI_LIMIT = 2 ** 20;

/**
 * The shared implementation of {@link GuestMemory}; `GuestMemoryMmap` and
 * `GuestMemoryArrayBuffer` extend it and differ only in how they get their
 * buffers. Exported for `instanceof` checks and for the extras it adds to the
 * interface (`markDirty`, `dirtyPages`, `clearDirty`, `isClosed`); it cannot
 * be extended outside this package. Hot paths check the last region hit first and use one
 * DataView per region, allocating nothing for u8..u32 and the atomics.
 */
export abstract class GuestMemoryBase implements GuestMemory {
  private regs: readonly BackedRegion[];
  /** The region the last successful access hit. */
  private last: BackedRegion = EMPTY_REGION;
  private closed = false;
  private readonly scratch = new Uint8Array(8);
  private readonly scratchDv = new DataView(this.scratch.buffer);
  /** The bulk copy for reads of `bulkMinRead` and writes of `bulkMinWrite` bytes and up (chosen once, at construction). */
  private readonly bulk: BulkCopier["copy"];
  private readonly bulkMinRead: number;
  private readonly bulkMinWrite: number;
  private readonly copier: BulkCopier | null;
  /** Total bytes over all regions. */
  readonly size: number;

  /**
   * @internal
   * @throws {@link GuestMemoryError} `"Overlap"` if two regions overlap;
   *   `"InvalidArgument"` if a region is empty or `copier` is malformed.
   */
  protected constructor(regions: readonly BackedRegion[], copier?: BulkCopier | null) {
    const c = resolveCopier(copier);
    this.bulk = c.copy;
    this.bulkMinRead = c.minRead;
    this.bulkMinWrite = c.minWrite;
    this.copier = c.minRead === Infinity ? null : (copier as BulkCopier);
    const sorted = [...regions].sort((a, b) => a.start - b.start);
    let size = 0;
    for (let i = 0; i < sorted.length; i++) {
      const r = sorted[i] as BackedRegion;
      if (r.size === 0) throw new GuestMemoryError("InvalidArgument", `region at ${r.start} has size 0`, { addr: r.start });
      const prev = sorted[i - 1];
      if (prev !== undefined && prev.end > r.start) {
        throw new GuestMemoryError(
          "Overlap",
          `region [0x${r.start.toString(16)}, 0x${r.end.toString(16)}) overlaps [0x${prev.start.toString(16)}, 0x${prev.end.toString(16)})`,
          { addr: r.start, len: r.size },
        );
      }
      size += r.size;
    }
    this.regs = sorted;
    this.size = size;
  }

  /** The regions, sorted by start address (empty after `close`). */
  get regions(): readonly GuestMemoryRegion[] {
    return this.regs;
  }

  /** The bulk copier in use (see {@link BulkCopier}), or null where every copy uses `TypedArray.prototype.set`. */
  get bulkCopier(): BulkCopier | null {
    return this.copier;
  }

  /** Whether `close` has been called. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** The regions with their internal views, for subclasses. @internal */
  protected get backedRegions(): readonly BackedRegion[] {
    return this.regs;
  }

  /** Forgets the regions; every later access throws `"Closed"`. */
  protected dropRegions(): void {
    this.closed = true;
    this.regs = [];
    this.last = EMPTY_REGION;
  }

  private indexOf(addr: number): number {
    const regs = this.regs;
    let lo = 0;
    let hi = regs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = regs[mid] as BackedRegion;
      if (addr < r.start) hi = mid - 1;
      else if (addr >= r.end) lo = mid + 1;
      else return mid;
    }
    return -1;
  }

  /** The region containing `addr`, or undefined. Never throws. */
  findRegion(addr: GuestAddress): GuestMemoryRegion | undefined {
    if (!(addr >= 0 && addr < GUEST_ADDRESS_LIMIT && Number.isInteger(addr))) return undefined;
    const i = this.indexOf(addr);
    return i < 0 ? undefined : this.regs[i];
  }

  /** Whether `[addr, addr + len)` is fully backed. Never throws. */
  checkRange(addr: GuestAddress, len: number): boolean {
    if (!(addr >= 0 && addr < GUEST_ADDRESS_LIMIT && Number.isInteger(addr))) return false;
    if (!(len >= 0 && len <= GUEST_ADDRESS_LIMIT && Number.isInteger(len))) return false;
    let i = this.indexOf(addr);
    if (i < 0) return false;
    const endAddr = addr + len;
    let r = this.regs[i] as BackedRegion;
    while (endAddr > r.end) {
      const n = this.regs[++i];
      if (n === undefined || n.start !== r.end) return false;
      r = n;
    }
    return true;
  }

  /**
   * Checks the whole range and returns the index of the region holding `addr`.
   * @throws {@link GuestMemoryError} on any failure.
   */
  private resolve(addr: number, len: number): number {
    if (this.closed) throw new GuestMemoryError("Closed", "guest memory is closed", { addr, len });
    checkGuestAddress(addr);
    checkLength(len);
    const i = this.indexOf(addr);
    if (i < 0) throw new GuestMemoryError("Hole", `address 0x${addr.toString(16)} is not in guest memory`, { addr, len });
    const endAddr = addr + len;
    let j = i;
    let r = this.regs[i] as BackedRegion;
    while (endAddr > r.end) {
      const n = this.regs[++j];
      if (n === undefined || n.start !== r.end) {
        throw new GuestMemoryError(
          "OutOfBounds",
          `range [0x${addr.toString(16)}, +${len}) runs past backed memory at 0x${r.end.toString(16)}`,
          { addr, len },
        );
      }
      r = n;
    }
    this.last = this.regs[i] as BackedRegion;
    return i;
  }

  /** Like `resolve`, but the range must lie in one region. */
  private resolveOne(addr: number, len: number): BackedRegion {
    const r = this.regs[this.resolve(addr, len)] as BackedRegion;
    if (addr + len > r.end) {
      throw new GuestMemoryError(
        "OutOfBounds",
        `range [0x${addr.toString(16)}, +${len}) crosses the end of its region at 0x${r.end.toString(16)}`,
        { addr, len },
      );
    }
    return r;
  }

  /** Copies out of guest memory starting in region `i`; range already checked. */
  private copyOut(i: number, addr: number, dest: Uint8Array, len: number): void {
    let done = 0;
    while (done < len) {
      const r = this.regs[i++] as BackedRegion;
      const off = addr + done - r.start;
      const n = Math.min(len - done, r.size - off);
      if (n < this.bulkMinRead) dest.set(r.bytes.subarray(off, off + n), done);
      else {
        const st = this.bulk(dest, done, r.bytes, off, n);
        if (st !== 0) throw copyRefused(st, addr + done, n);
      }
      done += n;
    }
  }

  /** Copies into guest memory starting in region `i`; range already checked. */
  private copyIn(i: number, addr: number, src: Uint8Array, len: number): void {
    // A copier refuses anything but a Uint8Array: refuse it here, before the first piece.
    if (this.bulkMinWrite <= len && !(src instanceof Uint8Array)) throw copyRefused(-22, addr, len);
    let done = 0;
    while (done < len) {
      const r = this.regs[i++] as BackedRegion;
      const off = addr + done - r.start;
      const n = Math.min(len - done, r.size - off);
      if (n < this.bulkMinWrite) r.bytes.set(src.subarray(done, done + n), off);
      else {
        const st = this.bulk(r.bytes, off, src, done, n);
        if (st !== 0) throw copyRefused(st, addr + done, n);
      }
      if (r.dirty !== undefined) r.dirty.mark(off, n);
      done += n;
    }
  }

  /**
   * Second-level lookup (the last-hit region missed): binary search for a
   * region holding all of `[addr, addr + n)`. Returns null when there is none,
   * or when `addr` is malformed; the caller then takes the checked slow path.
   */
  private find(addr: number, n: number): BackedRegion | null {
    if (typeof addr !== "number") return null;
    const regs = this.regs;
    let lo = 0;
    let hi = regs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = regs[mid] as BackedRegion;
      if (addr < r.start) hi = mid - 1;
      else if (addr >= r.end) lo = mid + 1;
      else {
        if (Number.isInteger(addr) && addr + n <= r.end) {
          this.last = r;
          return r;
        }
        return null;
      }
    }
    return null;
  }

  /** Slow path of scalar reads: validate, and gather across regions if needed. */
  private readScalar(addr: number, n: number): DataView {
    const i = this.resolve(addr, n);
    this.copyOut(i, addr, this.scratch, n);
    return this.scratchDv;
  }

  /** Slow path of scalar writes: `scratch[0..n)` holds the bytes. */
  private writeScalar(addr: number, n: number): void {
    const i = this.resolve(addr, n);
    this.copyIn(i, addr, n === 8 ? this.scratch : this.scratch.subarray(0, n), n);
  }

  readU8(addr: GuestAddress): number {
    let r = this.last;
    let off = num(addr) - r.start;
    if (!(off >= 0 && off < r.size && Number.isInteger(addr))) {
      const f = this.find(addr, 1);
      if (f === null) return this.readScalar(addr, 1).getUint8(0);
      r = f;
      off = addr - r.start;
    }
    return r.bytes[off] as number;
  }

  readU16(addr: GuestAddress): number {
    let r = this.last;
    let off = num(addr) - r.start;
    if (!(off >= 0 && off <= r.size - 2 && Number.isInteger(addr))) {
      const f = this.find(addr, 2);
      if (f === null) return this.readScalar(addr, 2).getUint16(0, true);
      r = f;
      off = addr - r.start;
    }
    return r.dv.getUint16(off, true);
  }

  readU32(addr: GuestAddress): number {
    let r = this.last;
    let off = num(addr) - r.start;
    if (!(off >= 0 && off <= r.size - 4 && Number.isInteger(addr))) {
      const f = this.find(addr, 4);
      if (f === null) return this.readScalar(addr, 4).getUint32(0, true);
      r = f;
      off = addr - r.start;
    }
    return r.dv.getUint32(off, true);
  }

  readU64(addr: GuestAddress): bigint {
    let r = this.last;
    let off = num(addr) - r.start;
    if (!(off >= 0 && off <= r.size - 8 && Number.isInteger(addr))) {
      const f = this.find(addr, 8);
      if (f === null) return this.readScalar(addr, 8).getBigUint64(0, true);
      r = f;
      off = addr - r.start;
    }
    return r.dv.getBigUint64(off, true);
  }

  readU64Split(addr: GuestAddress): U64Halves {
    const r = this.last;
    const off = num(addr) - r.start;
    const f = off >= 0 && off <= r.size - 8 && Number.isInteger(addr) ? r : this.find(addr, 8);
    if (f !== null) {
      const o = addr - f.start;
      return { lo: f.dv.getUint32(o, true), hi: f.dv.getUint32(o + 4, true) };
    }
    const dv = this.readScalar(addr, 8);
    return { lo: dv.getUint32(0, true), hi: dv.getUint32(4, true) };
  }

  readU64AsAddress(addr: GuestAddress): GuestAddress {
    const r = this.last;
    const off = num(addr) - r.start;
    let lo: number;
    let hi: number;
    const f = off >= 0 && off <= r.size - 8 && Number.isInteger(addr) ? r : this.find(addr, 8);
    if (f !== null) {
      const o = addr - f.start;
      lo = f.dv.getUint32(o, true);
      hi = f.dv.getUint32(o + 4, true);
    } else {
      const dv = this.readScalar(addr, 8);
      lo = dv.getUint32(0, true);
      hi = dv.getUint32(4, true);
    }
    if (hi >= HI_LIMIT) {
      throw new GuestMemoryError("AddressTooLarge", `u64 at 0x${addr.toString(16)} is not below 2^52`, { addr, len: 8 });
    }
    return hi * TWO_32 + lo;
  }

  writeU8(addr: GuestAddress, value: number): void {
    if (typeof value !== "number" || (value & 0xff) !== value) throw badValue(value, "u8");
    const r = this.last;
    const f = num(addr) - r.start >= 0 && num(addr) - r.start < r.size && Number.isInteger(addr) ? r : this.find(addr, 1);
    if (f !== null) {
      const off = addr - f.start;
      f.bytes[off] = value;
      if (f.dirty !== undefined) f.dirty.mark(off, 1);
      return;
    }
    this.scratch[0] = value;
    this.writeScalar(addr, 1);
  }

  writeU16(addr: GuestAddress, value: number): void {
    if (typeof value !== "number" || (value & 0xffff) !== value) throw badValue(value, "u16");
    const r = this.last;
    const f = num(addr) - r.start >= 0 && num(addr) - r.start <= r.size - 2 && Number.isInteger(addr) ? r : this.find(addr, 2);
    if (f !== null) {
      const off = addr - f.start;
      f.dv.setUint16(off, value, true);
      if (f.dirty !== undefined) f.dirty.mark(off, 2);
      return;
    }
    this.scratchDv.setUint16(0, value, true);
    this.writeScalar(addr, 2);
  }

  writeU32(addr: GuestAddress, value: number): void {
    if (typeof value !== "number" || value >>> 0 !== value) throw badValue(value, "u32");
    const r = this.last;
    const f = num(addr) - r.start >= 0 && num(addr) - r.start <= r.size - 4 && Number.isInteger(addr) ? r : this.find(addr, 4);
    if (f !== null) {
      const off = addr - f.start;
      f.dv.setUint32(off, value, true);
      if (f.dirty !== undefined) f.dirty.mark(off, 4);
      return;
    }
    this.scratchDv.setUint32(0, value, true);
    this.writeScalar(addr, 4);
  }

  writeU64(addr: GuestAddress, value: bigint): void {
    if (typeof value !== "bigint" || value < 0n || value > U64_MAX) throw badValue(value, "u64");
    const r = this.last;
    const f = num(addr) - r.start >= 0 && num(addr) - r.start <= r.size - 8 && Number.isInteger(addr) ? r : this.find(addr, 8);
    if (f !== null) {
      const off = addr - f.start;
      f.dv.setBigUint64(off, value, true);
      if (f.dirty !== undefined) f.dirty.mark(off, 8);
      return;
    }
    this.scratchDv.setBigUint64(0, value, true);
    this.writeScalar(addr, 8);
  }

  read(addr: GuestAddress, dest: Uint8Array): void {
    const len = dest.length;
    const r = this.last;
    const off = num(addr) - r.start;
    // The last-hit region holds it all: the common case, kept small so that it inlines
    // into callers (a chain's readInto) with the native call right behind it.
    if (off >= 0 && off + len <= r.size && len > 0 && Number.isInteger(addr)) {
      if (len < this.bulkMinRead) dest.set(r.bytes.subarray(off, off + len));
      else {
        const st = this.bulk(dest, 0, r.bytes, off, len);
        if (st !== 0) throw copyRefused(st, addr, len);
      }
      return;
    }
    this.readSlow(addr, dest, len);
  }

  /** `read` when the last-hit region does not hold the range (or `len` is 0). */
  private readSlow(addr: GuestAddress, dest: Uint8Array, len: number): void {
    const f = this.find(addr, len);
    if (f !== null && len > 0) {
      const o = addr - f.start;
      if (len < this.bulkMinRead) dest.set(f.bytes.subarray(o, o + len));
      else {
        const st = this.bulk(dest, 0, f.bytes, o, len);
        if (st !== 0) throw copyRefused(st, addr, len);
      }
      return;
    }
    this.copyOut(this.resolve(addr, len), addr, dest, len);
  }

  readU32s(addr: GuestAddress, dest: Uint32Array): void {
    const n = dest.length;
    const len = 4 * n;
    let r = this.last;
    let off = num(addr) - r.start;
    // One check for the whole record against the last-hit region, then a second-level
    // lookup; only a record that spans regions (or a bad address) takes the slow path.
    if (!(off >= 0 && off <= r.size - len && len > 0 && Number.isInteger(addr))) {
      const f = len > 0 ? this.find(addr, len) : null;
      if (f === null) return this.readU32sSlow(addr, dest, len);
      r = f;
      off = addr - r.start;
    }
    const dv = r.dv;
    for (let i = 0; i < n; i++) dest[i] = dv.getUint32(off + 4 * i, true);
  }

  /** `readU32s` across contiguous regions, or failing with the checked path's error. */
  private readU32sSlow(addr: GuestAddress, dest: Uint32Array, len: number): void {
    const i = this.resolve(addr, len);
    if (len === 0) return;
    const bytes = new Uint8Array(len);
    this.copyOut(i, addr, bytes, len);
    const dv = new DataView(bytes.buffer);
    for (let k = 0; k < dest.length; k++) dest[k] = dv.getUint32(4 * k, true);
  }

  write(addr: GuestAddress, src: Uint8Array): void {
    const len = src.length;
    const r = this.last;
    const off = num(addr) - r.start;
    if (off >= 0 && off + len <= r.size && len > 0 && Number.isInteger(addr)) {
      if (len < this.bulkMinWrite) r.bytes.set(src, off);
      else {
        const st = this.bulk(r.bytes, off, src, 0, len);
        if (st !== 0) throw copyRefused(st, addr, len);
      }
      if (r.dirty !== undefined) r.dirty.mark(off, len);
      return;
    }
    this.writeSlow(addr, src, len);
  }

  /** `write` when the last-hit region does not hold the range (or `len` is 0). */
  private writeSlow(addr: GuestAddress, src: Uint8Array, len: number): void {
    const f = this.find(addr, len);
    if (f !== null && len > 0) {
      const o = addr - f.start;
      if (len < this.bulkMinWrite) f.bytes.set(src, o);
      else {
        const st = this.bulk(f.bytes, o, src, 0, len);
        if (st !== 0) throw copyRefused(st, addr, len);
      }
      if (f.dirty !== undefined) f.dirty.mark(o, len);
      return;
    }
    this.copyIn(this.resolve(addr, len), addr, src, len);
  }

  slice(addr: GuestAddress, len: number): Uint8Array {
    const r = this.last;
    const off = num(addr) - r.start;
    if (off >= 0 && off + len <= r.size && Number.isInteger(addr) && Number.isInteger(len) && len > 0) {
      return r.bytes.subarray(off, off + len);
    }
    const r2 = this.resolveOne(addr, len);
    return r2.bytes.subarray(addr - r2.start, addr - r2.start + len);
  }

  /** Validates an atomic access and returns its region. */
  private atomicRegion(addr: number, n: number): BackedRegion {
    const r = this.resolveOne(addr, n);
    if (addr % n !== 0 || (r.hostOffset + addr - r.start) % n !== 0) {
      throw new GuestMemoryError("Unaligned", `atomic ${n}-byte access at 0x${addr.toString(16)} is not aligned`, {
        addr,
        len: n,
      });
    }
    return r;
  }

  loadU16Acquire(addr: GuestAddress): number {
    let r = this.last;
    let off = num(addr) - r.start;
    if (!(off >= 0 && off <= r.size - 2 && Number.isInteger(addr) && ((addr | (r.hostOffset + off)) & 1) === 0)) {
      const f = this.find(addr, 2);
      r = f !== null && ((addr | (f.hostOffset + addr - f.start)) & 1) === 0 ? f : this.atomicRegion(addr, 2);
      off = addr - r.start;
    }
    return Atomics.load(r.u16, (r.hostOffset + off) / 2);
  }

  storeU16Release(addr: GuestAddress, value: number): void {
    if (typeof value !== "number" || (value & 0xffff) !== value) throw badValue(value, "u16");
    let r = this.last;
    let off = num(addr) - r.start;
    if (!(off >= 0 && off <= r.size - 2 && Number.isInteger(addr) && ((addr | (r.hostOffset + off)) & 1) === 0)) {
      const f = this.find(addr, 2);
      r = f !== null && ((addr | (f.hostOffset + addr - f.start)) & 1) === 0 ? f : this.atomicRegion(addr, 2);
      off = addr - r.start;
    }
    Atomics.store(r.u16, (r.hostOffset + off) / 2, value);
    if (r.dirty !== undefined) r.dirty.mark(off, 2);
  }

  loadU32Acquire(addr: GuestAddress): number {
    let r = this.last;
    let off = num(addr) - r.start;
    if (!(off >= 0 && off <= r.size - 4 && Number.isInteger(addr) && ((addr | (r.hostOffset + off)) & 3) === 0)) {
      const f = this.find(addr, 4);
      r = f !== null && ((addr | (f.hostOffset + addr - f.start)) & 3) === 0 ? f : this.atomicRegion(addr, 4);
      off = addr - r.start;
    }
    return Atomics.load(r.u32, (r.hostOffset + off) / 4);
  }

  storeU32Release(addr: GuestAddress, value: number): void {
    if (typeof value !== "number" || value >>> 0 !== value) throw badValue(value, "u32");
    let r = this.last;
    let off = num(addr) - r.start;
    if (!(off >= 0 && off <= r.size - 4 && Number.isInteger(addr) && ((addr | (r.hostOffset + off)) & 3) === 0)) {
      const f = this.find(addr, 4);
      r = f !== null && ((addr | (f.hostOffset + addr - f.start)) & 3) === 0 ? f : this.atomicRegion(addr, 4);
      off = addr - r.start;
    }
    Atomics.store(r.u32, (r.hostOffset + off) / 4, value);
    if (r.dirty !== undefined) r.dirty.mark(off, 4);
  }

  /**
   * Marks `[addr, addr + len)` dirty, for writes made through `slice` views or
   * by other agents (a native addon doing preadv into the mapping).
   * @throws {@link GuestMemoryError} if the range is not backed.
   */
  markDirty(addr: GuestAddress, len: number): void {
    // Fast path, as `write`'s: inside the last-hit region (a device marking what it wrote
    // through a view of it a moment ago). Checked as the slow path checks; nothing to mark
    // without a bitmap.
    const r = this.last;
    const off = num(addr) - r.start;
    if (off >= 0 && typeof len === "number" && off + len <= r.size && len > 0 && Number.isInteger(addr) && Number.isInteger(len)) {
      if (r.dirty !== undefined) r.dirty.mark(off, len);
      return;
    }
    this.markDirtySlow(addr, len);
  }

  /** `markDirty` outside the last-hit region (or a range to reject). */
  private markDirtySlow(addr: GuestAddress, len: number): void {
    let i = this.resolve(addr, len);
    let done = 0;
    while (done < len) {
      const r = this.regs[i++] as BackedRegion;
      const off = addr + done - r.start;
      const n = Math.min(len - done, r.size - off);
      if (r.dirty !== undefined) r.dirty.mark(off, n);
      done += n;
    }
  }

  /** Whether every region has a dirty bitmap. */
  get dirtyTracking(): boolean {
    return this.regs.length > 0 && this.regs.every((r) => r.dirty !== undefined);
  }

  /** Iterates over the guest addresses of dirty 4 KiB pages (page starts), in order. */
  *dirtyPages(): IterableIterator<GuestAddress> {
    for (const r of this.regs) {
      if (r.dirty === undefined) continue;
      for (const p of r.dirty.pages()) yield r.start + p * DIRTY_PAGE_SIZE;
    }
  }

  /** Clears every region's dirty bitmap. */
  clearDirty(): void {
    for (const r of this.regs) r.dirty?.clear();
  }
}

/**
 * `addr` as a number for the fast paths' arithmetic, NaN for anything else (a bigint
 * there threw a plain TypeError before the typed check; NaN falls through to the
 * checked slow path, which throws a `GuestMemoryError`).
 */
function num(addr: unknown): number {
  return typeof addr === "number" ? addr : NaN;
}

function badValue(value: unknown, type: string): GuestMemoryError {
  return new GuestMemoryError("InvalidArgument", `${String(value)} is not a valid ${type}`);
}
