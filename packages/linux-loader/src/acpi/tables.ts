import { Writer, fixChecksum, hex } from "../bytes.js";
import { LoaderError } from "../error.js";
import type { GuestWrite } from "../guest-writes.js";
import { IOAPIC_ID, layout } from "../layout.js";
import { overlaps } from "../ranges.js";
import * as aml from "./aml.js";

// Table layouts: ACPI 6.5, chapter 5.2 (RSDP 5.2.5, SDT header 5.2.6,
// XSDT 5.2.8, FADT 5.2.9, MADT 5.2.12).

const OEM_ID = "TSVMM ";
const CREATOR_ID = "TSVM";
/** FADT flag HW_REDUCED_ACPI (bit 20). */
export const FADT_HW_REDUCED_ACPI = 1 << 20;
/** IA-PC boot architecture flags (FADT offset 109). */
export const IAPC_LEGACY_DEVICES = 1 << 0, IAPC_8042 = 1 << 1, IAPC_VGA_NOT_PRESENT = 1 << 2, IAPC_MSI_NOT_SUPPORTED = 1 << 3;
/** IA-PC boot architecture flag CMOS RTC Not Present (bit 5, ACPI 5.0 and later; ACPICA's ACPI_FADT_NO_CMOS_RTC). */
export const IAPC_CMOS_RTC_NOT_PRESENT = 1 << 5;
/** The CMOS register that holds the century, named by the FADT's CENTURY field when there is a CMOS RTC. */
export const CMOS_CENTURY_INDEX = 0x32;

/** HW-reduced ACPI sleep control register (SystemIO, 8 bit): SLP_TYP in bits 2-4, SLP_EN bit 5. */
export const ACPI_SLEEP_CONTROL_PORT = 0x3c0;
/** HW-reduced ACPI sleep status register (SystemIO, 8 bit): WAK_STS bit 7. */
export const ACPI_SLEEP_STATUS_PORT = 0x3c1;
/** ACPI reset register (SystemIO, 8 bit); the reset value is {@link ACPI_RESET_VALUE}. */
export const ACPI_RESET_PORT = 0x3c2;
/** What the guest writes to {@link ACPI_RESET_PORT} to reset. */
export const ACPI_RESET_VALUE = 1;
/** SLP_TYP of `\_S5` (soft off) in the DSDT. */
export const ACPI_SLP_TYP_S5 = 5;
/** FADT flag RESET_REG_SUP (bit 10). */
export const FADT_RESET_REG_SUP = 1 << 10;

/** A virtio-mmio device as the DSDT and the command line describe it. */
export interface VirtioMmioDevice {
  /** Base of the 4 KiB-or-so register window (below 4 GiB for Memory32Fixed). */
  readonly addr: number;
  /** Size of the register window (default 0x1000). */
  readonly size?: number;
  /** GSI (IOAPIC pin). */
  readonly irq: number;
  /** `_UID` in the DSDT (default: the device's index in the list). Must be unique. */
  readonly uid?: number;
}

/** Options of {@link buildAcpiTables}. */
export interface AcpiOptions {
  /** Number of vCPUs; APIC ID = index. IDs above 254 get x2APIC entries. */
  readonly cpus: number;
  /** virtio-mmio devices, announced as `LNRO0005` devices in the DSDT. */
  readonly virtioMmio?: readonly VirtioMmioDevice[];
  /** Describe COM1 (PNP0501, I/O 0x3f8-0x3ff, IRQ 4). Default true. */
  readonly com1?: boolean;
  /**
   * An i8042 keyboard controller: claimed in the FADT (IAPC_BOOT_ARCH bit 1)
   * and described in the DSDT (PNP0303, I/O 0x60 and 0x64, IRQ 1). Default true.
   */
  readonly i8042?: boolean;
  /**
   * A CMOS RTC at ports 0x70/0x71 (MC146818-compatible, century at
   * {@link CMOS_CENTURY_INDEX}): the FADT's CENTURY field names that register,
   * and the DSDT has a `PNP0B00` device with those ports and no interrupt.
   * false sets IAPC_BOOT_ARCH's {@link IAPC_CMOS_RTC_NOT_PRESENT} (and leaves
   * CENTURY 0), so the guest does not probe the ports at all. Default true.
   */
  readonly cmosRtc?: boolean;
  /**
   * HW-reduced ACPI power management: SLEEP_CONTROL_REG / SLEEP_STATUS_REG at
   * SystemIO {@link ACPI_SLEEP_CONTROL_PORT} / {@link ACPI_SLEEP_STATUS_PORT},
   * RESET_REG at {@link ACPI_RESET_PORT} with RESET_VALUE 1 and RESET_REG_SUP,
   * and `\_S5` (SLP_TYP 5) in the DSDT, so the guest can power off and reset.
   * Default true.
   */
  readonly powerManagement?: boolean;
  /** The IOAPIC's ID, 0..255 (default {@link IOAPIC_ID}, the one the MP table uses too). */
  readonly ioapicId?: number;
  /** Virtio interrupts are edge-triggered (default true, as with KVM irqfd to the IOAPIC). */
  readonly edgeInterrupts?: boolean;
  /** Where the RSDP goes; the other tables follow it (default 0xe0000). */
  readonly addr?: number;
  /** End of the area the tables may use (default 0x100000). */
  readonly limit?: number;
}

