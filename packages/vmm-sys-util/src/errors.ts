import { constants } from "node:os";
import type { ErrnoName } from "./generated/errno.js";

/**
 * Codes for conditions detected before any system call is made.
 * - `InvalidArgument`: an argument has the wrong type or is out of range.
 * - `MappingPastEof`: a file mapping would extend past the end of the file (touching it would raise SIGBUS).
 * - `Closed`: the object was closed with `close()`.
 * - `Unsupported`: the request cannot be met on this machine or build (checked in advance).
 * - `OutOfBounds`: a range lies outside the buffer or view it names (also: a detached or shrunk buffer).
 */
export type VmmSysConditionCode = "InvalidArgument" | "MappingPastEof" | "Closed" | "Unsupported" | "OutOfBounds";

/** Every value {@link VmmSysError.code} can take: a pre-syscall condition or an errno name. */
export type VmmSysErrorCode = VmmSysConditionCode | ErrnoName;

const errnoNames = new Map<number, ErrnoName>();
for (const [name, value] of Object.entries(constants.errno)) {
  // EWOULDBLOCK aliases EAGAIN and EDEADLOCK aliases EDEADLK on Linux: keep the first
  // (os.constants.errno lists the canonical name first).
  if (!errnoNames.has(value)) errnoNames.set(value, name as ErrnoName);
}

/** Options of the {@link VmmSysError} constructor. */
export interface VmmSysErrorOptions {
  /** errno of the failed system call. */
  readonly errno?: number;
  /** Name of the failed system call (or ioctl). */
  readonly syscall?: string;
  /** The underlying error, if any. */
  readonly cause?: unknown;
}

/**
 * The one error class of `@ts-vmm/vmm-sys-util`.
 *
 * `code` is either an errno name (`"EINVAL"`, `"ENOMEM"`, `"EAGAIN"`, ...) when a system call
 * failed, in which case `errno` and `syscall` are set, or a PascalCase condition
 * (`"InvalidArgument"`, `"Closed"`, `"Unsupported"`) for a check made before any system call.
 */
export class VmmSysError extends Error {
  /** The errno name or the condition; see {@link VmmSysErrorCode}. */
  readonly code: VmmSysErrorCode;
  /** The errno of a failed system call; undefined for pre-syscall conditions. */
  readonly errno?: number;
  /** The failed system call (`"mmap"`, `"TUNSETIFF"`); undefined for pre-syscall conditions. */
  readonly syscall?: string;

  /**
   * @param code - the errno name or condition
   * @param message - a human-readable description
   * @param options - errno, syscall and cause
   */
  constructor(code: VmmSysErrorCode, message: string, options: VmmSysErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "VmmSysError";
    this.code = code;
    if (options.errno !== undefined) this.errno = options.errno;
    if (options.syscall !== undefined) this.syscall = options.syscall;
  }

  /**
   * Builds the error for a failed system call from its errno.
   * @param syscall - the system call or ioctl that failed
   * @param errno - the positive errno value
   * @param what - optional context, appended to the message
   * @returns the error (not thrown)
   */
  static fromErrno(syscall: string, errno: number, what?: string): VmmSysError {
    const name = errnoNames.get(errno);
    const code: VmmSysErrorCode = name ?? "EIO";
    const label = name ?? `errno ${errno}`;
    const message = `${syscall} failed: ${label}${what ? ` (${what})` : ""}`;
    return new VmmSysError(code, message, { errno, syscall });
  }
}

/**
 * Returns a native result, or throws the {@link VmmSysError} if it is a negative errno.
 * @internal
 */
export function check<T>(syscall: string, result: T | number, what?: string): T {
  if (typeof result === "number" && result < 0) throw VmmSysError.fromErrno(syscall, -result, what);
  return result as T;
}

/** @internal */
export function invalid(message: string): VmmSysError {
  return new VmmSysError("InvalidArgument", message);
}

/** @internal */
export function closedError(what: string): VmmSysError {
  return new VmmSysError("Closed", `${what} is closed`);
}
