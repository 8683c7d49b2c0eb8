import { Reader, Writer, hex } from "./bytes.js";
import type { BzImage } from "./bzimage.js";
import { E820_MAX_ENTRIES, checkE820Entries, type E820Entry } from "./e820.js";
import { LoaderError } from "./error.js";
import { isGuestAddress } from "./ranges.js";
import { HDR, HDRS_MAGIC, HDR_WIDTH, LoadFlags, decodeSetupHeader, type SetupHeader, type SetupHeaderField } from "./setup-header.js";

// struct boot_params offsets (asm/bootparam.h, "the so-called zeropage").
/** Offsets of the zero-page fields outside the setup header. */
export const ZP = {
  acpi_rsdp_addr: 0x070,
  ext_ramdisk_image: 0x0c0,
  ext_ramdisk_size: 0x0c4,
  ext_cmd_line_ptr: 0x0c8,
  e820_entries: 0x1e8,
  sentinel: 0x1ef,
  hdr: 0x1f1,
  e820_table: 0x2d0,
} as const;
/** Size of the zero page. */
export const ZERO_PAGE_SIZE = 4096;
/** `type_of_loader` 0xff: "undefined" boot loader (Documentation/arch/x86/boot.rst). */
export const LOADER_TYPE_UNDEFINED = 0xff;
const FOUR_GIB = 2 ** 32;

/**
 * The zero page (`struct boot_params`) a 64-bit Linux kernel receives in RSI.
 *
 * Built from a bzImage's setup header ({@link BootParams.fromBzImage}) or, for
 * an ELF vmlinux entered at startup_64, from a minimal header
 * ({@link BootParams.minimal}); then the loader's fields are set. The bytes
 * are plain data: write them to guest memory at the address you pass in RSI.
 */
export class BootParams {
  /** The 4096 bytes of the zero page. */
  readonly bytes: Uint8Array;
  readonly #w: Writer;

  private constructor() {
    this.#w = new Writer(ZERO_PAGE_SIZE);
    this.bytes = this.#w.bytes;
  }

  /**
   * A zero page holding a copy of the bzImage's setup header (0x1f1 up to its
   * declared end), with `type_of_loader` = 0xff and LOADED_HIGH set.
   */
  static fromBzImage(image: BzImage): BootParams {
    const bp = new BootParams();
    bp.bytes.set(image.setupHeaderBytes, HDR.setup_sects);
    // Fields boot.rst makes the loader's to write start at 0, whatever the file holds:
    // a file's ramdisk_image/size (no initrd given), setup_data chain, command line
    // pointer or hardware_subarch (2 = Xen) must not reach the guest.
    bp.#w
      .u32(HDR.ramdisk_image, 0)
      .u32(HDR.ramdisk_size, 0)
      .u32(HDR.cmd_line_ptr, 0)
      .u32(HDR.hardware_subarch, 0)
      .u64(HDR.hardware_subarch_data, 0n)
      .u64(HDR.setup_data, 0n);
    bp.#w.u8(HDR.type_of_loader, LOADER_TYPE_UNDEFINED);
    bp.#w.u8(HDR.loadflags, image.header.loadflags | LoadFlags.LoadedHigh);
    return bp;
  }

  /**
   * A zero page for a kernel entered without a bzImage header (an ELF
   * vmlinux at startup_64): boot flag, `HdrS`, protocol 2.15, `type_of_loader`
   * 0xff, LOADED_HIGH, kernel_alignment 16 MiB and cmdline_size 2047, which
   * is what the kernel reads from the header on this path.
   */
  static minimal(): BootParams {
    const bp = new BootParams();
    bp.#w
      .u16(HDR.boot_flag, 0xaa55)
      .u32(HDR.header, HDRS_MAGIC)
      .u16(HDR.version, 0x20f)
      .u8(HDR.type_of_loader, LOADER_TYPE_UNDEFINED)
      .u8(HDR.loadflags, LoadFlags.LoadedHigh)
      .u32(HDR.kernel_alignment, 0x100_0000)
      .u32(HDR.cmdline_size, 2047)
      .u16(HDR.vid_mode, 0xffff);
    return bp;
  }

  /**
   * Reads a zero page back (for tests and for comparing with another loader).
   *
   * @throws LoaderError `Truncated` when `bytes` is shorter than 4096.
   */
  static from(bytes: Uint8Array): BootParams {
    new Reader(bytes, "zero page").need(0, ZERO_PAGE_SIZE, "the zero page");
    const bp = new BootParams();
    bp.bytes.set(bytes.subarray(0, ZERO_PAGE_SIZE));
    return bp;
  }

  /** The setup header fields as they are in this zero page. */
  get header(): SetupHeader {
    return decodeSetupHeader(this.bytes, HDR.kernel_info_offset + 4, "zero page");
  }

