/**
 * The entry point of `@ts-vmm/vm-memory` (its README is the package's page in the API docs).
 * `@mergeModuleWith <project>` lists these exports on that page rather than under a
 * sub-module named `index`, beside the package's subpath entry points.
 *
 * @module
 * @mergeModuleWith <project>
 */
export { GUEST_ADDRESS_LIMIT, bigintToGuestAddress, checkGuestAddress, checkLength, toGuestAddress } from "./address.js";
export type { GuestAddress } from "./address.js";
export { GuestMemoryError } from "./error.js";
export type { GuestMemoryErrorCode } from "./error.js";
export { DIRTY_PAGE_SIZE, DirtyBitmap } from "./dirty-bitmap.js";
export type { GuestMemoryRegion } from "./region.js";
export type { DiscardableMemory, MemoryBacking } from "./discard.js";
export type { GuestMemory, U64Halves } from "./guest-memory.js";
export { GuestMemoryBase } from "./guest-memory-base.js";
export type { BulkCopier } from "./bulk-copy.js";
export { GuestMemoryArrayBuffer } from "./guest-memory-array-buffer.js";
export type { ArrayBufferMemoryOptions, ArrayBufferRegionSpec } from "./guest-memory-array-buffer.js";
export type { GuestMemoryTransferable, TransferableRegion } from "./transferable.js";
export { defineLayout, readObj, writeObj } from "./layout.js";
export type { BytesField, FieldSpec, FieldValue, Layout, LayoutValue, ScalarField, ScalarType } from "./layout.js";
export { translate } from "./page-walk.js";
export type { TranslateFault, TranslateFaultKind, TranslateOk, TranslateOptions, TranslateResult } from "./page-walk.js";
export { sliceRange } from "./slices.js";
export { readFromFd, readFromFdAsync, writeToFd, writeToFdAsync } from "./fd-io.js";
export type { FilePosition } from "./fd-io.js";
export { GuestMemoryReadable, GuestMemoryWritable } from "./streams.js";
export type { GuestMemoryReadableOptions } from "./streams.js";
