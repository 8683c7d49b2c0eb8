import { Writer, fixChecksum, hex } from "./bytes.js";
import { LoaderError } from "./error.js";
import type { GuestWrite } from "./guest-writes.js";
import { IOAPIC_ID, layout } from "./layout.js";

// Intel MultiProcessor Specification 1.4, chapter 4 (MP configuration table).
const FPS_SIZE = 16;
const HEADER_SIZE = 44;
const CPU_ENTRY = 20;
const SMALL_ENTRY = 8;
const APIC_VERSION = 0x14;
const IOAPIC_VERSION = 0x11;
const CPU_SIGNATURE = 0x600; // family 6, as Firecracker and QEMU report
const CPU_FEATURES = 0x201; // FPU | APIC
/** Bytes the EBDA gives the MP table in our layout (0x9fc00..0xa0000). */
export const MPTABLE_MAX_SIZE = layout.legacyHoleStart - layout.mptable;

/** Options of {@link buildMpTable}. */
export interface MpTableOptions {
  /** Number of vCPUs; APIC IDs are 0..cpus-1, CPU 0 is the bootstrap processor. */
  readonly cpus: number;
  /** ISA IRQs routed 1:1 to IOAPIC pins 0..irqs-1 (default 24). */
  readonly irqs?: number;
  /** Where the floating pointer goes (default 0x9fc00, the EBDA); the config table follows it. */
  readonly addr?: number;
  /** The IOAPIC's ID, 0..254 (default {@link IOAPIC_ID}, the one the MADT uses too). */
  readonly ioapicId?: number;
}

/**
 * Builds an MP floating pointer and MP configuration table (spec 1.4):
 * one processor entry per vCPU, an ISA bus, the IOAPIC at 0xfec00000 (ID
 * `ioapicId`, default {@link IOAPIC_ID} as in the MADT), an I/O interrupt entry per ISA IRQ, ExtINT on LINT0 and NMI on
 * LINT1; both checksums set. For kernels that do not read ACPI.
 *
 * @throws LoaderError `InvalidArgument` (no CPUs, more than 24 IRQs, an IOAPIC ID
 * outside 0..254, an address that is not 16-byte aligned or puts the table above 4 GiB),
 * `TooManyEntries` (APIC IDs above 254 cannot be expressed, or the table
 * does not fit the 1 KiB EBDA slot).
 */
export function buildMpTable(options: MpTableOptions): GuestWrite {
  const { cpus } = options;
  const irqs = options.irqs ?? 24;
  const addr = options.addr ?? layout.mptable;
  if (!Number.isSafeInteger(cpus) || cpus < 1) throw new LoaderError("InvalidArgument", `MP table needs at least one CPU, got ${cpus}`);
  if (!Number.isSafeInteger(irqs) || irqs < 0 || irqs > 24) throw new LoaderError("InvalidArgument", `MP table IRQ count ${irqs} must be 0..24`);
  const ioapicId = options.ioapicId ?? IOAPIC_ID;
  if (!Number.isInteger(ioapicId) || ioapicId < 0 || ioapicId > 254) throw new LoaderError("InvalidArgument", `MP table IOAPIC ID ${String(ioapicId)} must be 0..254`);
  if (cpus > 254) throw new LoaderError("TooManyEntries", `the MP table's 8-bit APIC IDs cannot describe ${cpus} CPUs (and the IOAPIC); use ACPI`);
  const entries = cpus + 1 + 1 + irqs + 2;
  const size = FPS_SIZE + HEADER_SIZE + cpus * CPU_ENTRY + (entries - cpus) * SMALL_ENTRY;
  if (addr === layout.mptable && size > MPTABLE_MAX_SIZE) {
    throw new LoaderError("TooManyEntries", `the MP table for ${cpus} CPUs is ${size} bytes; the EBDA slot holds ${MPTABLE_MAX_SIZE}`);
  }
  // The floating pointer holds the configuration table's 32-bit physical address.
  if (!Number.isSafeInteger(addr) || addr < 0 || addr % 16 !== 0 || addr + size > 2 ** 32) {
    throw new LoaderError("InvalidArgument", `MP table address ${String(addr)} must be 16-byte aligned with the ${size}-byte table below 4 GiB`);
  }
  const w = new Writer(size);
  const cfg = FPS_SIZE;
  const cfgAddr = addr + FPS_SIZE;
  // Floating pointer structure.
  w.ascii(0, "_MP_").u32(4, cfgAddr).u8(8, 1).u8(9, 4);
  // Configuration table header; length and count filled below.
  w.ascii(cfg, "PCMP").u8(cfg + 6, 4).ascii(cfg + 8, "TSVMM   ").ascii(cfg + 16, "000000000000").u32(cfg + 36, layout.lapic);
  let o = cfg + HEADER_SIZE;
  for (let i = 0; i < cpus; i++) {
    w.u8(o, 0).u8(o + 1, i).u8(o + 2, APIC_VERSION).u8(o + 3, 1 | (i === 0 ? 2 : 0)).u32(o + 4, CPU_SIGNATURE).u32(o + 8, CPU_FEATURES);
    o += CPU_ENTRY;
  }
  w.u8(o, 1).u8(o + 1, 0).ascii(o + 2, "ISA   ");
  o += SMALL_ENTRY;
  w.u8(o, 2).u8(o + 1, ioapicId).u8(o + 2, IOAPIC_VERSION).u8(o + 3, 1).u32(o + 4, layout.ioapic);
  o += SMALL_ENTRY;
  for (let irq = 0; irq < irqs; irq++) {
    // type 3: I/O interrupt, INT, conforming polarity/trigger, ISA bus 0, source irq -> IOAPIC pin irq
    w.u8(o, 3).u8(o + 1, 0).u16(o + 2, 0).u8(o + 4, 0).u8(o + 5, irq).u8(o + 6, ioapicId).u8(o + 7, irq);
    o += SMALL_ENTRY;
  }
  // type 4: local interrupts, to every local APIC (0xff): ExtINT on LINT0, NMI on LINT1.
  w.u8(o, 4).u8(o + 1, 3).u16(o + 2, 0).u8(o + 4, 0).u8(o + 5, 0).u8(o + 6, 0xff).u8(o + 7, 0);
  o += SMALL_ENTRY;
  w.u8(o, 4).u8(o + 1, 1).u16(o + 2, 0).u8(o + 4, 0).u8(o + 5, 0).u8(o + 6, 0xff).u8(o + 7, 1);
  o += SMALL_ENTRY;
  w.u16(cfg + 4, o - cfg).u16(cfg + 34, entries);
  fixChecksum(w.bytes, cfg + 7, cfg, o);
  fixChecksum(w.bytes, 10, 0, FPS_SIZE);
  return { addr, data: w.bytes, what: `MP table at ${hex(addr)}` };
}