/** What {@link buildAcpiTables} produced. */
export interface AcpiTables {
  /** Address of the RSDP (for `boot_params.acpi_rsdp_addr` or PVH `rsdp_paddr`). */
  readonly rsdpAddr: number;
  /** Each table with its address, RSDP first. */
  readonly writes: GuestWrite[];
  /** The tables by signature, for tests and tools (`"RSDP"`, `"XSDT"`, `"FACP"`, `"APIC"`, `"DSDT"`). */
  readonly tables: Readonly<Record<"RSDP" | "XSDT" | "FACP" | "APIC" | "DSDT", Uint8Array>>;
}

/** A System Description Table: 36-byte header then `body`, checksum set. */
function sdt(signature: string, revision: number, body: Uint8Array): Uint8Array {
  const w = new Writer(36 + body.byteLength);
  w.ascii(0, signature).u32(4, 36 + body.byteLength).u8(8, revision).ascii(10, OEM_ID).ascii(16, `TSVM${signature}`).u32(24, 1).ascii(28, CREATOR_ID).u32(32, 1);
  w.set(36, body);
  fixChecksum(w.bytes, 9);
  return w.bytes;
}

/** The DSDT body (AML) for the given devices. @throws LoaderError `InvalidArgument`, `TooManyEntries`. */
export function dsdtAml(options: Pick<AcpiOptions, "virtioMmio" | "com1" | "edgeInterrupts" | "i8042" | "cmosRtc" | "powerManagement">): Uint8Array {
  const devs: aml.Aml[] = [];
  if (options.i8042 ?? true) {
    devs.push(
      aml.device("KBD_", [
        aml.name("_HID", aml.eisaId("PNP0303")),
        aml.name("_CRS", aml.resourceTemplate([aml.io(0x60, 0x60, 1, 1), aml.io(0x64, 0x64, 1, 1), aml.irqNoFlags([1])])),
      ]),
    );
  }
  if (options.cmosRtc ?? true) {
    // The I/O ports only, no IRQ: the RTC does not interrupt. Without this device Linux registers
    // the RTC itself with a fixed IRQ 8, which has no descriptor without a legacy PIC (split
    // irqchip), and its rtc_cmos probe fails; through PNP it binds without an interrupt.
    devs.push(
      aml.device("RTC_", [
        aml.name("_HID", aml.eisaId("PNP0B00")),
        aml.name("_CRS", aml.resourceTemplate([aml.io(0x70, 0x70, 1, 2)])),
      ]),
    );
  }
  if (options.com1 ?? true) {
    devs.push(
      aml.device("COM1", [
        aml.name("_HID", aml.eisaId("PNP0501")),
        aml.name("_UID", aml.integer(1)), // as QEMU's DSDT: COM1 is _UID 1
        aml.name("_CRS", aml.resourceTemplate([aml.io(0x3f8, 0x3f8, 0, 8), aml.irqNoFlags([4])])),
      ]),
    );
  }
  const vm = options.virtioMmio ?? [];
  if (vm.length > 0x1000) throw new LoaderError("TooManyEntries", `${vm.length} virtio-mmio devices; at most 4096 names V000..VFFF`);
  const uids = vm.map((d, i) => d.uid ?? i);
  if (new Set(uids).size !== uids.length) throw new LoaderError("InvalidArgument", `virtio-mmio _UIDs must be unique, got ${uids.join(", ")}`);
  vm.forEach((d, i) => {
    devs.push(
      aml.device(`V${i.toString(16).toUpperCase().padStart(3, "0")}`, [
        aml.name("_HID", aml.string("LNRO0005")),
        aml.name("_UID", aml.integer(uids[i]!)),
        aml.name("_CCA", aml.integer(1)),
        aml.name(
          "_CRS",
          aml.resourceTemplate([aml.memory32Fixed(d.addr, d.size ?? 0x1000), aml.extendedInterrupt([d.irq], { edge: options.edgeInterrupts ?? true })]),
        ),
      ]),
    );
  });
  const root: aml.Aml[] = [aml.scope("\\_SB_", devs)];
  if (options.powerManagement ?? true) {
    // \_S5: SLP_TYPa, SLP_TYPb, two reserved (ACPI 6.5, 7.4.2). HW-reduced ACPI uses SLP_TYPa only.
    root.push(aml.name("\\_S5_", aml.pkg([aml.integer(ACPI_SLP_TYP_S5), aml.integer(0), aml.integer(0), aml.integer(0)])));
  }
  return aml.termList(root);
}

