import { constants } from "node:os";
import { check, invalid } from "./errors.js";
import { native } from "./native.js";
import { intArg } from "./validate.js";

/**
 * The kernel thread id (gettid(2)) of the calling thread: the main thread's id equals the
 * process id; each worker_thread has its own. Pass it to {@link tgkill} from another thread.
 * @returns the thread id
 */
export function gettid(): number {
  return native().gettid();
}

/**
 * The first real-time signal available to applications (glibc's SIGRTMIN, usually 34: glibc
 * keeps 32 and 33 for itself).
 * @returns the signal number
 */
export function sigrtmin(): number {
  return native().sigrtmin();
}

/**
 * The last real-time signal (SIGRTMAX, usually 64).
 * @returns the signal number
 */
export function sigrtmax(): number {
  return native().sigrtmax();
}

/**
 * Offset from SIGRTMIN of the default kick signal. Node 20 and libuv catch none of the
 * real-time signals (checked in /proc/self/status SigCgt: only 2, 10, 11, 15 and 33);
 * SIGRTMIN+0 is what rust-vmm and Firecracker use, +2 leaves room for other embedders.
 */
const DEFAULT_KICK_OFFSET = 2;

function rtSignal(signo: unknown): number {
  return intArg("signo", signo, sigrtmin(), sigrtmax());
}

/**
 * Installs a no-op handler, without SA_RESTART, for a real-time signal, process-wide, and
 * unblocks it in the calling thread. Afterwards {@link tgkill} with that signal makes a blocking
 * system call in the target thread (KVM_RUN, poll, read) return `EINTR` instead of killing the
 * process; this is how a vCPU thread is kicked out of KVM_RUN. Idempotent; callable from any
 * thread. Signals are blocked nowhere by Node's JS threads, but call this in each thread that
 * set its own mask.
 *
 * @param signo - the signal, SIGRTMIN..SIGRTMAX (default SIGRTMIN+2)
 * @returns the signal number
 * @throws VmmSysError `InvalidArgument` if signo is not a real-time signal; `EBUSY` if another
 *   handler is already installed for it (it is not replaced); an errno code if sigaction fails
 */
export function installKickSignal(signo?: number): number {
  const s = signo === undefined ? sigrtmin() + DEFAULT_KICK_OFFSET : rtSignal(signo);
  check("sigaction", native().installNoopHandler(s), `signal ${s}`);
  check("pthread_sigmask", native().unblockSignal(s), `signal ${s}`);
  return s;
}

/**
 * Sends a signal to one thread of this process with tgkill(2). Only real-time signals are
 * accepted (and 0, which only checks that the thread exists): a real-time signal without a
 * handler would terminate the whole process, so install one first with
 * {@link installKickSignal}.
 *
 * @param tid - the target's kernel thread id, from {@link gettid} in that thread
 * @param signo - a real-time signal, or 0
 * @throws VmmSysError `InvalidArgument` for a bad tid, a signal that is not real-time, or one
 *   with no handler installed (the signal would kill the process; nothing is sent);
 *   `ESRCH` if no such thread exists in this process
 */
export function tgkill(tid: number, signo: number): void {
  intArg("tid", tid, 1, 0x7fff_ffff);
  if (signo !== 0) rtSignal(signo);
  const r = native().tgkill(tid, signo);
  // The addon refuses (-EINVAL) a signal whose disposition is still the default: it would
  // terminate the process.
  if (r === -constants.errno.EINVAL) throw invalid(`no handler is installed for signal ${signo}: call installKickSignal first`);
  check("tgkill", r, `thread ${tid}`);
}
