import { fstatSync } from "node:fs";
import { VmmSysError, check, closedError, invalid } from "./errors.js";
import { closeFd, ftruncate, hugeSizeBits, memfdCreate } from "./memfd.js";
import { native } from "./native.js";
import { boolOpt, describe, fdArg, offsetArg, optionsArg, sizeArg } from "./validate.js";

/** Options of {@link MmapRegion.anonymous}. */
export interface AnonymousRegionOptions {
  /** MAP_SHARED (true, the default: visible to forked children and vhost peers) or MAP_PRIVATE. */
  readonly shared?: boolean;
  /** MAP_HUGETLB: back with pre-allocated huge pages (fails with `ENOMEM` if none are configured). */
  readonly hugetlb?: boolean;
  /** With `hugetlb`: the huge page size in bytes (MAP_HUGE_2MB, MAP_HUGE_1GB, ...); default the system's default size. */
  readonly hugePageSize?: number;
  /** madvise(MADV_HUGEPAGE) after mapping (transparent huge pages). */
  readonly madviseHugepage?: boolean;
  /** MAP_NORESERVE: do not reserve swap for the mapping. */
  readonly noReserve?: boolean;
  /**
   * Prefault every page before returning, as MAP_POPULATE does: read faults for a shared
   * mapping (memory is allocated, a file read into the page cache, nothing dirtied), write
   * faults for a private one (a private file mapping is copied into anonymous memory). With
   * `madviseHugepage` the advice must come first, so the mapping is advised and then populated
   * with MADV_POPULATE_READ / MADV_POPULATE_WRITE (Linux 5.14). Default false.
   */
  readonly populate?: boolean;
}

/** Options of {@link MmapRegion.memfd}. */
export interface MemfdRegionOptions {
  /** Label of the memfd in /proc/self/fd. Default `"ts-vmm-memory"`. */
  readonly name?: string;
  /** MFD_HUGETLB: size must be a multiple of the huge page size; fails if none are configured. */
  readonly hugetlb?: boolean;
  /** With `hugetlb`: the huge page size in bytes (MFD_HUGE_2MB, MFD_HUGE_1GB, ...); default the system's default size. */
  readonly hugePageSize?: number;
  /** madvise(MADV_HUGEPAGE) after mapping (needs shmem THP enabled to have an effect). */
  readonly madviseHugepage?: boolean;
  /**
   * Prefault every page before returning, as MAP_POPULATE does: read faults for a shared
   * mapping (memory is allocated, a file read into the page cache, nothing dirtied), write
   * faults for a private one (a private file mapping is copied into anonymous memory). With
   * `madviseHugepage` the advice must come first, so the mapping is advised and then populated
   * with MADV_POPULATE_READ / MADV_POPULATE_WRITE (Linux 5.14). Default false.
   */
  readonly populate?: boolean;
}

/** Options of {@link MmapRegion.fromFd}. */
export interface FdRegionOptions {
  /** Offset in the file; must be a multiple of the page size. Default 0. */
  readonly offset?: number;
  /**
   * MAP_SHARED (true, the default): writes reach the file and other mappings of it.
   * false: MAP_PRIVATE, copy-on-write; the file never changes.
   */
  readonly shared?: boolean;
  /**
   * Guarantee the file is never written, even if fd is only open for reading. The mapping is
   * then private copy-on-write (writes through the buffer stay in this process). It is not
   * mapped PROT_READ-only, because a write through the SharedArrayBuffer would crash the
   * process with SIGSEGV. Combining `readOnly: true` with `shared: true` is refused.
   */
  readonly readOnly?: boolean;
  /** madvise(MADV_HUGEPAGE) after mapping. */
  readonly madviseHugepage?: boolean;
  /**
   * Prefault every page before returning, as MAP_POPULATE does: read faults for a shared
   * mapping (memory is allocated, a file read into the page cache, nothing dirtied), write
   * faults for a private one (a private file mapping is copied into anonymous memory). With
   * `madviseHugepage` the advice must come first, so the mapping is advised and then populated
   * with MADV_POPULATE_READ / MADV_POPULATE_WRITE (Linux 5.14). Default false.
   */
  readonly populate?: boolean;
}

/**
 * Advice accepted by {@link MmapRegion.madvise}, named after MADV_* (`"populate-read"` is
 * MADV_POPULATE_READ, `"populate-write"` MADV_POPULATE_WRITE: they fail with `EFAULT` where a
 * touch would raise SIGBUS, and `EINVAL` before Linux 5.14).
 */
export type MadviseAdvice = "dontneed" | "remove" | "hugepage" | "nohugepage" | "willneed" | "populate-read" | "populate-write";

