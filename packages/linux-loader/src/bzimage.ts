import { Reader, hex } from "./bytes.js";
import { LoaderError } from "./error.js";
import type { GuestWrite } from "./guest-writes.js";
import { commitWrites } from "./guest-writes.js";
import { layout } from "./layout.js";
import type { GuestMemory } from "./memory.js";
import { HDR, HDRS_MAGIC, LoadFlags, XLoadFlags, decodeSetupHeader, type SetupHeader } from "./setup-header.js";

/**
 * Oldest boot protocol whose header is parsed: 2.06, the first with `cmdline_size`. Loading
 * also needs `XLF_KERNEL_64` in `xloadflags`, which exists from 2.12, so a 2.06–2.11 image
 * is `Unsupported` and the protocol this package boots is ≥ 2.12.
 */
export const MIN_BOOT_PROTOCOL = 0x206;
/** Largest setup header length (0x1f1..0x290 is reserved for it in the zero page). */
const MAX_HEADER_END = 0x290;

/** Where a bzImage's protected-mode kernel went and how to enter it. */
export interface BzImageLoad {
  /** Guest physical address of the first byte of the protected-mode kernel. */
  readonly loadAddress: number;
  /** First address after the loaded bytes. */
  readonly end: number;
  /** 64-bit boot protocol entry: `loadAddress + 0x200` (startup_64). */
  readonly entry64: number;
  /**
   * Start of the memory the kernel decompresses into and runs from:
   * `max(loadAddress aligned up to kernel_alignment, pref_address)`.
   */
  readonly runtimeStart: number;
  /** `init_size`: bytes from `runtimeStart` the kernel needs before it reads the memory map. */
  readonly initSize: number;
}

/** Options for {@link BzImage.plan}. */
export interface BzImageLoadOptions {
  /**
   * Where to put the protected-mode kernel (default 0x100000, where the boot
   * protocol puts a bzImage and QEMU and Firecracker load it). A different
   * address needs a relocatable kernel and must be 4 KiB aligned.
   */
  readonly loadAddress?: number;
}

/**
 * A parsed and validated bzImage (Linux x86 boot protocol ≥ 2.12 with XLF_KERNEL_64: the 64-bit entry).
 *
 * `BzImage.parse` checks the header; `plan`/`load` put the protected-mode
 * kernel in guest memory. The real-mode setup code is not loaded: the 64-bit
 * boot protocol skips it, and the loader fills the zero page itself
 * ({@link BootParams}).
 */
export class BzImage {
  /** The whole file. */
  readonly bytes: Uint8Array;
  /** The decoded setup header. */
  readonly header: SetupHeader;
  /** Offset of the end of the setup header in the file (`0x202 + byte at 0x201`). */
  readonly headerEnd: number;
  /** Number of 512-byte setup sectors (0 in the file means 4). */
  readonly setupSects: number;
  /** Offset in the file where the protected-mode kernel starts: `(setupSects + 1) * 512`. */
  readonly kernelOffset: number;

  private constructor(bytes: Uint8Array, header: SetupHeader, headerEnd: number, setupSects: number) {
    this.bytes = bytes;
    this.header = header;
    this.headerEnd = headerEnd;
    this.setupSects = setupSects;
    this.kernelOffset = (setupSects + 1) * 512;
  }

  /**
   * Parses and validates a bzImage.
   *
   * @throws LoaderError `Truncated` (file shorter than the header or the
   * kernel it declares), `BadMagic` (no 0xAA55 boot flag or `HdrS`),
   * `ProtocolTooOld` (< 2.06), `Unsupported` (not a bzImage loaded high, no
   * 64-bit entry), `InvalidHeader` (kernel_alignment not a power of two,
   * cmdline_size 0).
   */
  static parse(bytes: Uint8Array): BzImage {
    const r = new Reader(bytes, "bzImage");
    if (r.u16(HDR.boot_flag, "boot_flag") !== 0xaa55) {
      throw new LoaderError("BadMagic", `not a bzImage: boot_flag at 0x1fe is ${hex(r.u16(HDR.boot_flag, "boot_flag"))}, expected 0xaa55`);
    }
    if (r.u32(HDR.header, "header") !== HDRS_MAGIC) {
      throw new LoaderError("BadMagic", `not a bzImage: no "HdrS" signature at 0x202`);
    }
    const version = r.u16(HDR.version, "version");
    if (version < MIN_BOOT_PROTOCOL) {
      throw new LoaderError(
        "ProtocolTooOld",
        `boot protocol ${version >> 8}.${(version & 0xff).toString().padStart(2, "0")} is older than 2.06`,
      );
    }
    const headerEnd = 0x202 + r.u8(0x201, "jump");
    if (headerEnd < HDR.cmdline_size + 4 || headerEnd > MAX_HEADER_END) {
      throw new LoaderError("InvalidHeader", `the setup header ends at ${hex(headerEnd)}, outside 0x23c..0x290 for protocol ≥ 2.06`);
    }
    const header = decodeSetupHeader(bytes, headerEnd);
    const setupSects = header.setup_sects === 0 ? 4 : header.setup_sects;
    const img = new BzImage(bytes, header, headerEnd, setupSects);
    r.need(img.kernelOffset, 1, `the protected-mode kernel (after ${setupSects} setup sectors)`);
    const declared = header.syssize * 16;
    if (declared > bytes.byteLength - img.kernelOffset) {
      throw new LoaderError(
        "Truncated",
        `bzImage is truncated: syssize declares ${declared} bytes of kernel but only ${bytes.byteLength - img.kernelOffset} follow the setup code`,
      );
    }
    if ((header.loadflags & LoadFlags.LoadedHigh) === 0) {
      throw new LoaderError("Unsupported", "this is a zImage (LOADED_HIGH clear in loadflags); only bzImages are supported");
    }
    if ((header.xloadflags & XLoadFlags.Kernel64) === 0) {
      throw new LoaderError("Unsupported", "the kernel has no 64-bit entry point (XLF_KERNEL_64 clear in xloadflags)");
    }
    const ka = header.kernel_alignment;
    if (ka === 0 || (ka & (ka - 1)) !== 0) {
      throw new LoaderError("InvalidHeader", `kernel_alignment ${hex(ka)} is not a power of two`);
    }
    if (header.cmdline_size === 0) {
      throw new LoaderError("InvalidHeader", "cmdline_size is 0");
    }
    if (header.init_size === 0 && version >= 0x20a) {
      throw new LoaderError("InvalidHeader", "init_size is 0");
    }
    return img;
  }

