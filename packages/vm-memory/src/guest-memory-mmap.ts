import { MmapRegion } from "@ts-vmm/vmm-sys-util";
import { checkGuestAddress, checkLength, type GuestAddress } from "./address.js";
import { DirtyBitmap } from "./dirty-bitmap.js";
import { type DiscardableMemory, type MemoryBacking, discardAdvice, fdPageSize, kernelPageSize } from "./discard.js";
import { GuestMemoryError } from "./error.js";
import type { BulkCopier } from "./bulk-copy.js";
import { GuestMemoryBase } from "./guest-memory-base.js";
import { nativeBulkCopier } from "./native-copy.js";
import { BackedRegion } from "./region.js";
import { type GuestMemoryTransferable, regionsFromTransferable, regionsToTransferable } from "./transferable.js";

/** Guest page granularity of mmap memory: regions start and end on 4 KiB (KVM memslots need it). */
const PAGE = 4096;

/** A range of guest memory to map: where it goes and, for file-backed memory, what backs it. */
export interface MmapRangeSpec {
  /** Guest physical start, a multiple of 4096. */
  readonly start: GuestAddress;
  /** Size in bytes, a positive multiple of 4096. */
  readonly size: number;
  /**
   * Back the range with this file (a snapshot, a shared-memory file, a
   * guest_memfd) instead of fresh memory. The fd is not owned: the caller may
   * close it once the memory is built (the mapping keeps the file alive).
   */
  readonly file?: {
    /** An open descriptor, readable (and writable for a shared mapping). */
    readonly fd: number;
    /** Offset in the file, a multiple of the page size. Default 0. */
    readonly offset?: number;
    /**
     * MAP_SHARED (default true): guest writes reach the file. false: private
     * copy-on-write, the file is never changed (restore a snapshot and run).
     */
    readonly shared?: boolean;
    /** The fd is a guest_memfd (recorded in the region's `backing`; set by {@link GuestMemoryMmap.fromGuestMemfd}). */
    readonly guestMemfd?: boolean;
  };
}

/** Options of {@link GuestMemoryMmap.fromRanges}. */
export interface MmapMemoryOptions {
  /**
   * How ranges without `file` are backed: `"memfd"` (default; each region has
   * an fd, shareable with a vhost-user peer or re-mappable) or `"anonymous"`.
   */
  readonly backing?: "memfd" | "anonymous";
  /** Back fresh memory with pre-allocated huge pages (MAP_HUGETLB / MFD_HUGETLB). Fails if none are configured. */
  readonly hugetlb?: boolean;
  /**
   * With `hugetlb`: the huge page size in bytes (2 MiB, 1 GiB); default the system's
   * default size. Every region's size must be a multiple of it.
   */
  readonly hugePageSize?: number;
  /** madvise(MADV_HUGEPAGE) every mapping (transparent huge pages). */
  readonly madviseHugepage?: boolean;
  /**
   * With `backing: "anonymous"`: MAP_SHARED (default true) or MAP_PRIVATE. Private
   * anonymous memory is what THP's `enabled` setting governs (shared anonymous
   * memory is shmem, governed by `shmem_enabled`).
   */
  readonly shared?: boolean;
  /**
   * Prefault every mapping (file-backed ranges too) before returning
   * (vmm-sys-util's `populate`: MAP_POPULATE, or after the THP advice
   * MADV_POPULATE_READ/WRITE). Default false.
   */
  readonly populate?: boolean;
  /** Give every region a dirty bitmap. Default false. */
  readonly dirtyTracking?: boolean;
  /** memfd label, shown in /proc/self/fd. */
  readonly name?: string;
  /**
   * The copy for bulk reads and writes (see {@link BulkCopier}). Default: `nativeBulkCopier()`
   * (libc memmove for reads of `NATIVE_COPY_MIN_READ` and writes of `NATIVE_COPY_MIN_WRITE` bytes and up); `null` copies
   * everything with `TypedArray.prototype.set`.
   */
  readonly bulkCopier?: BulkCopier | null;
}

