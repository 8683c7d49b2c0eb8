import { KvmError } from "./errors.js";
import { Ioctl } from "./generated/kvm-constants.js";
import { native } from "./native.js";

/** Closes the fd of an owned handle that was garbage-collected while still open. */
const dropped = new FinalizationRegistry<{ readonly fd: number; readonly n: { close(fd: number): number } }>(({ fd, n }) => {
  n.close(fd);
});

/** -EINTR from the addon. */
const NEG_EINTR = -4;
/** Attempts of one ioctl interrupted by signals before EINTR is reported (a signal storm, not a stray signal). */
const EINTR_ATTEMPTS = 1000;

/**
 * Runs `call` again while it returns -EINTR: a signal (a profiler's SIGPROF, the
 * vCPU kick signal, SIGCHLD) that arrives during a KVM ioctl makes the kernel
 * return EINTR before it did anything, and KVM_CREATE_VM in particular does
 * that (seen here under `node --cpu-prof`; QEMU loops on it too). KVM_RUN does
 * not come through here: its EINTR means "kicked" and goes to the caller.
 */
function retryEintr(call: () => number): number {
  let r = call();
  for (let i = 1; r === NEG_EINTR && i < EINTR_ATTEMPTS; i++) r = call();
  return r;
}

/** Name of a KVM ioctl in {@link Ioctl}. */
export type IoctlName = keyof typeof Ioctl;

/**
 * An owned or borrowed file descriptor with a closed flag, and the ioctl
 * helpers every fd class uses. A call on a closed handle throws `Closed`
 * before any system call, so a reused fd number is never hit.
 * @internal
 */
export class FdHandle {
  #fd: number;
  readonly owned: boolean;
  readonly what: string;

  constructor(fd: number, owned: boolean, what: string) {
    this.#fd = fd;
    this.owned = owned;
    this.what = what;
    // Backstop for owned fds whose object is dropped without close() (issue 14 item 7:
    // 50 dropped VM+vCPU pairs kept 100 fds open). The binding is captured now, so a
    // test's injected binding never closes a real fd number of the same value.
    if (owned) dropped.register(this, { fd, n: native() }, this);
  }

  get fd(): number {
    if (this.#fd < 0) throw new KvmError("Closed", `${this.what} is closed`);
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Closes the fd if owned (a borrowed handle only forgets it). Idempotent. */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    if (this.owned) {
      dropped.unregister(this);
      const r = native().close(fd);
      if (r < 0) throw KvmError.fromErrno("close", -r);
    }
  }

  val(name: IoctlName, arg = 0): number {
    const fd = this.fd;
    const r = retryEintr(() => native().ioctlVal(fd, Ioctl[name], arg));
    if (r < 0) throw KvmError.fromErrno(name, -r);
    return r;
  }

  buf(name: IoctlName, buf: Uint8Array, minBytes = 0): number {
    const fd = this.fd;
    const r = retryEintr(() => native().ioctlBuf(fd, Ioctl[name], buf, minBytes));
    if (r < 0) throw KvmError.fromErrno(name, -r);
    return r;
  }

  /** Like buf() but returns -errno instead of throwing for the listed errnos. */
  bufTry(name: IoctlName, buf: Uint8Array, minBytes = 0): number {
    const fd = this.fd;
    return retryEintr(() => native().ioctlBuf(fd, Ioctl[name], buf, minBytes));
  }

  ptr(name: IoctlName, buf: Uint8Array, ptrOffset: number, data: Uint8Array, dataMin: number): number {
    const fd = this.fd;
    const r = retryEintr(() => native().ioctlBufPtr(fd, Ioctl[name], buf, ptrOffset, data, dataMin));
    if (r < 0) throw KvmError.fromErrno(name, -r);
    return r;
  }
}

/** Accepts an fd number or an object with an `fd` (EventFd, a file handle). @internal */
export function fdOf(x: number | { readonly fd: number }, what: string): number {
  const fd = typeof x === "number" ? x : x !== null && typeof x === "object" ? x.fd : NaN;
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) {
    throw new KvmError("InvalidArgument", `${what} must be a file descriptor or an object with one`);
  }
  return fd;
}
