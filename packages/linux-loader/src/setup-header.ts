import { Reader } from "./bytes.js";

// Offsets of the setup header fields in a bzImage (and in the zero page), from
// Documentation/arch/x86/boot.rst and asm/bootparam.h (struct setup_header at 0x1f1).
/** Offsets of `struct setup_header` fields, absolute (from the start of the file / zero page). */
export const HDR = {
  setup_sects: 0x1f1,
  root_flags: 0x1f2,
  syssize: 0x1f4,
  ram_size: 0x1f8,
  vid_mode: 0x1fa,
  root_dev: 0x1fc,
  boot_flag: 0x1fe,
  jump: 0x200,
  header: 0x202,
  version: 0x206,
  realmode_swtch: 0x208,
  start_sys_seg: 0x20c,
  kernel_version: 0x20e,
  type_of_loader: 0x210,
  loadflags: 0x211,
  setup_move_size: 0x212,
  code32_start: 0x214,
  ramdisk_image: 0x218,
  ramdisk_size: 0x21c,
  bootsect_kludge: 0x220,
  heap_end_ptr: 0x224,
  ext_loader_ver: 0x226,
  ext_loader_type: 0x227,
  cmd_line_ptr: 0x228,
  initrd_addr_max: 0x22c,
  kernel_alignment: 0x230,
  relocatable_kernel: 0x234,
  min_alignment: 0x235,
  xloadflags: 0x236,
  cmdline_size: 0x238,
  hardware_subarch: 0x23c,
  hardware_subarch_data: 0x240,
  payload_offset: 0x248,
  payload_length: 0x24c,
  setup_data: 0x250,
  pref_address: 0x258,
  init_size: 0x260,
  handover_offset: 0x264,
  kernel_info_offset: 0x268,
} as const;

/** Name of a setup header field. */
export type SetupHeaderField = keyof typeof HDR;

/** Width in bytes of each field. */
export const HDR_WIDTH: Readonly<Record<SetupHeaderField, 1 | 2 | 4 | 8>> = {
  setup_sects: 1, root_flags: 2, syssize: 4, ram_size: 2, vid_mode: 2, root_dev: 2, boot_flag: 2, jump: 2,
  header: 4, version: 2, realmode_swtch: 4, start_sys_seg: 2, kernel_version: 2, type_of_loader: 1,
  loadflags: 1, setup_move_size: 2, code32_start: 4, ramdisk_image: 4, ramdisk_size: 4, bootsect_kludge: 4,
  heap_end_ptr: 2, ext_loader_ver: 1, ext_loader_type: 1, cmd_line_ptr: 4, initrd_addr_max: 4,
  kernel_alignment: 4, relocatable_kernel: 1, min_alignment: 1, xloadflags: 2, cmdline_size: 4,
  hardware_subarch: 4, hardware_subarch_data: 8, payload_offset: 4, payload_length: 4, setup_data: 8,
  pref_address: 8, init_size: 4, handover_offset: 4, kernel_info_offset: 4,
};

/**
 * A decoded setup header. 8-byte fields are `bigint`, narrower ones `number`.
 * Fields beyond the end of the header the file declares read as 0.
 */
export type SetupHeader = {
  readonly [K in SetupHeaderField]: (typeof HDR_WIDTH)[K] extends 8 ? bigint : number;
};

/** `loadflags` bits (asm/bootparam.h). */
export const LoadFlags = { LoadedHigh: 1 << 0, KaslrFlag: 1 << 1, QuietFlag: 1 << 5, KeepSegments: 1 << 6, CanUseHeap: 1 << 7 } as const;
/** `xloadflags` bits (asm/bootparam.h). */
export const XLoadFlags = {
  Kernel64: 1 << 0,
  CanBeLoadedAbove4G: 1 << 1,
  EfiHandover32: 1 << 2,
  EfiHandover64: 1 << 3,
  EfiKexec: 1 << 4,
  FiveLevel: 1 << 5,
  FiveLevelEnabled: 1 << 6,
} as const;

/** The "HdrS" signature at 0x202. */
export const HDRS_MAGIC = 0x53726448;

/**
 * Decodes every setup header field from `bytes` (a bzImage or a zero page),
 * reading fields that start at or beyond `end` as zero.
 *
 * @throws LoaderError `Truncated` when `bytes` ends before `end`.
 */
export function decodeSetupHeader(bytes: Uint8Array, end: number, what = "bzImage"): SetupHeader {
  const r = new Reader(bytes, what);
  r.need(0, end, "the setup header");
  const out: Record<string, number | bigint> = {};
  for (const [name, off] of Object.entries(HDR) as [SetupHeaderField, number][]) {
    const w = HDR_WIDTH[name];
    if (off + w > end) {
      out[name] = w === 8 ? 0n : 0;
      continue;
    }
    out[name] = w === 1 ? r.u8(off, name) : w === 2 ? r.u16(off, name) : w === 4 ? r.u32(off, name) : r.u64(off, name);
  }
  return out as SetupHeader;
}
