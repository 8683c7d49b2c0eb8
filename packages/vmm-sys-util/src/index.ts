// Errors
export { VmmSysError } from "./errors.js";
export type { VmmSysErrorCode, VmmSysConditionCode, VmmSysErrorOptions } from "./errors.js";
export type { ErrnoName } from "./generated/errno.js";
// Memory
export { memfdCreate, closeFd, ftruncate } from "./memfd.js";
export type { MemfdOptions } from "./memfd.js";
export { fallocate } from "./fallocate.js";
export type { FallocateMode } from "./fallocate.js";
export { MmapRegion, pageSize, liveMappingCount } from "./mmap-region.js";
export { copyBytes, nativeCopyBytes } from "./copy-bytes.js";
export type { NativeCopyBytes } from "./copy-bytes.js";
// Scatter-gather I/O
export { IOV_BATCH_MAX, IovTable, iovBatchRing, readvFd, writevFd, nativeReadv, nativeWritev } from "./iov.js";
export type { NativeIov } from "./iov.js";
export type { AnonymousRegionOptions, MemfdRegionOptions, FdRegionOptions, MadviseAdvice } from "./mmap-region.js";
// Threads and signals
export { gettid, installKickSignal, tgkill, sigrtmin, sigrtmax } from "./signals.js";
export { ThreadTimer } from "./thread-timer.js";
// Notifications and readiness
export { EventFd } from "./event-fd.js";
export type { EventFdOptions } from "./event-fd.js";
export { FdWatcher } from "./fd-watcher.js";
export type { WatchEvents, WatchEvent, WatchCallback } from "./fd-watcher.js";
export { pollFd } from "./poll-fd.js";
export type { PollEvents, PollResult } from "./poll-fd.js";
// Network
export { openTap, tapSetOffload, tapSetVnetHdrSize, TUN_F } from "./tap.js";
export type { TapOptions, Tap } from "./tap.js";
// The addon seam
export { setNativeBinding } from "./native.js";
export type { NativeBinding, NativePollHandle, MmapConstants, FdConstants, TapConstants, UvConstants } from "./native.js";