const constructToken = Symbol("MmapRegion");

/**
 * A memory mapping exposed as one SharedArrayBuffer (zero copies).
 *
 * Lifetime: the mapping belongs to the SharedArrayBuffer's backing store. It is unmapped only
 * when the last SharedArrayBuffer sharing it, in any thread it was posted to, has been garbage
 * collected. {@link MmapRegion.close} does not unmap: it marks the region closed (its methods
 * then throw `Closed`), closes the memfd the region owns, and drops the region's own reference
 * to the buffer. So a reachable view never points at unmapped memory.
 *
 * Safety: views over {@link MmapRegion.buffer} alias memory that other threads, other
 * processes (MAP_SHARED) or a KVM guest may change at any time. Use Atomics for values shared
 * across threads, and treat everything a guest wrote as hostile.
 */
export class MmapRegion {
  /** Length of the mapping in bytes. Still readable after close. */
  readonly size: number;
  #buffer: SharedArrayBuffer | null;
  #address: bigint;
  #fd: number | null;

  /** @internal Use the static factories. */
  constructor(token: symbol, buffer: SharedArrayBuffer, address: bigint, fd: number | null) {
    if (token !== constructToken) throw invalid("use MmapRegion.anonymous, MmapRegion.memfd or MmapRegion.fromFd");
    this.size = buffer.byteLength;
    this.#buffer = buffer;
    this.#address = address;
    this.#fd = fd;
  }

  /**
   * Maps anonymous memory (zero-filled).
   * @param size - length in bytes, a positive safe integer
   * @param opts - see {@link AnonymousRegionOptions}
   * @returns the region
   * @throws VmmSysError `InvalidArgument` for a bad size or option; `ENOMEM` (or another errno)
   *   if mmap or madvise fails, for example with `hugetlb` when no huge pages are configured
   */
  static anonymous(size: number, opts?: AnonymousRegionOptions): MmapRegion {
    sizeArg("size", size);
    const o = optionsArg("opts", opts);
    const c = native().mmapConstants;
    const shared = boolOpt("shared", o.shared, true);
    let flags = c.MAP_ANONYMOUS | (shared ? c.MAP_SHARED : c.MAP_PRIVATE);
    const hugetlb = boolOpt("hugetlb", o.hugetlb, false);
    if (hugetlb) flags |= c.MAP_HUGETLB;
    flags += hugeSizeBits("hugePageSize", o.hugePageSize, hugetlb, c.MAP_HUGE_SHIFT);
    if (boolOpt("noReserve", o.noReserve, false)) flags |= c.MAP_NORESERVE;
    const hugepage = boolOpt("madviseHugepage", o.madviseHugepage, false);
    const populate = boolOpt("populate", o.populate, false);
    if (populate && !hugepage) flags |= c.MAP_POPULATE;
    const region = map(-1, size, c.PROT_READ | c.PROT_WRITE, flags, 0, false, "anonymous");
    return hugepage ? adviseOrClose(region, populate, shared) : region;
  }

  /**
   * Creates a memfd of `size` bytes and maps it MAP_SHARED. The region owns the memfd: it is
   * available as {@link MmapRegion.fd} (to pass to a vhost-user peer, or to map again) and is
   * closed by {@link MmapRegion.close}, or when the mapping is collected if close is never called.
   * The memfd is sealed against shrinking (`F_SEAL_SHRINK`): a shrunk file would make touching
   * the mapping raise SIGBUS. It can still grow.
   * @param size - length in bytes, a positive safe integer
   * @param opts - see {@link MemfdRegionOptions}
   * @returns the region
   * @throws VmmSysError `InvalidArgument` for a bad size or option; an errno code if
   *   memfd_create, ftruncate, mmap or madvise fails (`ENOMEM` or `EINVAL` for `hugetlb`
   *   without configured huge pages)
   */
  static memfd(size: number, opts?: MemfdRegionOptions): MmapRegion {
    sizeArg("size", size);
    const o = optionsArg("opts", opts);
    const name = o.name ?? "ts-vmm-memory";
    const hugetlb = boolOpt("hugetlb", o.hugetlb, false);
    const hugepage = boolOpt("madviseHugepage", o.madviseHugepage, false);
    const populate = boolOpt("populate", o.populate, false);
    const fd = memfdCreate(name, { cloexec: true, hugetlb, allowSealing: true, ...(o.hugePageSize === undefined ? {} : { hugePageSize: o.hugePageSize }) });
    let region: MmapRegion;
    try {
      ftruncate(fd, size);
      // Nobody holding the fd (this process, a vhost-user peer) may shrink the file under the
      // mapping: touching the lost pages would raise SIGBUS and kill the process.
      check("fcntl(F_ADD_SEALS)", native().addSeals(fd, native().fdConstants.F_SEAL_SHRINK), `memfd ${name}`);
      const c = native().mmapConstants;
      const flags = c.MAP_SHARED | (populate && !hugepage ? c.MAP_POPULATE : 0);
      region = map(fd, size, c.PROT_READ | c.PROT_WRITE, flags, 0, true, `memfd ${name}`);
    } catch (err) {
      closeFd(fd);
      throw err;
    }
    return hugepage ? adviseOrClose(region, populate, true) : region;
  }

