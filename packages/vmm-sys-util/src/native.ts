import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { VmmSysError } from "./errors.js";
import type { NativeIov } from "./iov.js";

/** Constants read by the addon from the system headers (sys/mman.h). */
export interface MmapConstants {
  /** PROT_READ */
  readonly PROT_READ: number;
  /** PROT_WRITE */
  readonly PROT_WRITE: number;
  /** MAP_SHARED */
  readonly MAP_SHARED: number;
  /** MAP_PRIVATE */
  readonly MAP_PRIVATE: number;
  /** MAP_ANONYMOUS */
  readonly MAP_ANONYMOUS: number;
  /** MAP_NORESERVE */
  readonly MAP_NORESERVE: number;
  /** MAP_HUGETLB */
  readonly MAP_HUGETLB: number;
  /** MAP_POPULATE */
  readonly MAP_POPULATE: number;
  /** MAP_HUGE_SHIFT: log2 of the huge page size goes in the 6 flag bits from here (MAP_HUGE_2MB, ...). */
  readonly MAP_HUGE_SHIFT: number;
  /** MADV_DONTNEED */
  readonly MADV_DONTNEED: number;
  /** MADV_REMOVE */
  readonly MADV_REMOVE: number;
  /** MADV_HUGEPAGE */
  readonly MADV_HUGEPAGE: number;
  /** MADV_NOHUGEPAGE */
  readonly MADV_NOHUGEPAGE: number;
  /** MADV_WILLNEED */
  readonly MADV_WILLNEED: number;
  /** MADV_POPULATE_READ (Linux 5.14) */
  readonly MADV_POPULATE_READ: number;
  /** MADV_POPULATE_WRITE (Linux 5.14) */
  readonly MADV_POPULATE_WRITE: number;
  /** MS_SYNC */
  readonly MS_SYNC: number;
  /** MS_ASYNC */
  readonly MS_ASYNC: number;
}

/** Constants read by the addon from sys/mman.h, sys/eventfd.h and poll.h. */
export interface FdConstants {
  /** MFD_CLOEXEC */
  readonly MFD_CLOEXEC: number;
  /** MFD_ALLOW_SEALING */
  readonly MFD_ALLOW_SEALING: number;
  /** MFD_HUGETLB */
  readonly MFD_HUGETLB: number;
  /** MFD_HUGE_SHIFT: log2 of the huge page size goes in the 6 flag bits from here (MFD_HUGE_2MB, ...). */
  readonly MFD_HUGE_SHIFT: number;
  /** F_SEAL_SHRINK (fcntl F_ADD_SEALS) */
  readonly F_SEAL_SHRINK: number;
  /** FALLOC_FL_KEEP_SIZE (fallocate) */
  readonly FALLOC_FL_KEEP_SIZE: number;
  /** FALLOC_FL_PUNCH_HOLE (fallocate) */
  readonly FALLOC_FL_PUNCH_HOLE: number;
  /** FALLOC_FL_ZERO_RANGE (fallocate) */
  readonly FALLOC_FL_ZERO_RANGE: number;
  /** EFD_CLOEXEC */
  readonly EFD_CLOEXEC: number;
  /** EFD_NONBLOCK */
  readonly EFD_NONBLOCK: number;
  /** EFD_SEMAPHORE */
  readonly EFD_SEMAPHORE: number;
  /** POLLIN */
  readonly POLLIN: number;
  /** POLLOUT */
  readonly POLLOUT: number;
  /** POLLERR */
  readonly POLLERR: number;
  /** POLLHUP */
  readonly POLLHUP: number;
  /** POLLNVAL */
  readonly POLLNVAL: number;
}

/** Constants read by the addon from linux/if_tun.h and signal.h. */
export interface TapConstants {
  /** IFF_TAP */
  readonly IFF_TAP: number;
  /** IFF_NO_PI */
  readonly IFF_NO_PI: number;
  /** IFF_VNET_HDR */
  readonly IFF_VNET_HDR: number;
  /** IFF_MULTI_QUEUE */
  readonly IFF_MULTI_QUEUE: number;
  /** TUN_F_CSUM */
  readonly TUN_F_CSUM: number;
  /** TUN_F_TSO4 */
  readonly TUN_F_TSO4: number;
  /** TUN_F_TSO6 */
  readonly TUN_F_TSO6: number;
  /** TUN_F_TSO_ECN */
  readonly TUN_F_TSO_ECN: number;
  /** TUN_F_UFO */
  readonly TUN_F_UFO: number;
  /** IFNAMSIZ */
  readonly IFNAMSIZ: number;
}

