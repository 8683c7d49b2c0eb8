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
  if (boolOpt("hugetlb", o.hugetlb, false)) flags |= c.MFD_HUGETLB;
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