/**
 * {@link GuestMemory} over host mappings made by vmm-sys-util's `MmapRegion`:
 * each region is one mapping exposed as a SharedArrayBuffer, with its host
 * address (for KVM_SET_USER_MEMORY_REGION) and its backing fd.
 *
 * Lifetime: the mappings are unmapped only when the last SharedArrayBuffer
 * over them (in any thread) is garbage collected, so a view handed out can
 * never point at unmapped memory. `close()` closes the owned memfds and makes
 * every later access through this object throw `"Closed"`.
 */
export class GuestMemoryMmap extends GuestMemoryBase implements DiscardableMemory {
  readonly #owned: readonly MmapRegion[];
  /** The mapping behind each region this object owns (discards go through it). */
  readonly #mappings = new Map<BackedRegion, MmapRegion>();

  private constructor(regions: readonly BackedRegion[], owned: readonly MmapRegion[], copier: BulkCopier | null | undefined) {
    super(regions, copier === undefined ? nativeBulkCopier() : copier);
    this.#owned = owned;
    if (owned.length === regions.length) regions.forEach((r, i) => this.#mappings.set(r, owned[i] as MmapRegion));
  }

  /**
   * Maps fresh memory (memfd or anonymous) or files for each range.
   *
   * @example
   * const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 0x800_0000 }], { dirtyTracking: true });
   * const r = mem.regions[0]; // r.hostAddress for KVM_SET_USER_MEMORY_REGION
   *
   * A range larger than {@link MAX_REGION_SIZE} is backed by several
   * contiguous regions (one mapping each), so `regions` may be longer than
   * `ranges`.
   * @throws {@link GuestMemoryError} `"InvalidArgument"` for an unaligned or empty
   *   range or a bad option; `"Overlap"` for overlapping ranges; `"AddressTooLarge"`
   *   for a range ending above 2^52; `"Mmap"` if a mapping fails (`cause` is the
   *   VmmSysError, e.g. `ENOMEM` with `hugetlb` and no huge pages, `MappingPastEof`
   *   for a file too short). Nothing stays mapped after a failure.
   */
  static fromRanges(ranges: readonly MmapRangeSpec[], opts: MmapMemoryOptions = {}): GuestMemoryMmap {
    const backing = opts.backing ?? "memfd";
    if (backing !== "memfd" && backing !== "anonymous") {
      throw new GuestMemoryError("InvalidArgument", `backing must be "memfd" or "anonymous", got ${String(backing)}`);
    }
    for (const s of ranges) checkSpec(s);
    checkNoOverlap(ranges);
    const owned: MmapRegion[] = [];
    const regions: BackedRegion[] = [];
    try {
      for (const s of ranges.flatMap(splitRange)) {
        let m: MmapRegion;
        let fd: number | null;
        let fileOffset = 0;
        let kind: MemoryBacking["kind"];
        let shared = true;
        const huge = {
          ...(opts.madviseHugepage === undefined ? {} : { madviseHugepage: opts.madviseHugepage }),
          ...(opts.populate === undefined ? {} : { populate: opts.populate }),
        };
        const hugetlb = {
          ...(opts.hugetlb === undefined ? {} : { hugetlb: opts.hugetlb }),
          ...(opts.hugePageSize === undefined ? {} : { hugePageSize: opts.hugePageSize }),
        };
        try {
          if (s.file !== undefined) {
            fileOffset = s.file.offset ?? 0;
            shared = s.file.shared ?? true;
            m = MmapRegion.fromFd(s.file.fd, s.size, { offset: fileOffset, shared, ...huge });
            fd = s.file.fd;
            kind = s.file.guestMemfd === true ? "guest_memfd" : "file";
          } else if (backing === "memfd") {
            m = MmapRegion.memfd(s.size, { ...(opts.name === undefined ? {} : { name: opts.name }), ...hugetlb, ...huge });
            fd = m.fd;
            kind = "memfd";
          } else {
            m = MmapRegion.anonymous(s.size, { ...(opts.shared === undefined ? {} : { shared: opts.shared }), ...hugetlb, ...huge });
            fd = null;
            kind = "anonymous"; // MmapRegion.anonymous maps MAP_SHARED by default (shmem)
            shared = opts.shared ?? true;
          }
        } catch (e) {
          throw new GuestMemoryError(
            "Mmap",
            `mapping guest range [0x${s.start.toString(16)}, +0x${s.size.toString(16)}) failed: ${(e as Error).message}`,
            { addr: s.start, len: s.size, cause: e },
          );
        }
        owned.push(m);
        // A file may live on hugetlbfs: ask the kernel (a plain file by one statfs of its fd,
        // the rest from smaps). Fresh memory is 4 KiB unless hugetlb.
        const plainFile = s.file !== undefined && s.file.guestMemfd !== true;
        const pageSize = plainFile ? fdPageSize(s.file.fd) || kernelPageSize(m.address)
          : s.file !== undefined || opts.hugetlb === true || opts.hugePageSize !== undefined ? kernelPageSize(m.address) : PAGE;
        regions.push(
          new BackedRegion({
            start: s.start,
            size: s.size,
            buffer: m.buffer,
            byteOffset: 0,
            hostAddress: m.address,
            fd,
            fileOffset,
            ...(opts.dirtyTracking ? { dirty: new DirtyBitmap(s.size) } : {}),
            backing: { kind, shared, pageSize },
          }),
        );
      }
      return new GuestMemoryMmap(regions, owned, opts.bulkCopier);
    } catch (e) {
      for (const m of owned) m.close();
      throw e;
    }
  }

  /**
   * Maps a whole memory image file (a snapshot written by `writeToFd` of each
   * region, in order): range i is backed by the file from the sum of the sizes
   * before it. With `shared: false` the guest runs on a private copy-on-write
   * view and the file is never changed.
   *
   * @throws {@link GuestMemoryError} as {@link GuestMemoryMmap.fromRanges}.
   */
  static fromFile(
    fd: number,
    ranges: readonly { readonly start: GuestAddress; readonly size: number }[],
    opts: {
      readonly shared?: boolean;
      readonly dirtyTracking?: boolean;
      readonly populate?: boolean;
      readonly bulkCopier?: BulkCopier | null;
    } = {},
  ): GuestMemoryMmap {
    let offset = 0;
    const specs = ranges.map((r) => {
      const spec: MmapRangeSpec = { start: r.start, size: r.size, file: { fd, offset, shared: opts.shared ?? true } };
      offset += r.size;
      return spec;
    });
    return GuestMemoryMmap.fromRanges(specs, passOn(opts));
  }

  /**
   * Maps a guest_memfd (KVM_CREATE_GUEST_MEMFD with GUEST_MEMFD_FLAG_MMAP,
   * Linux 6.18+) shared, so the VMM can access the guest's memory through it.
   * This is `fromRanges` with every range backed by `fd` (shared), range i at
   * file offset `offsets[i]` (default: consecutive). The caller creates the fd
   * with kvm-ioctls; vm-memory does not depend on KVM.
   *
   * @throws {@link GuestMemoryError} as {@link GuestMemoryMmap.fromRanges} (`"Mmap"`
   *   with `ENODEV`/`EINVAL` as cause if the kernel does not offer mmap of the fd).
   */
  static fromGuestMemfd(
    fd: number,
    ranges: readonly { readonly start: GuestAddress; readonly size: number; readonly offset?: number }[],
    opts: { readonly dirtyTracking?: boolean; readonly populate?: boolean; readonly bulkCopier?: BulkCopier | null } = {},
  ): GuestMemoryMmap {
    let next = 0;
    const specs = ranges.map((r) => {
      const offset = r.offset ?? next;
      next = offset + r.size;
      return { start: r.start, size: r.size, file: { fd, offset, shared: true, guestMemfd: true } };
    });
    return GuestMemoryMmap.fromRanges(specs, passOn(opts));
  }

  /**
   * A structured-cloneable description to post to a worker; rebuild it there
   * with {@link GuestMemoryMmap.fromTransferable}. Both sides use the same
   * mappings and dirty bitmaps.
   * @throws {@link GuestMemoryError} `"Closed"` after `close`.
   */
  toTransferable(): GuestMemoryTransferable {
    if (this.isClosed) throw new GuestMemoryError("Closed", "guest memory is closed");
    return { kind: "mmap", regions: regionsToTransferable(this.backedRegions) };
  }

  /**
   * Rebuilds a memory over the mappings described by `t` (in a worker). The
   * result does not own the mappings: its `close` only stops access from this
   * object; the mappings live while any thread holds their buffers.
   * @param opts - `bulkCopier` as in {@link MmapMemoryOptions} (default: the native copy where the addon loads in this thread)
   * @throws {@link GuestMemoryError} `"InvalidArgument"` if `t` or the copier is malformed.
   */
  static fromTransferable(t: GuestMemoryTransferable, opts: { readonly bulkCopier?: BulkCopier | null } = {}): GuestMemoryMmap {
    return new GuestMemoryMmap(regionsFromTransferable(t, "mmap"), [], opts.bulkCopier);
  }

  /**
   * {@inheritDoc DiscardableMemory.discardGranularity}
   * @example
   * const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 64 << 20 }]);
   * mem.discardGranularity(); // 4096
   */
  discardGranularity(): number {
    let g = PAGE;
    for (const r of this.#discardable()) g = Math.max(g, r.backing.pageSize);
    return g;
  }

  /**
   * {@inheritDoc DiscardableMemory.discardRange}
   * @example
   * mem.write(0x10_0000, new Uint8Array(1 << 20).fill(7));
   * mem.discardRange(0x10_0000, 1 << 20); // the memfd's blocks are freed; reads give zeros
   */
  discardRange(addr: GuestAddress, len: number): void {
    const regions = this.#discardable();
    checkGuestAddress(addr);
    checkLength(len);
    const at = { addr, len };
    if (addr % PAGE !== 0 || len % PAGE !== 0) {
      throw new GuestMemoryError("Unaligned", `discard range [0x${addr.toString(16)}, +0x${len.toString(16)}) is not made of whole 4 KiB pages`, at);
    }
    // Cut the range into per-region pieces and check them all before the first syscall.
    const pieces: { r: DiscardRegion; offset: number; len: number }[] = [];
    let cur = addr;
    const end = addr + len;
    let i = regions.findIndex((r) => cur >= r.start && cur < r.end);
    if (i < 0) throw new GuestMemoryError("Hole", `discard address 0x${addr.toString(16)} is not in guest memory`, at);
    while (cur < end) {
      const r = regions[i];
      if (r === undefined || r.start !== cur && pieces.length > 0) {
        throw new GuestMemoryError("OutOfBounds", `discard range [0x${addr.toString(16)}, +0x${len.toString(16)}) runs past backed memory`, at);
      }
      const n = Math.min(end, r.end) - cur;
      const offset = cur - r.start;
      const ps = r.backing.pageSize;
      if (offset % ps !== 0 || n % ps !== 0) {
        throw new GuestMemoryError(
          "Unaligned",
          `discard range [0x${addr.toString(16)}, +0x${len.toString(16)}) covers part of a ${ps >> 10} KiB huge page of the region at 0x${r.start.toString(16)}: huge pages are discarded whole`,
          at,
        );
      }
      pieces.push({ r, offset, len: n });
      cur += n;
      i++;
    }
    let done = 0;
    for (const p of pieces) {
      try {
        (this.#mappings.get(p.r) as MmapRegion).madvise(p.offset, p.len, discardAdvice(p.r.backing));
      } catch (e) {
        throw new GuestMemoryError(
          "Discard",
          `discarding [0x${(p.r.start + p.offset).toString(16)}, +0x${p.len.toString(16)}) failed (${done} bytes before it were discarded): ${(e as Error).message}`,
          { addr: p.r.start + p.offset, len: p.len, cause: e },
        );
      }
      p.r.dirty?.mark(p.offset, p.len);
      done += p.len;
    }
  }

  /** The regions, each with a known backing and its own mapping; otherwise throws. */
  #discardable(): DiscardRegion[] {
    if (this.isClosed) throw new GuestMemoryError("Closed", "guest memory is closed");
    const out: DiscardRegion[] = [];
    for (const r of this.backedRegions) {
      if (!this.#mappings.has(r)) {
        throw new GuestMemoryError("DiscardUnsupported", "this guest memory does not own its mappings (it was rebuilt from a transferable): discard through the object that mapped them");
      }
      if (r.backing === undefined || !(r.backing.pageSize >= PAGE)) {
        throw new GuestMemoryError("DiscardUnsupported", `the page size backing the region at 0x${r.start.toString(16)} is unknown, so no discard can be sized for it`, { addr: r.start });
      }
      out.push(r as DiscardRegion);
    }
    return out;
  }

  /**
   * Closes the memfds this memory owns and makes later accesses throw
   * `"Closed"`. Idempotent. Views already handed out stay valid memory (the
   * mapping lives until its buffers are collected) but must not be used.
   * @throws {@link GuestMemoryError} `"Mmap"` if closing an owned memfd fails (all are closed anyway).
   */
  close(): void {
    if (this.isClosed) return;
    this.dropRegions();
    let first: unknown;
    for (const m of this.#owned) {
      try {
        m.close();
      } catch (e) {
        first ??= e;
      }
    }
    if (first !== undefined) throw new GuestMemoryError("Mmap", "closing a mapping failed", { cause: first });
  }
}

/** A region whose backing is known. */
type DiscardRegion = BackedRegion & { readonly backing: MemoryBacking };
/** The options fromFile and fromGuestMemfd hand on to fromRanges. */
function passOn(opts: {
  readonly dirtyTracking?: boolean;
  readonly populate?: boolean;
  readonly bulkCopier?: BulkCopier | null;
}): MmapMemoryOptions {
  return {
    ...(opts.bulkCopier === undefined ? {} : { bulkCopier: opts.bulkCopier }),
    ...(opts.dirtyTracking === undefined ? {} : { dirtyTracking: opts.dirtyTracking }),
    ...(opts.populate === undefined ? {} : { populate: opts.populate }),
  };
}

function checkSpec(s: MmapRangeSpec): void {
  const ok = (v: number): boolean => Number.isSafeInteger(v) && v >= 0 && v % PAGE === 0;
  if (!ok(s.start) || !ok(s.size) || s.size === 0) {
    throw new GuestMemoryError(
      "InvalidArgument",
      `range start ${s.start} and size ${s.size} must be multiples of ${PAGE} (size > 0)`,
      { addr: s.start, len: s.size },
    );
  }
  if (s.start + s.size > 2 ** 52) {
    throw new GuestMemoryError("AddressTooLarge", `range [${s.start}, +${s.size}) ends above 2^52`, { addr: s.start, len: s.size });
  }
}

/**
 * The largest range one mapping backs. V8 refuses typed arrays over 2^32
 * elements, so a larger range becomes several contiguous regions (and, in a
 * VMM, several KVM slots); `read`, `write` and `checkRange` span them.
 */
export const MAX_REGION_SIZE = 2 ** 31;

/** Cuts a range into pieces of at most MAX_REGION_SIZE, advancing the file offset with them. */
function splitRange(s: MmapRangeSpec): MmapRangeSpec[] {
  if (s.size <= MAX_REGION_SIZE) return [s];
  const out: MmapRangeSpec[] = [];
  for (let off = 0; off < s.size; off += MAX_REGION_SIZE) {
    const size = Math.min(MAX_REGION_SIZE, s.size - off);
    const file = s.file === undefined ? {} : { file: { ...s.file, offset: (s.file.offset ?? 0) + off } };
    out.push({ start: s.start + off, size, ...file });
  }
  return out;
}

function checkNoOverlap(ranges: readonly MmapRangeSpec[]): void {
  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  for (let i = 1; i < sorted.length; i++) {
    const p = sorted[i - 1] as MmapRangeSpec;
    const r = sorted[i] as MmapRangeSpec;
    if (p.start + p.size > r.start) {
      throw new GuestMemoryError("Overlap", `range at 0x${r.start.toString(16)} overlaps the one at 0x${p.start.toString(16)}`, {
        addr: r.start,
        len: r.size,
      });
    }
  }
}