/** libuv's poll event bits (uv.h). */
export interface UvConstants {
  /** UV_READABLE */
  readonly UV_READABLE: number;
  /** UV_WRITABLE */
  readonly UV_WRITABLE: number;
  /** UV_DISCONNECT */
  readonly UV_DISCONNECT: number;
}

/** A uv_poll_t owned by the addon (see fd-watcher.ts). */
export interface NativePollHandle {
  /** Starts or changes the watched events (UV_READABLE | UV_WRITABLE); 0 or -errno. */
  start(events: number): number;
  /** uv_ref: keep the loop alive. */
  ref(): void;
  /** uv_unref: do not keep the loop alive. */
  unref(): void;
  /** Stops the watcher and closes the handle; idempotent. */
  close(): void;
}

/**
 * The addon's exports. Every function takes positional arguments and returns a negative errno
 * (a number below zero) when its system call fails; argument type errors throw TypeError or
 * RangeError and never reach a system call. Prefer the typed API: this is the seam for
 * {@link setNativeBinding}.
 */
export interface NativeBinding {
  /** sysconf(_SC_PAGESIZE). */
  pageSize(): number;
  /** mmap(2) (fd -1: anonymous) → [buffer, host address]; ownFd: close fd with the mapping. */
  mmap(fd: number, length: number, prot: number, flags: number, offset: number, ownFd: boolean): [SharedArrayBuffer, bigint] | number;
  /** madvise(2) on [offset, offset+length) of a buffer made by {@link NativeBinding.mmap}. */
  madvise(buffer: SharedArrayBuffer, offset: number, length: number, advice: number): number;
  /** msync(2) on [offset, offset+length) of a buffer made by {@link NativeBinding.mmap}. */
  msync(buffer: SharedArrayBuffer, offset: number, length: number, flags: number): number;
  /** Takes the owned fd away from a mapping (returns it, or -1 if none). */
  disownFd(buffer: SharedArrayBuffer): number;
  /** Mappings whose backing store has not been released, process-wide. */
  liveMappingCount(): number;
  /**
   * The API that makes and reads the mappings' SharedArrayBuffers, process-wide: `"node-api"`
   * where this Node exports Node-API's (experimental) SharedArrayBuffer functions (Node 22.2x,
   * 24.16, 26.1 and later), else `"v8"`. With `want`, switches first (for tests of the V8 path);
   * `"node-api"` stays `"v8"` where Node lacks them.
   */
  sabBackend(want?: "v8" | "node-api"): "v8" | "node-api";
  /**
   * memmove of `src[srcOffset, +length)` to `dst[dstOffset, +length)` (the ranges may overlap),
   * for any two byte views, shared or not → 0, or -EINVAL (not a Uint8Array, not an integer
   * in [0, 2^53-1]) or -ERANGE (a range outside its view, a view outside its buffer). Never throws.
   */
  copyBytes(dst: Uint8Array, dstOffset: number, src: Uint8Array, srcOffset: number, length: number): number;
  /** readv(2) of fd into views (an array and a count, or arguments) → bytes, or -errno / -EINVAL / -ERANGE for bad arguments. Never throws. */
  readv: NativeIov;
  /** writev(2) of views (an array and a count, or arguments) to fd → bytes, or -errno / -EINVAL / -ERANGE for bad arguments. Never throws. */
  writev: NativeIov;
  /** A table over a spans Float64Array and 1–8 views, all over non-resizable SharedArrayBuffers → its id (> 0, this thread's), or -EINVAL / -ERANGE / -ENOSPC. */
  iovTable(spans: Float64Array, ...views: Uint8Array[]): number;
  /** Frees table `id` (and its references to the buffers) → 0, or -EINVAL if this thread has no such table. */
  iovTableFree(id: number): number;
  /** readv(2) of fd into the first `count` spans of table `id` → bytes, or -errno / -EINVAL / -ERANGE. Never throws. */
  readvTable(fd: number, id: number, count: number): number;
  /** writev(2) of the first `count` spans of table `id` to fd → bytes, or -errno / -EINVAL / -ERANGE. Never throws. */
  writevTable(fd: number, id: number, count: number): number;
  /** Several writev(2) over a table's triples in one io_uring submission (or a loop): 0 with `io` holding results, or -errno. */
  writevTableBatch(fd: number, id: number, n: number, io: Int32Array): number;
  /** Whether this thread's batches use io_uring, after turning it off or on. */
  iovBatchRing(on?: boolean): number;
  /** sys/mman.h constants. */
  readonly mmapConstants: MmapConstants;
  /** memfd_create(2) → fd. */
  memfdCreate(name: string, flags: number): number;
  /** close(2). */
  close(fd: number): number;
  /** ftruncate(2). */
  ftruncate(fd: number, size: number): number;
  /** fallocate(2) with FALLOC_FL_* mode bits. */
  fallocate(fd: number, mode: number, offset: number, len: number): number;
  /** fcntl(fd, F_ADD_SEALS, seals). */
  addSeals(fd: number, seals: number): number;
  /** eventfd(2) → fd. */
  eventfd(initval: number, flags: number): number;
  /** read(2) of an eventfd's 8-byte counter. */
  eventfdRead(fd: number): bigint | number;
  /** write(2) of 8 bytes to an eventfd. */
  eventfdWrite(fd: number, value: bigint): number;
  /** poll(2) of one fd → revents (0 on timeout). */
  poll(fd: number, events: number, timeoutMs: number): number;
  /** eventfd, memfd and poll constants. */
  readonly fdConstants: FdConstants;
  /** gettid(2). */
  gettid(): number;
  /** SIGRTMIN. */
  sigrtmin(): number;
  /** SIGRTMAX. */
  sigrtmax(): number;
  /** sigaction(2): a no-op handler without SA_RESTART (-EBUSY if another handler is set). */
  installNoopHandler(signo: number): number;
  /** pthread_sigmask(SIG_UNBLOCK) in the calling thread. */
  unblockSignal(signo: number): number;
  /** tgkill(2) within this process. */
  tgkill(tid: number, signo: number): number;
  /** timer_create(2), CLOCK_MONOTONIC, SIGEV_THREAD_ID to the calling thread: the kernel timer id, or -errno. */
  threadTimerCreate(signo: number): number;
  /** timer_settime(2) of a timer from threadTimerCreate (first 0 disarms): 0 or -errno. */
  threadTimerSet(id: number, firstNs: number, intervalNs: number): number;
  /** timer_delete(2) of a timer from threadTimerCreate: 0 or -errno. */
  threadTimerDelete(id: number): number;
  /** uv_poll_init on the calling thread's loop; the callback gets (status, UV_* events). */
  pollCreate(fd: number, cb: (status: number, events: number) => void): NativePollHandle | number;
  /** uv.h poll event bits. */
  readonly uvConstants: UvConstants;
  /** ioctl(TUNSETIFF) → the interface name. */
  tunSetIff(fd: number, name: string, flags: number): string | number;
  /** ioctl(TUNSETOFFLOAD). */
  tapSetOffload(fd: number, flags: number): number;
  /** ioctl(TUNSETVNETHDRSZ). */
  tapSetVnetHdrSize(fd: number, size: number): number;
  /** linux/if_tun.h constants. */
  readonly tapConstants: TapConstants;
}

