/**
 * Why a kernel, initrd, command line or boot table was refused.
 *
 * Every check is made before anything is written to guest memory, so a
 * `LoaderError` always means guest memory is unchanged.
 */
export type LoaderErrorCode =
  /** The file ends before a structure it declares. */
  | "Truncated"
  /** A magic number (`HdrS`, `0xAA55`, `\x7fELF`) is wrong. */
  | "BadMagic"
  /** The bzImage boot protocol is older than 2.06. */
  | "ProtocolTooOld"
  /** The kernel cannot be entered the way asked (no 64-bit entry, not relocatable, no PVH note). */
  | "Unsupported"
  /** A header field has a value the boot protocol does not allow. */
  | "InvalidHeader"
  /** An ELF header, program header or note is malformed. */
  | "InvalidElf"
  /** A 64-bit offset, address or size overflows (or exceeds the 2^52 guest address space). */
  | "Overflow"
  /** The PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) has a descriptor of the wrong size. */
  | "PvhNoteSize"
  /** Something would be written into the 32-bit MMIO hole. */
  | "InMmioHole"
  /** Something would be written past the end of guest memory, or where there is no RAM. */
  | "OutOfGuestMemory"
  /** Two things the loader would write overlap each other. */
  | "Overlap"
  /** The initrd does not fit in RAM below `initrd_addr_max`. */
  | "InitrdTooLarge"
  /** The command line is longer than the kernel accepts. */
  | "CmdlineTooLong"
  /** The command line contains a NUL, a control character or an unquotable value. */
  | "CmdlineInvalid"
  /** A table would have more entries than its format holds. */
  | "TooManyEntries"
  /** An argument from the VMM is out of range. */
  | "InvalidArgument";

/** The one error class of `@ts-vmm/linux-loader`. */
export class LoaderError extends Error {
  /** What went wrong, as a PascalCase condition name. */
  readonly code: LoaderErrorCode;

  /**
   * @param code - the condition
   * @param message - a sentence for a human
   * @param options - `cause` for a wrapped lower-level error (for example a `GuestMemoryError`)
   */
  constructor(code: LoaderErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "LoaderError";
    this.code = code;
  }
}
