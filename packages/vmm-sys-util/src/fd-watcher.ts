import { constants } from "node:os";
import { VmmSysError, check, closedError, invalid } from "./errors.js";
import { type NativePollHandle, native } from "./native.js";
import { boolOpt, fdArg, optionsArg } from "./validate.js";

/** What an {@link FdWatcher} watches for. */
export interface WatchEvents {
  /** Wake when the fd is readable (an eventfd with a non-zero counter, a tap with a frame). */
  readonly readable?: boolean;
  /** Wake when the fd is writable. */
  readonly writable?: boolean;
}

/** What an {@link FdWatcher} callback receives. */
export interface WatchEvent {
  /** The fd is readable. */
  readonly readable: boolean;
  /** The fd is writable. */
  readonly writable: boolean;
  /** Set if libuv reported an error for the fd; the watcher is then closed. */
  readonly error?: VmmSysError;
}

/** Callback of {@link FdWatcher.watch}. */
export type WatchCallback = (ev: WatchEvent) => void;

const constructToken = Symbol("FdWatcher");

// fd numbers with an open watcher on this thread's loop. The addon watches a duplicate of
// the fd (so closing the caller's fd cannot break libuv), which libuv can no longer see as
// watched twice; this keeps the one-watcher-per-fd rule (EEXIST) that libuv enforced.
const watched = new Set<number>();

/**
 * Readiness of a file descriptor on the calling thread's libuv loop, without polling: one
 * uv_poll_t (epoll) per fd. This is how the main thread follows many ioeventfds, tap fds and
 * eventfds at once.
 *
 * The watch is level-triggered: the callback runs on every loop iteration while the fd stays
 * ready, so it must consume the readiness (read the eventfd, drain the tap).
 *
 * An active watcher keeps itself alive (it is not garbage collected while watching) and, unless
 * {@link FdWatcher.unref} is called, keeps the event loop alive. The watcher watches a duplicate
 * of `fd` it owns, so it keeps following the same file even if `fd` is closed (and its number
 * reused) first; close the watcher to release that file. Only one watcher per fd per thread
 * (a second one is refused with `EEXIST`). Regular files cannot be watched (epoll refuses them with `EPERM`).
 */
export class FdWatcher {
  /** The watched file descriptor (not owned: closing the watcher does not close it). */
  readonly fd: number;
  #native: NativePollHandle | null;

  /** @internal Use {@link FdWatcher.watch}. */
  constructor(token: symbol, fd: number, handle: NativePollHandle) {
    if (token !== constructToken) throw invalid("use FdWatcher.watch");
    this.fd = fd;
    this.#native = handle;
  }

  /**
   * Starts watching `fd` and calls `cb` on the calling thread whenever it is ready.
   * An exception thrown by `cb` is reported like any uncaught exception (process
   * 'uncaughtException').
   *
   * @param fd - the descriptor (an eventfd, socket, pipe, tap or other pollable fd)
   * @param events - what to watch; at least one of readable/writable must be true
   * @param cb - called with what is ready, or with `error` (after which the watcher is closed)
   * @returns the active watcher
   * @throws VmmSysError `InvalidArgument` for a bad fd, events or callback; `EEXIST` if this
   *   thread already watches fd; `EPERM` for a regular file; `EBADF` for a closed fd
   */
  static watch(fd: number, events: WatchEvents, cb: WatchCallback): FdWatcher {
    fdArg(fd);
    const e = optionsArg("events", events);
    if (typeof cb !== "function") throw invalid("cb must be a function");
    const uv = native().uvConstants;
    const mask = (boolOpt("readable", e.readable, false) ? uv.UV_READABLE : 0) | (boolOpt("writable", e.writable, false) ? uv.UV_WRITABLE : 0);
    if (mask === 0) throw invalid("events must set readable or writable");
    if (watched.has(fd)) throw VmmSysError.fromErrno("uv_poll_init", constants.errno.EEXIST, `fd ${fd}`);
    let watcher: FdWatcher | undefined;
    const onPoll = (status: number, bits: number): void => {
      if (status < 0) {
        const error = VmmSysError.fromErrno("uv_poll", -status, `fd ${fd}`);
        watcher?.close();
        cb({ readable: false, writable: false, error });
        return;
      }
      cb({ readable: (bits & uv.UV_READABLE) !== 0, writable: (bits & uv.UV_WRITABLE) !== 0 });
    };
    const handle = check<NativePollHandle>("uv_poll_init", native().pollCreate(fd, onPoll), `fd ${fd}`);
    const started = handle.start(mask);
    if (started < 0) {
      handle.close();
      throw VmmSysError.fromErrno("uv_poll_start", -started, `fd ${fd}`);
    }
    watcher = new FdWatcher(constructToken, fd, handle);
    watched.add(fd);
    return watcher;
  }

  /**
   * Changes what the watcher waits for, on the same libuv handle: no new handle, no new
   * duplicate of the fd, none of the set-up {@link FdWatcher.watch} does (a device that stops
   * and resumes watching on every turn of the loop pays a few hundred nanoseconds, not the
   * microseconds of a close and a new watch). Both false pauses the watcher: it stays open,
   * calls back no more and does not keep the event loop alive until an update asks for an
   * event again. A wake-up the loop had already collected for the old events is not delivered
   * after a pause.
   *
   * @param events - what to watch now; both false (or `{}`) pauses
   * @throws VmmSysError `Closed` after close (or after an error closed the watcher);
   *   `InvalidArgument` for a bad events object; the errno of `uv_poll_start` if libuv refuses
   */
  update(events: WatchEvents): void {
    const h = this.#live();
    const e = optionsArg("events", events);
    const uv = native().uvConstants;
    const mask = (boolOpt("readable", e.readable, false) ? uv.UV_READABLE : 0) | (boolOpt("writable", e.writable, false) ? uv.UV_WRITABLE : 0);
    // uv_poll_start with 0 stops the handle (uv_poll_stop), keeping it for a later start.
    const r = h.start(mask);
    if (r < 0) throw VmmSysError.fromErrno("uv_poll_start", -r, `fd ${this.fd}`);
  }

  /** True once {@link FdWatcher.close} has been called (or an error closed the watcher). */
  get closed(): boolean {
    return this.#native === null;
  }

  /**
   * Lets the watcher keep the event loop alive again (the default).
   * @throws VmmSysError `Closed` after close
   */
  ref(): void {
    this.#live().ref();
  }

  /**
   * Stops the watcher from keeping the event loop alive on its own; it still fires while the
   * loop runs for other reasons.
   * @throws VmmSysError `Closed` after close
   */
  unref(): void {
    this.#live().unref();
  }

  /** Stops watching and releases the libuv handle. Idempotent. Does not close the fd. */
  close(): void {
    const h = this.#native;
    if (h === null) return;
    this.#native = null;
    watched.delete(this.fd);
    h.close();
  }

  #live(): NativePollHandle {
    if (this.#native === null) throw closedError("FdWatcher");
    return this.#native;
  }
}