let binding: NativeBinding | undefined;

/**
 * The loaded addon: the override given to {@link setNativeBinding}, or the package's own,
 * found by node-gyp-build: `build/Release/vmm_sys_util.node` (built from source) first, then
 * `prebuilds/<platform>-<arch>/node.abi<N>.node` for this Node's ABI (the same package root
 * is one level above src/ and dist/).
 * @throws VmmSysError `Unsupported` if neither exists or loads; the message says how to build it
 * @internal
 */
export function native(): NativeBinding {
  if (binding === undefined) {
    const require = createRequire(import.meta.url);
    const load = require("node-gyp-build") as (dir: string) => unknown;
    const root = fileURLToPath(new URL("..", import.meta.url));
    try {
      binding = load(root) as NativeBinding;
    } catch (cause) {
      const tuple = `${process.platform}-${process.arch}`;
      throw new VmmSysError(
        "Unsupported",
        `@ts-vmm/vmm-sys-util: no native addon loads for Node ${process.version} (${tuple}, ABI ${process.versions.modules}) ` +
          `in ${root}: neither build/Release/vmm_sys_util.node nor prebuilds/${tuple}/node.abi${process.versions.modules}.node. ` +
          "Build it from source (needs python3, make and a C++ compiler): `npm rebuild @ts-vmm/vmm-sys-util`. " +
          "With pnpm, allow its install script first (`pnpm approve-builds`, or list @ts-vmm/vmm-sys-util in " +
          "`onlyBuiltDependencies`), then `pnpm rebuild @ts-vmm/vmm-sys-util`.",
        { cause },
      );
    }
  }
  return binding;
}

/**
 * Replaces the addon, for tests (a wrapper that injects failures) or to load a build from
 * another path. Pass a path to a `.node` file, a binding object, or `undefined` to go back to
 * the default.
 * @param override - the binding or the path of the `.node` file to load
 * @throws Error from `require` if a path is given and the file cannot be loaded
 */
export function setNativeBinding(override: NativeBinding | string | undefined): void {
  if (typeof override === "string") {
    const require = createRequire(import.meta.url);
    binding = require(override) as NativeBinding;
  } else {
    binding = override;
  }
}