  /**
   * Maps `size` bytes of an open file or device from `offset`: a regular file, a memfd, or a
   * device fd such as a KVM vCPU fd (its kvm_run page). The region does not take ownership of
   * `fd`: the caller may close it at once, the mapping keeps the file alive.
   *
   * For a regular file the mapping must lie within the file (accessing a mapping past EOF raises
   * SIGBUS). Safety: if another party truncates the file later, touching the truncated part
   * still raises SIGBUS and kills the process; map only files this process controls.
   *
   * @param fd - an open descriptor, readable (and writable for a writable shared mapping)
   * @param size - length in bytes, a positive safe integer
   * @param opts - see {@link FdRegionOptions}
   * @returns the region
   * @throws VmmSysError `InvalidArgument` for a bad fd, size, unaligned offset or conflicting
   *   options; `MappingPastEof` if a regular file is shorter than offset + size; an errno code if
   *   mmap fails (`EACCES` for a shared writable mapping of a read-only fd, `ENODEV`, ...)
   */
  static fromFd(fd: number, size: number, opts?: FdRegionOptions): MmapRegion {
    fdArg(fd);
    sizeArg("size", size);
    const o = optionsArg("opts", opts);
    const offset = offsetArg("offset", o.offset ?? 0);
    if (offset % pageSize() !== 0) throw invalid(`offset must be a multiple of the page size (${pageSize()}), got ${offset}`);
    if (offset + size > Number.MAX_SAFE_INTEGER) throw invalid("offset + size exceeds 2^53-1");
    const readOnly = boolOpt("readOnly", o.readOnly, false);
    if (readOnly && o.shared === true) {
      throw invalid("readOnly cannot be combined with shared: true (a write would raise SIGSEGV)");
    }
    const shared = boolOpt("shared", o.shared, !readOnly);
    const hugepage = boolOpt("madviseHugepage", o.madviseHugepage, false);
    const populate = boolOpt("populate", o.populate, false);
    let st;
    try {
      st = fstatSync(fd);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw VmmSysError.fromErrno("fstat", typeof e.errno === "number" ? -e.errno : 9, `fd ${fd}`);
    }
    if (st.isFile() && offset + size > st.size) {
      throw new VmmSysError("MappingPastEof", `mapping [${offset}, ${offset + size}) extends past the end of the file (${st.size} bytes)`);
    }
    const c = native().mmapConstants;
    const flags = (shared ? c.MAP_SHARED : c.MAP_PRIVATE) | (populate && !hugepage ? c.MAP_POPULATE : 0);
    const region = map(fd, size, c.PROT_READ | c.PROT_WRITE, flags, offset, false, `fd ${fd}`);
    return hugepage ? adviseOrClose(region, populate, shared) : region;
  }

  /**
   * Host virtual address of the mapping's first byte, for KVM_SET_USER_MEMORY_REGION.
   * @throws VmmSysError `Closed` after {@link MmapRegion.close}
   */
  get address(): bigint {
    this.#live();
    return this.#address;
  }

  /**
   * The memfd this region owns (see {@link MmapRegion.memfd}), or null for anonymous and
   * {@link MmapRegion.fromFd} regions.
   * @throws VmmSysError `Closed` after {@link MmapRegion.close}
   */
  get fd(): number | null {
    this.#live();
    return this.#fd;
  }

  /**
   * The whole mapping as a SharedArrayBuffer (zero copies). It can be posted to worker threads;
   * the mapping stays valid while any thread holds it, even after {@link MmapRegion.close}.
   *
   * Safety: the memory is shared with other threads, possibly other processes and a guest; see
   * the class notes.
   * @throws VmmSysError `Closed` after {@link MmapRegion.close}
   */
  get buffer(): SharedArrayBuffer {
    return this.#live();
  }

  /** True once {@link MmapRegion.close} has been called. */
  get closed(): boolean {
    return this.#buffer === null;
  }

