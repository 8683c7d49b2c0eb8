import { Writer } from "./bytes.js";
import { checkE820Entries, type E820Entry } from "./e820.js";
import { LoaderError } from "./error.js";
import { isGuestAddress } from "./ranges.js";

// struct hvm_start_info and friends, xen/include/public/arch-x86/hvm/start_info.h.
/** `hvm_start_info.magic` ("xEn3" with the high bit of the 'x' set). */
export const XEN_HVM_START_MAGIC = 0x336ec578;
/** Size of `struct hvm_start_info` (version 1). */
export const START_INFO_SIZE = 56;
/** Size of `struct hvm_modlist_entry`. */
export const MODLIST_ENTRY_SIZE = 32;
/** Size of `struct hvm_memmap_table_entry`. */
export const MEMMAP_ENTRY_SIZE = 24;

/** A module passed to a PVH kernel (Linux takes the first as its initrd). */
export interface PvhModule {
  readonly addr: number;
  readonly size: number;
  /** Guest address of the module's NUL-terminated command line, or 0. */
  readonly cmdlineAddr?: number;
}

/** Inputs of {@link buildStartInfo}. All addresses are guest physical. */
export interface StartInfoInput {
  /** Address of the NUL-terminated command line, or 0. */
  readonly cmdlineAddr: number;
  /** Address of the RSDP, or 0 when there is no ACPI. */
  readonly rsdpAddr: number;
  /** Where the module list goes (used only when `modules` is non-empty). */
  readonly modlistAddr: number;
  readonly modules: readonly PvhModule[];
  /** Where the memory map table goes. */
  readonly memmapAddr: number;
  readonly memmap: readonly E820Entry[];
}

/** The three blobs of a PVH boot, each with its address. */
export interface StartInfoBlobs {
  readonly startInfo: Uint8Array;
  readonly modlist: Uint8Array;
  readonly memmap: Uint8Array;
}

/**
 * Builds `hvm_start_info` version 1 (magic 0x336ec578), its module list and
 * its memory map table (e820 types, as the PVH ABI specifies).
 *
 * @throws LoaderError `InvalidArgument` for addresses outside 2^52 (memory
 * map entries included),
 * `TooManyEntries` above 128 memory map entries or 16 modules.
 */
export function buildStartInfo(input: StartInfoInput): StartInfoBlobs {
  for (const v of [input.cmdlineAddr, input.rsdpAddr, input.modlistAddr, input.memmapAddr, ...input.modules.flatMap((m) => [m.addr, m.size, m.cmdlineAddr ?? 0])]) {
    if (!isGuestAddress(v)) throw new LoaderError("InvalidArgument", `PVH address or size ${v} is not a guest address`);
  }
  if (input.memmap.length > 128) throw new LoaderError("TooManyEntries", `${input.memmap.length} PVH memory map entries; at most 128`);
  if (input.modules.length > 16) throw new LoaderError("TooManyEntries", `${input.modules.length} PVH modules; at most 16`);
  checkE820Entries(input.memmap);
  const si = new Writer(START_INFO_SIZE)
    .u32(0, XEN_HVM_START_MAGIC)
    .u32(4, 1)
    .u32(8, 0)
    .u32(12, input.modules.length)
    .u64(16, input.modules.length > 0 ? input.modlistAddr : 0)
    .u64(24, input.cmdlineAddr)
    .u64(32, input.rsdpAddr)
    .u64(40, input.memmapAddr)
    .u32(48, input.memmap.length)
    .u32(52, 0);
  const ml = new Writer(MODLIST_ENTRY_SIZE * input.modules.length);
  input.modules.forEach((m, i) => ml.u64(i * 32, m.addr).u64(i * 32 + 8, m.size).u64(i * 32 + 16, m.cmdlineAddr ?? 0));
  const mm = new Writer(MEMMAP_ENTRY_SIZE * input.memmap.length);
  input.memmap.forEach((e, i) => mm.u64(i * 24, e.addr).u64(i * 24 + 8, e.size).u32(i * 24 + 16, e.type));
  return { startInfo: si.bytes, modlist: ml.bytes, memmap: mm.bytes };
}