  /** Boot protocol version, e.g. `0x20f` for 2.15. */
  get version(): number {
    return this.header.version;
  }

  /** The setup header as bytes (`0x1f1` up to its declared end), to copy into the zero page. */
  get setupHeaderBytes(): Uint8Array {
    return this.bytes.subarray(HDR.setup_sects, this.headerEnd);
  }

  /** The protected-mode kernel (everything after the setup sectors). A view, not a copy. */
  get protectedModeKernel(): Uint8Array {
    return this.bytes.subarray(this.kernelOffset);
  }

  /** The compressed payload (`payload_offset`/`payload_length`, relative to the protected-mode kernel). */
  get payload(): Uint8Array {
    const k = this.protectedModeKernel;
    const off = this.header.payload_offset;
    const len = this.header.payload_length;
    if (off + len > k.byteLength) {
      throw new LoaderError("Truncated", `the payload (${len} bytes at ${hex(off)}) runs past the end of the kernel`);
    }
    return k.subarray(off, off + len);
  }

  /**
   * Works out where the kernel goes, without touching memory.
   *
   * @throws LoaderError `InvalidArgument` (unaligned or low load address),
   * `Unsupported` (moving a non-relocatable kernel), `InvalidHeader` (a
   * non-relocatable kernel whose pref_address is below 1 MiB), `Overflow`.
   */
  plan(options: BzImageLoadOptions = {}): { load: BzImageLoad; writes: GuestWrite[] } {
    const h = this.header;
    const addr = options.loadAddress ?? layout.kernel;
    if (!Number.isSafeInteger(addr) || addr < layout.kernel || addr % 4096 !== 0) {
      throw new LoaderError("InvalidArgument", `kernel load address ${hex(addr)} must be 4 KiB aligned and at least 1 MiB`);
    }
    if (addr !== layout.kernel && h.relocatable_kernel === 0) {
      throw new LoaderError("Unsupported", `the kernel is not relocatable and must be loaded at ${hex(layout.kernel)}`);
    }
    const kernel = this.protectedModeKernel;
    const ka = h.kernel_alignment;
    const pref = h.pref_address > BigInt(2 ** 52) ? 2 ** 52 : Number(h.pref_address);
    const aligned = Math.ceil(addr / ka) * ka;
    // A non-relocatable kernel runs at pref_address (protocol 2.10+) or where it was loaded.
    const runtimeStart = h.relocatable_kernel ? Math.max(aligned, pref) : pref || addr;
    if (runtimeStart < layout.kernel) {
      // It would decompress over the zero page, GDT and page tables below 1 MiB.
      throw new LoaderError("InvalidHeader", `the kernel is not relocatable and its pref_address ${hex(runtimeStart)} is below 1 MiB, where the boot structures are`);
    }
    const load: BzImageLoad = {
      loadAddress: addr,
      end: addr + kernel.byteLength,
      entry64: addr + 0x200,
      runtimeStart,
      initSize: h.init_size,
    };
    return { load, writes: [{ addr, data: kernel, what: "bzImage protected-mode kernel" }] };
  }

  /**
   * Validates, then copies the protected-mode kernel into guest memory.
   *
   * @throws LoaderError as {@link BzImage.plan}, plus `OutOfGuestMemory` /
   * `InMmioHole` when the kernel does not fit; memory is then unchanged.
   */
  load(mem: GuestMemory, options: BzImageLoadOptions = {}): BzImageLoad {
    const { load, writes } = this.plan(options);
    commitWrites(mem, writes);
    return load;
  }
}
