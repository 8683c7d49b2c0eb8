import { VmmSysError, check, closedError, invalid } from "./errors.js";
import { native } from "./native.js";
import { pollFd } from "./poll-fd.js";
import { boolOpt, describe, intArg, optionsArg } from "./validate.js";

/** Options of the {@link EventFd} constructor. */
export interface EventFdOptions {
  /** Initial counter value, 0..2^32-1 (eventfd(2) takes an unsigned int). Default 0. */
  readonly initval?: number;
  /**
   * EFD_NONBLOCK: `read()` on a zero counter throws `EAGAIN` instead of blocking the thread.
   * Default true, since a blocking read on the main thread would stall the event loop.
   */
  readonly nonBlocking?: boolean;
  /** EFD_SEMAPHORE: each read returns 1 and decrements the counter by 1. Default false. */
  readonly semaphore?: boolean;
}

/** Largest value a single eventfd write may add (the counter holds at most 2^64-2). */
const MAX_WRITE = 0xffff_ffff_ffff_fffen;

/**
 * An eventfd(2): a 64-bit counter in the kernel used for notifications, for example a KVM
 * ioeventfd (the guest wrote a doorbell) or irqfd (inject an interrupt). Always close-on-exec.
 * Watch it without blocking with {@link FdWatcher}; read it from a worker with blocking reads.
 */
export class EventFd {
  #fd: number | null;
  readonly #nonBlocking: boolean;

  /**
   * @param opts - see {@link EventFdOptions}
   * @throws VmmSysError `InvalidArgument` for a bad option; an errno code (`EMFILE`, ...) if
   *   eventfd fails
   */
  constructor(opts?: EventFdOptions) {
    const o = optionsArg("opts", opts);
    const initval = o.initval === undefined ? 0 : intArg("initval", o.initval, 0, 0xffff_ffff);
    const c = native().fdConstants;
    let flags = c.EFD_CLOEXEC;
    this.#nonBlocking = boolOpt("nonBlocking", o.nonBlocking, true);
    if (this.#nonBlocking) flags |= c.EFD_NONBLOCK;
    if (boolOpt("semaphore", o.semaphore, false)) flags |= c.EFD_SEMAPHORE;
    this.#fd = check<number>("eventfd", native().eventfd(initval, flags));
  }

  /**
   * The file descriptor, to register with KVM (KVM_IOEVENTFD, KVM_IRQFD) or {@link FdWatcher}.
   * The EventFd keeps ownership: do not close it yourself.
   * @throws VmmSysError `Closed` after {@link EventFd.close}
   */
  get fd(): number {
    return this.#live();
  }

  /** True once {@link EventFd.close} has been called. */
  get closed(): boolean {
    return this.#fd === null;
  }

  /**
   * Adds `value` to the counter (write(2) of 8 bytes).
   * @param value - 0..2^64-2 as a number (safe integer) or bigint; default 1
   * @throws VmmSysError `Closed`; `InvalidArgument` for a bad value; `EAGAIN` if the counter
   *   would overflow on a non-blocking EventFd (a blocking one waits for a read instead)
   */
  write(value: number | bigint = 1): void {
    const fd = this.#live();
    let v: bigint;
    if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) v = BigInt(value);
    else if (typeof value === "bigint" && value >= 0n && value <= MAX_WRITE) v = value;
    else throw invalid(`value must be an integer in [0, 2^64-2], got ${describe(value)}`);
    check("write", native().eventfdWrite(fd, v), "eventfd");
  }

  /**
   * Reads and resets the counter (or, in semaphore mode, takes 1 from it).
   * @returns the counter value (1 in semaphore mode)
   * @throws VmmSysError `Closed`; `EAGAIN` if non-blocking and the counter is 0; `EINTR` if a
   *   blocking read was interrupted by a signal (see `installKickSignal`)
   */
  read(): bigint {
    const fd = this.#live();
    return check<bigint>("read", native().eventfdRead(fd), "eventfd");
  }

  /**
   * Like {@link EventFd.read}, but returns null instead of waiting when the counter is 0. On a
   * blocking EventFd this polls first; if another reader drains the counter between the poll
   * and the read, the read blocks.
   * @returns the counter value, or null if it was 0
   * @throws VmmSysError `Closed`; an errno code if the read fails otherwise
   */
  tryRead(): bigint | null {
    const fd = this.#live();
    if (!this.#nonBlocking && !pollFd(fd, { readable: true }, 0).readable) return null;
    try {
      return this.read();
    } catch (err) {
      if (err instanceof VmmSysError && err.code === "EAGAIN") return null;
      throw err;
    }
  }

  /**
   * Closes the fd. Idempotent. Unregister it from KVM and stop any {@link FdWatcher} on it
   * first: a closed fd number is reused by the next open.
   * @throws VmmSysError an errno code if close(2) fails (the fd is released anyway)
   */
  close(): void {
    const fd = this.#fd;
    if (fd === null) return;
    this.#fd = null;
    check("close", native().close(fd), "eventfd");
  }

  #live(): number {
    if (this.#fd === null) throw closedError("EventFd");
    return this.#fd;
  }
}