  /**
   * Sets one setup header field.
   *
   * @throws LoaderError `InvalidArgument` when the value does not fit the field.
   */
  setField(name: SetupHeaderField, value: number | bigint): this {
    const w = HDR_WIDTH[name];
    // Checked before BigInt(), which throws a RangeError for 1.5, NaN or Infinity.
    if (typeof value === "number" && !Number.isSafeInteger(value)) throw new LoaderError("InvalidArgument", `${name} = ${value} is not an integer`);
    const v = BigInt(value);
    if (v < 0n || v >= 1n << BigInt(8 * w)) throw new LoaderError("InvalidArgument", `${name} = ${value} does not fit in ${w} bytes`);
    const off = HDR[name];
    if (w === 1) this.#w.u8(off, Number(v));
    else if (w === 2) this.#w.u16(off, Number(v));
    else if (w === 4) this.#w.u32(off, Number(v));
    else this.#w.u64(off, v);
    return this;
  }

  /**
   * Points the kernel at its command line: `cmd_line_ptr` (low 32 bits) and
   * `ext_cmd_line_ptr` (high 32 bits).
   *
   * @throws LoaderError `InvalidArgument` for an address outside 2^52.
   */
  setCmdline(addr: number): this {
    checkAddr(addr, "command line address");
    this.#w.u32(HDR.cmd_line_ptr, addr % FOUR_GIB).u32(ZP.ext_cmd_line_ptr, Math.floor(addr / FOUR_GIB));
    return this;
  }

  /**
   * Records the initrd: `ramdisk_image`/`ramdisk_size` and their `ext_` high halves.
   *
   * @throws LoaderError `InvalidArgument` for an address or size outside 2^52.
   */
  setRamdisk(addr: number, size: number): this {
    checkAddr(addr, "initrd address");
    checkAddr(size, "initrd size");
    this.#w
      .u32(HDR.ramdisk_image, addr % FOUR_GIB)
      .u32(ZP.ext_ramdisk_image, Math.floor(addr / FOUR_GIB))
      .u32(HDR.ramdisk_size, size % FOUR_GIB)
      .u32(ZP.ext_ramdisk_size, Math.floor(size / FOUR_GIB));
    return this;
  }

  /**
   * Writes the memory map into `e820_table` and `e820_entries`.
   *
   * @throws LoaderError `TooManyEntries` above 128 entries, `InvalidArgument`
   * for an entry whose address or size is not an integer inside 2^52.
   */
  setE820(entries: readonly E820Entry[]): this {
    if (entries.length > E820_MAX_ENTRIES) {
      throw new LoaderError("TooManyEntries", `${entries.length} e820 entries; the zero page holds ${E820_MAX_ENTRIES}`);
    }
    checkE820Entries(entries);
    this.bytes.fill(0, ZP.e820_table, ZP.e820_table + 20 * E820_MAX_ENTRIES);
    entries.forEach((e, i) => {
      const o = ZP.e820_table + 20 * i;
      this.#w.u64(o, e.addr).u64(o + 8, e.size).u32(o + 16, e.type);
    });
    this.#w.u8(ZP.e820_entries, entries.length);
    return this;
  }

  /** Reads the e820 table back. */
  get e820(): E820Entry[] {
    const r = new Reader(this.bytes, "zero page");
    const n = Math.min(r.u8(ZP.e820_entries, "e820_entries"), E820_MAX_ENTRIES);
    const out: E820Entry[] = [];
    for (let i = 0; i < n; i++) {
      const o = ZP.e820_table + 20 * i;
      out.push({ addr: Number(r.u64(o, "addr")), size: Number(r.u64(o + 8, "size")), type: r.u32(o + 16, "type") as E820Entry["type"] });
    }
    return out;
  }

  /**
   * Sets `acpi_rsdp_addr` (boot protocol 2.14), so the kernel need not scan
   * for the RSDP.
   *
   * @throws LoaderError `InvalidArgument` for an address outside 2^52.
   */
  setAcpiRsdp(addr: number): this {
    checkAddr(addr, "RSDP address");
    this.#w.u64(ZP.acpi_rsdp_addr, addr);
    return this;
  }

  /** The command line address the page holds (`cmd_line_ptr` + `ext_cmd_line_ptr` << 32). */
  get cmdlineAddr(): number {
    const r = new Reader(this.bytes, "zero page");
    return r.u32(HDR.cmd_line_ptr, "cmd_line_ptr") + r.u32(ZP.ext_cmd_line_ptr, "ext_cmd_line_ptr") * FOUR_GIB;
  }
}

function checkAddr(v: number, what: string): void {
  if (!isGuestAddress(v)) throw new LoaderError("InvalidArgument", `${what} ${hex(v)} is not a guest address`);
}
