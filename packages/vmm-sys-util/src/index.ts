export { VmmSysError } from "./errors.js";
export type { VmmSysErrorCode, VmmSysConditionCode, VmmSysErrorOptions } from "./errors.js";
export type { ErrnoName } from "./generated/errno.js";
export { memfdCreate, closeFd, ftruncate } from "./memfd.js";
export type { MemfdOptions } from "./memfd.js";
export { MmapRegion, pageSize, liveMappingCount } from "./mmap-region.js";
export type { AnonymousRegionOptions, MemfdRegionOptions, FdRegionOptions, MadviseAdvice } from "./mmap-region.js";
export { setNativeBinding } from "./native.js";
export type { NativeBinding } from "./native.js";
