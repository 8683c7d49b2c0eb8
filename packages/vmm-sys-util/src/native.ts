import { createRequire } from "node:module";

/** Constants read by the addon from the system headers (sys/mman.h). */
export interface MmapConstants {
  readonly PROT_READ: number;
  readonly PROT_WRITE: number;
  readonly MAP_SHARED: number;
  readonly MAP_PRIVATE: number;
  readonly MAP_ANONYMOUS: number;
  readonly MAP_NORESERVE: number;
  readonly MAP_HUGETLB: number;
  readonly MADV_DONTNEED: number;
  readonly MADV_REMOVE: number;
  readonly MADV_HUGEPAGE: number;
  readonly MADV_NOHUGEPAGE: number;
  readonly MADV_WILLNEED: number;
  readonly MS_SYNC: number;
  readonly MS_ASYNC: number;
}

/** Constants read by the addon from sys/mman.h, sys/eventfd.h and poll.h. */
export interface FdConstants {
  readonly MFD_CLOEXEC: number;
  readonly MFD_ALLOW_SEALING: number;
  readonly MFD_HUGETLB: number;
  readonly EFD_CLOEXEC: number;
  readonly EFD_NONBLOCK: number;
  readonly EFD_SEMAPHORE: number;
  readonly POLLIN: number;
  readonly POLLOUT: number;
  readonly POLLERR: number;
  readonly POLLHUP: number;
  readonly POLLNVAL: number;
}

/** Constants read by the addon from linux/if_tun.h and signal.h. */
export interface TapConstants {
  readonly IFF_TAP: number;
  readonly IFF_NO_PI: number;
  readonly IFF_VNET_HDR: number;
  readonly IFF_MULTI_QUEUE: number;
  readonly TUN_F_CSUM: number;
  readonly TUN_F_TSO4: number;
  readonly TUN_F_TSO6: number;
  readonly TUN_F_TSO_ECN: number;
  readonly TUN_F_UFO: number;
  readonly IFNAMSIZ: number;
}

/** libuv's poll event bits (uv.h). */
export interface UvConstants {
  readonly UV_READABLE: number;
  readonly UV_WRITABLE: number;
  readonly UV_DISCONNECT: number;
}

/** A uv_poll_t owned by the addon (see fd-watcher.ts). */
export interface NativePollHandle {
  /** Starts or changes the watched events (UV_READABLE | UV_WRITABLE); 0 or -errno. */
  start(events: number): number;
  ref(): void;
  unref(): void;
  /** Stops the watcher and closes the handle; idempotent. */
  close(): void;
}

/**
 * The addon's exports. Every function takes positional arguments and returns a negative errno
 * (a number below zero) when its system call fails; argument type errors throw TypeError or
 * RangeError and never reach a system call.
 */
export interface NativeBinding {
  pageSize(): number;
  // mmap.cc
  mmap(fd: number, length: number, prot: number, flags: number, offset: number, ownFd: boolean): [SharedArrayBuffer, bigint] | number;
  madvise(buffer: SharedArrayBuffer, offset: number, length: number, advice: number): number;
  msync(buffer: SharedArrayBuffer, offset: number, length: number, flags: number): number;
  disownFd(buffer: SharedArrayBuffer): number;
  liveMappingCount(): number;
  readonly mmapConstants: MmapConstants;
  // fd.cc
  memfdCreate(name: string, flags: number): number;
  close(fd: number): number;
  ftruncate(fd: number, size: number): number;
  eventfd(initval: number, flags: number): number;
  eventfdRead(fd: number): bigint | number;
  eventfdWrite(fd: number, value: bigint): number;
  poll(fd: number, events: number, timeoutMs: number): number;
  readonly fdConstants: FdConstants;
  // signals.cc
  gettid(): number;
  sigrtmin(): number;
  sigrtmax(): number;
  installNoopHandler(signo: number): number;
  unblockSignal(signo: number): number;
  tgkill(tid: number, signo: number): number;
  // poll.cc
  pollCreate(fd: number, cb: (status: number, events: number) => void): NativePollHandle | number;
  readonly uvConstants: UvConstants;
  // tap.cc
  tunSetIff(fd: number, name: string, flags: number): string | number;
  tapSetOffload(fd: number, flags: number): number;
  tapSetVnetHdrSize(fd: number, size: number): number;
  readonly tapConstants: TapConstants;
}

let binding: NativeBinding | undefined;

/**
 * The loaded addon: the override given to {@link setNativeBinding}, or
 * `build/Release/vmm_sys_util.node` of this package (the same relative path works from
 * src/ and dist/).
 * @internal
 */
export function native(): NativeBinding {
  if (binding === undefined) {
    const require = createRequire(import.meta.url);
    binding = require("../build/Release/vmm_sys_util.node") as NativeBinding;
  }
  return binding;
}

/**
 * Replaces the addon, for tests (a wrapper that injects failures) or to load a build from
 * another path. Pass a path to a `.node` file, a binding object, or `undefined` to go back to
 * the default.
 * @param override - the binding or the path of the `.node` file to load
 */
export function setNativeBinding(override: NativeBinding | string | undefined): void {
  if (typeof override === "string") {
    const require = createRequire(import.meta.url);
    binding = require(override) as NativeBinding;
  } else {
    binding = override;
  }
}