/** GSIs the MADT's one IOAPIC (GSI base 0) has: KVM's in-kernel IOAPIC has 24 pins. */
export const IOAPIC_PINS = 24;

/** Bounds for {@link checkVirtioMmio}. */
export interface VirtioMmioLimits {
  /** IRQs must be below this (default {@link IOAPIC_PINS}). */
  readonly irqLimit?: number;
  /** Windows must start at or above this (default: the start of the 32-bit MMIO hole, 3 GiB). */
  readonly windowStart?: number;
  /** Windows must end at or below this (default: the end of the 32-bit MMIO hole, 4 GiB). */
  readonly windowEnd?: number;
}

/**
 * Checks a virtio-mmio device list: each window a positive size inside
 * `[windowStart, windowEnd)` (default the 32-bit MMIO hole) and clear of the
 * IOAPIC and local APIC pages, no two windows overlapping, and each IRQ below
 * `irqLimit` (default 24, the pins of KVM's in-kernel IOAPIC, the one IOAPIC
 * our MADT and MP table describe). Devices may share an IRQ (virtio-mmio
 * requests it shared).
 *
 * @throws LoaderError `InvalidArgument` naming the first bad device.
 */
export function checkVirtioMmio(devices: readonly VirtioMmioDevice[], limits: VirtioMmioLimits = {}): void {
  const irqLimit = limits.irqLimit ?? IOAPIC_PINS;
  const lo = limits.windowStart ?? layout.mmioHoleStart;
  const hi = limits.windowEnd ?? layout.mmioHoleEnd;
  const fixed = [
    { start: layout.ioapic, end: layout.ioapic + 0x1000, what: "the IOAPIC" },
    { start: layout.lapic, end: layout.lapic + 0x1000, what: "the local APIC" },
  ];
  const seen: { start: number; end: number; what: string }[] = [];
  devices.forEach((d, i) => {
    const size = d.size ?? 0x1000;
    const what = `virtio-mmio device ${i} (${Number.isFinite(d.addr) ? hex(d.addr) : String(d.addr)}, size ${String(size)}, IRQ ${String(d.irq)})`;
    if (!Number.isSafeInteger(d.addr) || !Number.isSafeInteger(size) || size <= 0 || d.addr < lo || d.addr + size > hi) {
      throw new LoaderError("InvalidArgument", `${what}: the register window must have a positive size and lie inside ${hex(lo)}..${hex(hi)}`);
    }
    if (!Number.isInteger(d.irq) || d.irq < 0 || d.irq >= irqLimit) {
      throw new LoaderError("InvalidArgument", `${what}: the IRQ must be an IOAPIC pin 0..${irqLimit - 1}`);
    }
    const r = { start: d.addr, end: d.addr + size, what: `virtio-mmio device ${i}` };
    for (const o of [...fixed, ...seen]) {
      if (overlaps(r.start, r.end, o.start, o.end)) throw new LoaderError("InvalidArgument", `${what} overlaps ${o.what} at ${hex(o.start)}..${hex(o.end)}`);
    }
    seen.push(r);
  });
}

function gasIo(w: Writer, o: number, port?: number): void {
  // An empty Generic Address Structure (5.2.3.2) is all zero. A port: SystemIO (1), 8 bits at offset 0, byte access (1).
  if (port === undefined) w.u64(o, 0).u32(o + 8, 0);
  else w.u8(o, 1).u8(o + 1, 8).u8(o + 2, 0).u8(o + 3, 1).u64(o + 4, port);
}

