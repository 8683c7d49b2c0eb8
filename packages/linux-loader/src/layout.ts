/**
 * The guest physical memory layout this package uses. [DESIGN.md](../DESIGN.md) explains each
 * choice. All values are guest physical addresses.
 *
 * ```
 * 0x0000_0000  real-mode IVT / BDA (left zero)
 * 0x0000_0500  GDT (5 entries: null, null, code 0x10, data 0x18, TSS 0x20) and, at 0x530, an empty IDT
 * 0x0000_6000  PVH hvm_start_info, module list at 0x6040, memory map at 0x6100
 * 0x0000_7000  zero page (boot_params)
 * 0x0000_8ff0  initial stack pointer (grows down)
 * 0x0000_9000  PML4, 0xa000 PDPT, 0xb000..0xefff four page directories (identity map of 4 GiB, 2 MiB pages)
 * 0x0002_0000  kernel command line (up to 64 KiB)
 * 0x0009_fc00  MP floating pointer + configuration table (EBDA; e820 reserved)
 * 0x000a_0000  legacy VGA / option-ROM window (no RAM entry in e820)
 * 0x000e_0000  ACPI RSDP, then XSDT, FADT, MADT, DSDT (e820 reserved)
 * 0x0010_0000  kernel (bzImage protected-mode code at 1 MiB; an ELF vmlinux at its p_paddr)
 *   ...        RAM; the initrd goes as high as possible below min(initrd_addr_max, end of low RAM)
 * 0xc000_0000  32-bit MMIO hole: virtio-mmio devices from 0xd000_0000, IOAPIC 0xfec0_0000, LAPIC 0xfee0_0000
 * 0x1_0000_0000 high RAM (guest memory beyond 3 GiB)
 * ```
 */
export const layout = {
  gdt: 0x500,
  idt: 0x530,
  pvhStartInfo: 0x6000,
  pvhModlist: 0x6040,
  pvhMemmap: 0x6100,
  zeroPage: 0x7000,
  stackPointer: 0x8ff0,
  pml4: 0x9000,
  pdpt: 0xa000,
  pd: 0xb000,
  cmdline: 0x20000,
  cmdlineMax: 0x10000,
  ebda: 0x9fc00,
  mptable: 0x9fc00,
  legacyHoleStart: 0xa0000,
  acpi: 0xe0000,
  acpiEnd: 0x100000,
  kernel: 0x100000,
  mmioHoleStart: 0xc000_0000,
  mmioHoleEnd: 0x1_0000_0000,
  virtioMmioBase: 0xd000_0000,
  ioapic: 0xfec0_0000,
  lapic: 0xfee0_0000,
  highRam: 0x1_0000_0000,
} as const;

/**
 * The IOAPIC's ID in both the MP table and the MADT (they must agree: Linux matches the
 * MP table's I/O interrupt entries and the MADT's interrupt overrides to an IOAPIC by
 * this ID). 0, the value KVM's in-kernel IOAPIC resets its ID register to, as QEMU's MADT.
 */
export const IOAPIC_ID = 0;

/** First address of the 32-bit MMIO hole (3 GiB). */
export const MMIO_HOLE_START = layout.mmioHoleStart;
/** First address after the 32-bit MMIO hole (4 GiB). */
export const MMIO_HOLE_END = layout.mmioHoleEnd;

/** A range of guest RAM. */
export interface RamRegion {
  readonly start: number;
  readonly size: number;
}

/**
 * Where `memSize` bytes of guest RAM go: from 0 up to the MMIO hole, and the
 * rest from 4 GiB. A VMM creates its guest memory regions from this list.
 *
 * @throws LoaderError `InvalidArgument` when `memSize` is not a positive integer
 * of whole pages, or is below 2 MiB (the fixed low layout needs 1 MiB + the kernel).
 */
export function ramRegions(memSize: number): RamRegion[] {
  if (!Number.isSafeInteger(memSize) || memSize < 2 * 1024 * 1024 || memSize % 4096 !== 0 || memSize > 2 ** 52 - MMIO_HOLE_END) {
    throw new LoaderError("InvalidArgument", `memory size ${memSize} must be a whole number of 4 KiB pages, at least 2 MiB`);
  }
  const low = Math.min(memSize, MMIO_HOLE_START);
  const out: RamRegion[] = [{ start: 0, size: low }];
  if (memSize > low) out.push({ start: MMIO_HOLE_END, size: memSize - low });
  return out;
}

import { LoaderError } from "./error.js";