  /**
   * Gives advice about a range with madvise(2). Note `"dontneed"` on a private or anonymous
   * mapping and `"remove"` on a shared one discard the contents (they read back as zeros).
   * @param offset - start of the range, a multiple of the page size
   * @param length - length of the range in bytes (> 0); offset + length must not exceed size
   * @param advice - see {@link MadviseAdvice}
   * @throws VmmSysError `Closed`; `InvalidArgument` for an unaligned or out-of-range range or
   *   unknown advice; an errno code (`EINVAL` where the kernel does not support the advice)
   */
  madvise(offset: number, length: number, advice: MadviseAdvice): void {
    const buffer = this.#live();
    this.#range(offset, length);
    const c = native().mmapConstants;
    const codes: Record<MadviseAdvice, number> = {
      dontneed: c.MADV_DONTNEED,
      remove: c.MADV_REMOVE,
      hugepage: c.MADV_HUGEPAGE,
      nohugepage: c.MADV_NOHUGEPAGE,
      willneed: c.MADV_WILLNEED,
      "populate-read": c.MADV_POPULATE_READ,
      "populate-write": c.MADV_POPULATE_WRITE,
    };
    const code = typeof advice === "string" && Object.hasOwn(codes, advice) ? codes[advice] : undefined;
    if (code === undefined) throw invalid(`advice must be one of ${Object.keys(codes).join(", ")}, got ${describe(advice)}`);
    check("madvise", native().madvise(buffer, offset, length, code), advice);
  }

  /**
   * Flushes a range of a shared file mapping to the file with msync(MS_SYNC).
   * @param offset - start of the range, a multiple of the page size (default 0)
   * @param length - length of the range (default: to the end of the mapping)
   * @throws VmmSysError `Closed`; `InvalidArgument` for an unaligned or out-of-range range;
   *   an errno code if msync fails
   */
  msync(offset = 0, length?: number): void {
    const buffer = this.#live();
    const len = length ?? (typeof offset === "number" ? this.size - offset : 0);
    this.#range(offset, len);
    check("msync", native().msync(buffer, offset, len, native().mmapConstants.MS_SYNC));
  }

  /**
   * Marks the region closed and closes the memfd it owns. Idempotent. The mapping itself is
   * unmapped only when no SharedArrayBuffer over it remains reachable in any thread.
   * @throws VmmSysError an errno code if closing the owned memfd fails (it is closed anyway)
   */
  close(): void {
    const buffer = this.#buffer;
    if (buffer === null) return;
    this.#buffer = null;
    if (this.#fd !== null) {
      this.#fd = null;
      const fd = native().disownFd(buffer);
      if (fd >= 0) closeFd(fd);
    }
  }

  #live(): SharedArrayBuffer {
    if (this.#buffer === null) throw closedError("MmapRegion");
    return this.#buffer;
  }

  #range(offset: unknown, length: unknown): void {
    const off = offsetArg("offset", offset);
    const len = sizeArg("length", length);
    if (off % pageSize() !== 0) throw invalid(`offset must be a multiple of the page size (${pageSize()}), got ${off}`);
    if (off + len > this.size) throw invalid(`range [${off}, ${off + len}) is outside the region (${this.size} bytes)`);
  }
}

function map(fd: number, size: number, prot: number, flags: number, offset: number, ownFd: boolean, what: string): MmapRegion {
  const [buffer, address] = check<[SharedArrayBuffer, bigint]>("mmap", native().mmap(fd, size, prot, flags, offset, ownFd), what);
  return new MmapRegion(constructToken, buffer, address, ownFd ? fd : null);
}

/** MADV_HUGEPAGE, then (with populate) the faults MAP_POPULATE would have made, after the advice. */
function adviseOrClose(region: MmapRegion, populate: boolean, shared: boolean): MmapRegion {
  try {
    region.madvise(0, region.size, "hugepage");
    if (populate) region.madvise(0, region.size, shared ? "populate-read" : "populate-write");
  } catch (err) {
    region.close();
    throw err;
  }
  return region;
}

let cachedPageSize: number | undefined;

/**
 * The system page size (sysconf(_SC_PAGESIZE)), usually 4096.
 * @returns the page size in bytes
 */
export function pageSize(): number {
  cachedPageSize ??= native().pageSize();
  return cachedPageSize;
}

/**
 * How many mappings made by this addon are still mapped, process-wide (all threads). A mapping
 * leaves the count when its last SharedArrayBuffer is garbage collected. Meant for tests and
 * leak checks.
 * @returns the number of live mappings
 */
export function liveMappingCount(): number {
  return native().liveMappingCount();
}