/**
 * Builds RSDP (revision 2), XSDT, FADT (revision 6.5, HW_REDUCED_ACPI, DSDT
 * and X_DSDT set), MADT (a Local APIC entry per CPU with APIC ID ≤ 254, a
 * Local x2APIC entry above, the IOAPIC (ID `ioapicId`, default {@link IOAPIC_ID} as in the MP
 * table) at 0xfec00000 with GSI base 0, a Local APIC NMI on LINT1 for all processors and,
 * when there are x2APIC entries, a Local x2APIC NMI on LINT1 for all of them) and a DSDT with COM1, the i8042, the virtio-mmio devices and `\_S5`; with
 * `powerManagement` the FADT names the sleep control/status and reset registers.
 * All checksums are set.
 *
 * @throws LoaderError `InvalidArgument` (no CPUs; an IOAPIC ID outside 0..255; a device window outside 32
 * bits, of size 0 or overlapping another or the IOAPIC / local APIC), `TooManyEntries` (the tables do not fit between
 * `addr` and `limit`; a CPU count too large for the MADT is refused before
 * anything is built).
 */
export function buildAcpiTables(options: AcpiOptions): AcpiTables {
  const { cpus } = options;
  const base = options.addr ?? layout.acpi;
  const limit = options.limit ?? layout.acpiEnd;
  if (!Number.isSafeInteger(limit)) throw new LoaderError("InvalidArgument", `ACPI tables limit ${String(limit)} is not an address`);
  if (!Number.isSafeInteger(cpus) || cpus < 1 || cpus > 0xffff_ffff) throw new LoaderError("InvalidArgument", `ACPI needs at least one CPU, got ${cpus}`);
  if (!Number.isSafeInteger(base) || base % 16 !== 0 || base < 0 || base + 36 > 2 ** 32) {
    throw new LoaderError("InvalidArgument", `ACPI tables address ${hex(base)} must be 16-byte aligned and below 4 GiB`);
  }
  // The MADT alone (header, LAPIC address and flags, a Local APIC entry per CPU
  // up to ID 254 and a 16-byte x2APIC entry above, IOAPIC, LINT1 NMI) must fit:
  // checked before building it, so that a huge CPU count fails at once instead
  // of allocating millions of entries.
  const x2apics = Math.max(cpus - 255, 0);
  const madtSize = 36 + 8 + Math.min(cpus, 255) * 8 + x2apics * 16 + 12 + 6 + (x2apics > 0 ? 12 : 0);
  if (base + madtSize > limit) {
    throw new LoaderError("TooManyEntries", `the MADT for ${cpus} CPUs is ${madtSize} bytes; only ${limit - base} bytes are available from ${hex(base)}`);
  }
  // Any 32-bit window and GSI here (a VMM may describe another machine's
  // devices, as the QEMU microvm comparison does); planLinuxBoot checks ours.
  checkVirtioMmio(options.virtioMmio ?? [], { irqLimit: 2 ** 32, windowStart: 0, windowEnd: 2 ** 32 });
  const ioapicId = options.ioapicId ?? IOAPIC_ID;
  if (!Number.isInteger(ioapicId) || ioapicId < 0 || ioapicId > 255) throw new LoaderError("InvalidArgument", `MADT IOAPIC ID ${String(ioapicId)} must be 0..255`);
  const dsdt = sdt("DSDT", 2, dsdtAml(options));

  // MADT
  const madtEntries: Uint8Array[] = [];
  for (let i = 0; i < cpus; i++) {
    if (i <= 254) {
      madtEntries.push(new Writer(8).u8(0, 0).u8(1, 8).u8(2, i & 0xff).u8(3, i).u32(4, 1).bytes);
    } else {
      madtEntries.push(new Writer(16).u8(0, 9).u8(1, 16).u32(4, i).u32(8, 1).u32(12, i).bytes);
    }
  }
  // I/O APIC (type 1, 12 bytes): ID, reserved, address, GSI base.
  madtEntries.push(new Writer(12).u8(0, 1).u8(1, 12).u8(2, ioapicId).u32(4, layout.ioapic).u32(8, 0).bytes);
  // Local APIC NMI (type 4, 6 bytes): processor UID 0xff (all), flags 0 (conforming), LINT1.
  madtEntries.push(new Writer(6).u8(0, 4).u8(1, 6).u8(2, 0xff).u16(3, 0).u8(5, 1).bytes);
  if (x2apics > 0) {
    // Local x2APIC NMI (type 0xA, 12 bytes; ACPI 6.5 5.2.12.13): flags 0, processor UID
    // 0xffffffff (all), LINT1, 3 reserved. The Local APIC NMI above only reaches processors
    // with a Local APIC entry (an 8-bit UID); those with x2APIC entries need this one.
    madtEntries.push(new Writer(12).u8(0, 0xa).u8(1, 12).u16(2, 0).u32(4, 0xffff_ffff).u8(8, 1).bytes);
  }
  const madtBody = new Writer(8 + madtEntries.reduce((n, e) => n + e.byteLength, 0));
  madtBody.u32(0, layout.lapic).u32(4, 0);
  let o = 8;
  for (const e of madtEntries) {
    madtBody.set(o, e);
    o += e.byteLength;
  }
  const madt = sdt("APIC", 5, madtBody.bytes);

  // Addresses: RSDP, XSDT, FADT, MADT, DSDT, each 16-byte aligned.
  const align = (n: number): number => Math.ceil(n / 16) * 16;
  const xsdtAddr = align(base + 36);
  const xsdtLen = 36 + 8 * 2;
  const fadtAddr = align(xsdtAddr + xsdtLen);
  const fadtLen = 276;
  const madtAddr = align(fadtAddr + fadtLen);
  const dsdtAddr = align(madtAddr + madt.byteLength);
  const end = dsdtAddr + dsdt.byteLength;
  if (end > limit || end > 2 ** 32) {
    throw new LoaderError("TooManyEntries", `the ACPI tables need ${end - base} bytes from ${hex(base)}; only ${limit - base} are available`);
  }

  const fadtBody = new Writer(fadtLen - 36);
  const f = (off: number): number => off - 36; // offsets below are from the table start (ACPI 6.5 table 5.9)
  fadtBody.u32(f(40), dsdtAddr);
  const cmos = options.cmosRtc ?? true;
  if (cmos) fadtBody.u8(f(108), CMOS_CENTURY_INDEX); // CENTURY
  fadtBody.u16(f(109), IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED | ((options.i8042 ?? true) ? IAPC_8042 : 0) | (cmos ? 0 : IAPC_CMOS_RTC_NOT_PRESENT));
  const pm = options.powerManagement ?? true;
  fadtBody.u32(f(112), FADT_HW_REDUCED_ACPI | (pm ? FADT_RESET_REG_SUP : 0));
  fadtBody.u8(f(131), 5); // FADT minor version: ACPI 6.5
  fadtBody.u64(f(140), dsdtAddr); // X_DSDT
  for (const g of [116, 148, 160, 172, 184, 196, 208, 220, 232, 244, 256]) gasIo(fadtBody, f(g));
  if (pm) {
    gasIo(fadtBody, f(116), ACPI_RESET_PORT); // RESET_REG
    fadtBody.u8(f(128), ACPI_RESET_VALUE);
    gasIo(fadtBody, f(244), ACPI_SLEEP_CONTROL_PORT); // SLEEP_CONTROL_REG
    gasIo(fadtBody, f(256), ACPI_SLEEP_STATUS_PORT); // SLEEP_STATUS_REG
  }
  const fadt = sdt("FACP", 6, fadtBody.bytes);

  const xsdtBody = new Writer(16).u64(0, fadtAddr).u64(8, madtAddr);
  const xsdt = sdt("XSDT", 1, xsdtBody.bytes);

  const rsdp = new Writer(36).ascii(0, "RSD PTR ").ascii(9, OEM_ID).u8(15, 2).u32(16, 0).u32(20, 36).u64(24, xsdtAddr);
  fixChecksum(rsdp.bytes, 8, 0, 20);
  fixChecksum(rsdp.bytes, 32, 0, 36);

  return {
    rsdpAddr: base,
    writes: [
      { addr: base, data: rsdp.bytes, what: "ACPI RSDP" },
      { addr: xsdtAddr, data: xsdt, what: "ACPI XSDT" },
      { addr: fadtAddr, data: fadt, what: "ACPI FADT" },
      { addr: madtAddr, data: madt, what: "ACPI MADT" },
      { addr: dsdtAddr, data: dsdt, what: "ACPI DSDT" },
    ],
    tables: { RSDP: rsdp.bytes, XSDT: xsdt, FACP: fadt, APIC: madt, DSDT: dsdt },
  };
}
