import { check, invalid } from "./errors.js";
import { native } from "./native.js";
import { fdArg, intArg } from "./validate.js";

/** Poll interest and results of {@link pollFd}. */
export interface PollEvents {
  /** POLLIN: data can be read. */
  readonly readable?: boolean;
  /** POLLOUT: data can be written. */
  readonly writable?: boolean;
}

/** What {@link pollFd} reports. */
export interface PollResult {
  /** POLLIN was reported. */
  readonly readable: boolean;
  /** POLLOUT was reported. */
  readonly writable: boolean;
  /** POLLERR was reported. */
  readonly error: boolean;
  /** POLLHUP was reported. */
  readonly hangup: boolean;
  /** Nothing was ready before the timeout. */
  readonly timedOut: boolean;
}

/**
 * Waits for one fd with poll(2), blocking the calling thread. Meant for worker threads (a vCPU
 * or I/O worker); on the main thread use {@link FdWatcher}, which does not block. A kick signal
 * (`installKickSignal`) interrupts the wait with `EINTR`.
 *
 * @param fd - the descriptor
 * @param events - what to wait for (default readable)
 * @param timeoutMs - milliseconds to wait; -1 waits forever (default -1)
 * @returns what is ready (all false with `timedOut` if the timeout expired)
 * @throws VmmSysError `InvalidArgument` for a bad fd, events or timeout; `EINTR` if a signal
 *   interrupted the wait (a closed fd is not an exception: poll reports it as `error`)
 */
export function pollFd(fd: number, events: PollEvents = { readable: true }, timeoutMs = -1): PollResult {
  fdArg(fd);
  intArg("timeoutMs", timeoutMs, -1, 0x7fff_ffff);
  if (typeof events !== "object" || events === null) throw invalid("events must be an object");
  const c = native().fdConstants;
  const mask = (events.readable ? c.POLLIN : 0) | (events.writable ? c.POLLOUT : 0);
  const r = check<number>("poll", native().poll(fd, mask, timeoutMs), `fd ${fd}`);
  return {
    readable: (r & c.POLLIN) !== 0,
    writable: (r & c.POLLOUT) !== 0,
    error: (r & (c.POLLERR | c.POLLNVAL)) !== 0,
    hangup: (r & c.POLLHUP) !== 0,
    timedOut: r === 0,
  };
}
