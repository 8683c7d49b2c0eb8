/**
 * The mmap backend of `@ts-vmm/vm-memory`: guest memory in host mappings (memfd, anonymous,
 * files, guest_memfd, huge pages) made by `@ts-vmm/vmm-sys-util`, the memory a VMM hands to KVM.
 *
 * A subpath of its own (`import { GuestMemoryMmap } from "@ts-vmm/vm-memory/mmap"`) so that the
 * main entry point stays pure TypeScript: `@ts-vmm/vmm-sys-util` (a native addon) is an optional
 * peer dependency, needed only by this entry point. Install it next to vm-memory to use it.
 *
 * @module mmap
 */
export { GuestMemoryMmap, MAX_REGION_SIZE } from "./guest-memory-mmap.js";
export type { MmapMemoryOptions, MmapRangeSpec } from "./guest-memory-mmap.js";
export { NATIVE_COPY_MIN_READ, NATIVE_COPY_MIN_WRITE, nativeBulkCopier } from "./native-copy.js";
