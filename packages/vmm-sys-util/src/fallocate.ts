import { check, invalid } from "./errors.js";
import { native } from "./native.js";
import { describe, fdArg, offsetArg } from "./validate.js";

/**
 * What {@link fallocate} does with the range:
 * - `"allocate"`: reserve blocks (mode 0; the file grows if the range ends past it);
 * - `"punchHole"`: deallocate the blocks (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE); reads return zeros;
 * - `"zeroRange"`: make the range read as zeros, keeping it allocated (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE).
 */
export type FallocateMode = "allocate" | "punchHole" | "zeroRange";

/**
 * Manipulates a file's allocated space with fallocate(2) (Node's fs has no
 * equivalent). Synchronous: on a local file system these are metadata
 * operations.
 *
 * @param fd - an open, writable descriptor of a regular file
 * @param offset - start of the range in bytes (non-negative safe integer)
 * @param len - length of the range in bytes (positive safe integer)
 * @param mode - see {@link FallocateMode}
 * @throws VmmSysError `InvalidArgument` for a bad fd, range or mode; an errno code
 *   (`EOPNOTSUPP` when the file system cannot do it, `EBADF`, `EFBIG`, `ENOSPC`, ...) if fallocate fails
 */
export function fallocate(fd: number, offset: number, len: number, mode: FallocateMode): void {
  const c = native().fdConstants;
  let bits: number;
  if (mode === "allocate") bits = 0;
  else if (mode === "punchHole") bits = c.FALLOC_FL_PUNCH_HOLE | c.FALLOC_FL_KEEP_SIZE;
  else if (mode === "zeroRange") bits = c.FALLOC_FL_ZERO_RANGE | c.FALLOC_FL_KEEP_SIZE;
  else throw invalid(`mode must be "allocate", "punchHole" or "zeroRange", got ${describe(mode)}`);
  const o = offsetArg("offset", offset);
  const l = offsetArg("len", len);
  if (l === 0) throw invalid("len must be positive");
  if (o + l > Number.MAX_SAFE_INTEGER) throw invalid("offset + len is above 2^53 - 1");
  check("fallocate", native().fallocate(fdArg(fd), bits, o, l), mode);
}
