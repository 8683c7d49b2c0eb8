import { check, invalid } from "./errors.js";
import { native } from "./native.js";
import { boolOpt, fdArg, describe, offsetArg, optionsArg } from "./validate.js";

/** Options of {@link memfdCreate}. */
export interface MemfdOptions {
  /** Set close-on-exec (MFD_CLOEXEC). Default true. */
  readonly cloexec?: boolean;
  /** Allow seals with fcntl(F_ADD_SEALS) (MFD_ALLOW_SEALING). Default false. */
  readonly allowSealing?: boolean;
  /** Back the file with hugetlbfs pages (MFD_HUGETLB); sizes must then be huge-page multiples. Default false. */
  readonly hugetlb?: boolean;
  /**
   * With `hugetlb`: the huge page size in bytes, a power of two (2 MiB = `2 << 20`, 1 GiB =
   * `1 << 30`), encoded as MFD_HUGE_2MB, MFD_HUGE_1GB, ... Default: the system's default huge
   * page size. The kernel refuses (`EINVAL`) a size it has no pool for.
   */
  readonly hugePageSize?: number;
}

/** @internal The MFD_HUGE_* / MAP_HUGE_* bits of a huge page size (they share the encoding). */
export function hugeSizeBits(name: string, size: unknown, hugetlb: boolean, shift: number): number {
  if (size === undefined) return 0;
  if (!hugetlb) throw invalid(`${name} needs hugetlb: true`);
  const log2 = typeof size === "number" && Number.isSafeInteger(size) && size > 0 ? Math.log2(size) : NaN;
  // No huge page is smaller than 64 KiB; above 2 GiB the encoding leaves mmap's int flags.
  if (!Number.isInteger(log2) || log2 < 16 || log2 > 31) {
    throw invalid(`${name} must be a power of two from 64 KiB to 2 GiB (2 MiB = 2097152, 1 GiB = 1073741824), got ${describe(size)}`);
  }
  return log2 * 2 ** shift;
}

/**
 * Creates an anonymous memory-backed file with memfd_create(2). The caller owns the returned
 * fd and closes it with {@link closeFd}.
 *
 * @param name - a label shown in /proc/self/fd (at most 249 bytes, no NUL)
 * @param opts - flags; see {@link MemfdOptions}
 * @returns the new file descriptor
 * @throws VmmSysError `InvalidArgument` for a bad name or option; an errno code (`EINVAL`,
 *   `EMFILE`, ...) if memfd_create fails
 */
export function memfdCreate(name: string, opts?: MemfdOptions): number {
  if (typeof name !== "string") throw invalid(`name must be a string, got ${describe(name)}`);
  if (name.includes("\0")) throw invalid("name must not contain NUL");
  // memfd_create(2): the name is at most 249 bytes (NAME_MAX minus the "memfd:" prefix).
  if (Buffer.byteLength(name) > 249) throw invalid("name must be at most 249 bytes");
  const o = optionsArg("opts", opts);
  const c = native().fdConstants;
  let flags = 0;
  if (boolOpt("cloexec", o.cloexec, true)) flags |= c.MFD_CLOEXEC;
  if (boolOpt("allowSealing", o.allowSealing, false)) flags |= c.MFD_ALLOW_SEALING;
  const hugetlb = boolOpt("hugetlb", o.hugetlb, false);
  if (hugetlb) flags |= c.MFD_HUGETLB;
  flags += hugeSizeBits("hugePageSize", o.hugePageSize, hugetlb, c.MFD_HUGE_SHIFT);
  return check<number>("memfd_create", native().memfdCreate(name, flags), name);
}

/**
 * Closes a file descriptor with close(2).
 * @param fd - the descriptor
 * @throws VmmSysError `InvalidArgument` if fd is not a non-negative integer; `EBADF` if it is
 *   not open
 */
export function closeFd(fd: number): void {
  check("close", native().close(fdArg(fd)));
}

/**
 * Sets a file's size with ftruncate(2).
 * @param fd - an open, writable descriptor
 * @param size - the new size in bytes (a non-negative safe integer)
 * @throws VmmSysError `InvalidArgument` for a bad fd or size; an errno code (`EBADF`,
 *   `EINVAL`, `EFBIG`, ...) if ftruncate fails
 */
export function ftruncate(fd: number, size: number): void {
  check("ftruncate", native().ftruncate(fdArg(fd), offsetArg("size", size)));
}
