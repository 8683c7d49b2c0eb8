import { constants } from "node:os";

/** Codes of checks made in TypeScript before any system call. */
export type KvmCheckCode =
  | "InvalidArgument"
  | "Closed"
  | "OutOfRange"
  | "Unaligned"
  | "TooLarge"
  | "NotRegistered"
  | "Unsupported"
  /** A KVM binary stats file (KVM_GET_STATS_FD) whose header, descriptors or size do not add up. */
  | "InvalidStats";

/**
 * errno names a failed KVM ioctl can report. Any other errno is `"EUNKNOWN"`, with the
 * number kept in {@link KvmError.errno}.
 */
export type KvmErrnoCode =
  | "EEXIST"
  | "EINVAL"
  | "EFAULT"
  | "ENOENT"
  | "ENOMEM"
  | "ENXIO"
  | "EBADF"
  | "EBUSY"
  | "E2BIG"
  | "EINTR"
  | "EAGAIN"
  | "EPERM"
  | "EACCES"
  | "ENOTTY"
  | "EOPNOTSUPP"
  | "ENOSPC"
  | "EIO"
  | "ENODEV"
  | "EHWPOISON"
  | "EMFILE"
  | "ENFILE"
  | "ENOEXEC"
  | "ESRCH"
  | "ENOSYS"
  | "ERANGE"
  | "EOVERFLOW"
  | "EUNKNOWN";

/** Every `code` a {@link KvmError} can carry. */
export type KvmErrorCode = KvmCheckCode | KvmErrnoCode;

const ERRNO_NAMES = new Map<number, string>();
for (const [name, num] of Object.entries(constants.errno)) {
  if (!ERRNO_NAMES.has(num)) ERRNO_NAMES.set(num, name);
}

const KNOWN_ERRNO_CODES: ReadonlySet<string> = new Set<KvmErrnoCode>([
  "EEXIST", "EINVAL", "EFAULT", "ENOENT", "ENOMEM", "ENXIO", "EBADF", "EBUSY", "E2BIG", "EINTR",
  "EAGAIN", "EPERM", "EACCES", "ENOTTY", "EOPNOTSUPP", "ENOSPC", "EIO", "ENODEV", "EHWPOISON", "EMFILE",
  "ENFILE", "ENOEXEC", "ESRCH", "ENOSYS", "ERANGE", "EOVERFLOW", "EUNKNOWN",
]);

/**
 * The errno name of a positive errno number (`"EINVAL"`) if it is one of
 * {@link KvmErrnoCode}, else `"EUNKNOWN"` (the union is closed: `ESRCH` and the like
 * are not cast into it).
 */
export function errnoName(errno: number): KvmErrnoCode {
  const name = ERRNO_NAMES.get(errno);
  if (errno === 133) return "EHWPOISON"; // not in os.constants.errno
  return name !== undefined && KNOWN_ERRNO_CODES.has(name) ? (name as KvmErrnoCode) : "EUNKNOWN";
}

/**
 * Re-types an error of `@ts-vmm/vmm-sys-util` (mmap of kvm_run, tgkill) as a
 * {@link KvmError} with its errno name and number; anything else is returned as is.
 * @internal
 */
export function fromSysError(e: unknown, what: string): unknown {
  if (e instanceof KvmError) return e;
  const errno = (e as { errno?: unknown } | null)?.errno;
  const isSys = e instanceof Error && e.name === "VmmSysError";
  if (!isSys) return e;
  if (typeof errno === "number" && errno > 0) {
    const name = errnoName(errno);
    return new KvmError(name, `${what} failed: ${name}`, { errno, ioctl: (e as { syscall?: string }).syscall ?? what, cause: e });
  }
  return new KvmError("InvalidArgument", `${what}: ${e.message}`, { cause: e });
}

/**
 * The one error class of `@ts-vmm/kvm-ioctls`.
 *
 * - A check made before any system call has a PascalCase `code`
 *   (`"InvalidArgument"`, `"Closed"`, `"OutOfRange"`, ...), and `errno`/`ioctl` unset.
 * - A failed ioctl has the errno name as `code` (`"EEXIST"`), the positive
 *   `errno`, the ioctl name in `ioctl` and `syscall`, and a message such as
 *   `"KVM_CREATE_VCPU failed: EEXIST"`.
 */
export class KvmError extends Error {
  override readonly name = "KvmError";
  /** Condition or errno name. */
  readonly code: KvmErrorCode;
  /** Positive errno of a failed ioctl. */
  readonly errno: number | undefined;
  /** Name of the failed ioctl (`"KVM_RUN"`), also in `syscall`. */
  readonly ioctl: string | undefined;
  /** Same as `ioctl`, matching Node's SystemError field. */
  readonly syscall: string | undefined;

  constructor(code: KvmErrorCode, message: string, opts: { errno?: number; ioctl?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.errno = opts.errno;
    this.ioctl = opts.ioctl;
    this.syscall = opts.ioctl;
  }

  /** A KvmError for ioctl `ioctl` that failed with positive `errno`. */
  static fromErrno(ioctl: string, errno: number): KvmError {
    const name = errnoName(errno);
    return new KvmError(name, `${ioctl} failed: ${name}`, { errno, ioctl });
  }
}

/** Throws `InvalidArgument` unless `cond`. @internal */
export function check(cond: boolean, message: string, code: KvmCheckCode = "InvalidArgument"): asserts cond {
  if (!cond) throw new KvmError(code, message);
}

/** Validates a non-negative integer below `limit` (exclusive) that fits a JS number exactly. @internal */
export function checkUint(value: unknown, what: string, limit = 2 ** 32): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
    throw new KvmError("InvalidArgument", `${what} must be a non-negative integer, got ${String(value)}`);
  }
  if (value >= limit) throw new KvmError("OutOfRange", `${what} must be below ${limit}, got ${value}`);
  return value;
}

/** Validates a bigint or safe integer in [0, 2^64) and returns it as a bigint. @internal */
export function checkU64(value: unknown, what: string): bigint {
  let v: bigint;
  if (typeof value === "bigint") v = value;
  else if (typeof value === "number" && Number.isSafeInteger(value)) v = BigInt(value);
  else throw new KvmError("InvalidArgument", `${what} must be a bigint or a safe integer, got ${typeof value}`);
  if (v < 0n || v >= 1n << 64n) throw new KvmError("OutOfRange", `${what} must fit in 64 bits unsigned`);
  return v;
}
