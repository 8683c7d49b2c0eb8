import { describe, expect, it } from "vitest";
import { byteSum } from "../bytes.js";
import * as aml from "./aml.js";
import { IOAPIC_ID } from "../layout.js";
import { FADT_HW_REDUCED_ACPI, IAPC_CMOS_RTC_NOT_PRESENT, buildAcpiTables } from "./tables.js";

const hexs = (b: Uint8Array): string => Buffer.from(b).toString("hex");

describe("AML encoder", () => {
  it("encodes PkgLength in 1-4 bytes, counting itself", () => {
    expect([...aml.pkgLength(0)]).toEqual([1]);
    expect([...aml.pkgLength(62)]).toEqual([63]);
    expect([...aml.pkgLength(63)]).toEqual([0x40 | (65 & 0xf), 65 >> 4]);
    expect([...aml.pkgLength(0xffd)]).toEqual([0x4f, 0xff]);
    expect([...aml.pkgLength(0xffe)]).toEqual([0x81, 0x00, 0x01]); // total 0x1001 needs 3 bytes
    expect(aml.pkgLength(0x100000).byteLength).toBe(4);
    expect(() => aml.pkgLength(2 ** 28)).toThrow();
  });

  it("encodes integers with the shortest prefix", () => {
    expect(hexs(aml.integer(0))).toBe("00");
    expect(hexs(aml.integer(1))).toBe("01");
    expect(hexs(aml.integer(0x12))).toBe("0a12");
    expect(hexs(aml.integer(0x1234))).toBe("0b3412");
    expect(hexs(aml.integer(0xd0000000))).toBe("0c000000d0");
    expect(hexs(aml.integer(0x1_0000_0000n))).toBe("0e0000000001000000");
    expect(() => aml.integer(-1)).toThrow();
  });

  it("compresses EISA IDs as ASL's EisaId() does", () => {
    expect(hexs(aml.eisaId("PNP0501"))).toBe("0c41d00501");
    expect(hexs(aml.eisaId("PNP0A03"))).toBe("0c41d00a03");
    expect(() => aml.eisaId("pnp0501")).toThrow();
  });

  it("encodes names, strings and resource descriptors", () => {
    expect(hexs(aml.nameString("\\_SB_.COM1"))).toBe("5c2e5f53425f434f4d31");
    expect(hexs(aml.nameString("_HID"))).toBe("5f484944");
    expect(hexs(aml.nameString("AB"))).toBe("41425f5f");
    expect(() => aml.nameString("1ABC")).toThrow();
    expect(hexs(aml.string("LNRO0005"))).toBe("0d4c4e524f3030303500");
    expect(hexs(aml.io(0x3f8, 0x3f8, 0, 8))).toBe("4701f803f8030008");
    expect(hexs(aml.irqNoFlags([4]))).toBe("221000");
    expect(hexs(aml.memory32Fixed(0xd0000000, 0x1000))).toBe("86090001000000d000100000");
    expect(hexs(aml.extendedInterrupt([5]))).toBe("890600030105000000");
    expect(hexs(aml.extendedInterrupt([5], { edge: false }))).toBe("890600010105000000");
  });
});

describe("buildAcpiTables", () => {
  const t = buildAcpiTables({ cpus: 2, virtioMmio: [{ addr: 0xd0000000, irq: 5 }, { addr: 0xd0001000, irq: 6 }] });
  const at = (sig: string): { addr: number; data: Uint8Array } => t.writes.find((w) => w.what.endsWith(sig))!;

  it("sets every checksum", () => {
    expect(byteSum(t.tables.RSDP, 0, 20)).toBe(0);
    expect(byteSum(t.tables.RSDP, 0, 36)).toBe(0);
    for (const sig of ["XSDT", "FACP", "APIC", "DSDT"] as const) {
      const b = t.tables[sig];
      expect(String.fromCharCode(...b.subarray(0, 4))).toBe(sig);
      expect(new DataView(b.buffer).getUint32(4, true)).toBe(b.byteLength);
      expect(byteSum(b)).toBe(0);
    }
  });

  it("links RSDP → XSDT → FADT, MADT and FADT → DSDT", () => {
    const r = new DataView(t.tables.RSDP.buffer);
    expect(String.fromCharCode(...t.tables.RSDP.subarray(0, 8))).toBe("RSD PTR ");
    expect(t.tables.RSDP[15]).toBe(2);
    expect(Number(r.getBigUint64(24, true))).toBe(at("XSDT").addr);
    const x = new DataView(t.tables.XSDT.buffer);
    expect(Number(x.getBigUint64(36, true))).toBe(at("FADT").addr);
    expect(Number(x.getBigUint64(44, true))).toBe(at("MADT").addr);
    const f = new DataView(t.tables.FACP.buffer);
    expect(t.tables.FACP.byteLength).toBe(276);
    expect(f.getUint32(112, true) & FADT_HW_REDUCED_ACPI).toBe(FADT_HW_REDUCED_ACPI);
    expect(Number(f.getBigUint64(140, true))).toBe(at("DSDT").addr);
    expect(f.getUint32(40, true)).toBe(at("DSDT").addr);
    expect(t.rsdpAddr).toBe(0xe0000);
    for (const w of t.writes) expect(w.addr % 16).toBe(0);
    expect(Math.max(...t.writes.map((w) => w.addr + w.data.byteLength))).toBeLessThanOrEqual(0x100000);
  });

  it("names the sleep control, sleep status and reset registers in the FADT (SystemIO, 8 bit), with RESET_REG_SUP", () => {
    const f = new DataView(t.tables.FACP.buffer);
    const gas = (o: number): number[] => [f.getUint8(o), f.getUint8(o + 1), f.getUint8(o + 2), f.getUint8(o + 3), Number(f.getBigUint64(o + 4, true))];
    expect(gas(116)).toEqual([1, 8, 0, 1, 0x3c2]);
    expect(f.getUint8(128)).toBe(1);
    expect(gas(244)).toEqual([1, 8, 0, 1, 0x3c0]);
    expect(gas(256)).toEqual([1, 8, 0, 1, 0x3c1]);
    expect(f.getUint32(112, true) & (1 << 10)).toBe(1 << 10);
    expect(f.getUint16(109, true) & 2).toBe(2); // IAPC_8042, backed by PNP0303 in the DSDT
    const off = buildAcpiTables({ cpus: 1, powerManagement: false, i8042: false });
    const g = new DataView(off.tables.FACP.buffer);
    expect([g.getUint32(112, true) & (1 << 10), g.getUint8(244), g.getUint8(116), g.getUint16(109, true) & 2]).toEqual([0, 0, 0, 0]);
    const d = Buffer.from(off.tables.DSDT).toString("latin1");
    expect(d).not.toContain("_S5_");
    expect(d).not.toContain("KBD_");
  });

  it("claims a CMOS RTC by default (CENTURY names register 0x32, IAPC_BOOT_ARCH bit 5 clear) and sets CMOS RTC Not Present without one", () => {
    const on = new DataView(t.tables.FACP.buffer);
    expect([on.getUint8(108), on.getUint16(109, true) & (1 << 5)]).toEqual([0x32, 0]);
    expect(IAPC_CMOS_RTC_NOT_PRESENT).toBe(1 << 5);
    const offTables = buildAcpiTables({ cpus: 1, cmosRtc: false });
    const off = new DataView(offTables.tables.FACP.buffer);
    expect([off.getUint8(108), off.getUint16(109, true) & (1 << 5)]).toEqual([0, 1 << 5]);
    expect(off.getUint16(109, true) & ~(1 << 5)).toBe(on.getUint16(109, true)); // only that bit differs
    expect(byteSum(offTables.tables.FACP)).toBe(0);
    expect(Buffer.from(t.tables.DSDT).toString("latin1")).toContain("RTC_");
    expect(Buffer.from(offTables.tables.DSDT).toString("latin1")).not.toContain("RTC_");
  });

  /** The MADT's interrupt controller structures, decoded from the bytes (ACPI 6.5 5.2.12). */
  const madtEntries = (m: Uint8Array): { type: number; bytes: Uint8Array }[] => {
    const out: { type: number; bytes: Uint8Array }[] = [];
    for (let o = 44; o < m.byteLength; o += m[o + 1]!) {
      expect(m[o + 1]).toBeGreaterThan(1);
      out.push({ type: m[o]!, bytes: m.subarray(o, o + m[o + 1]!) });
    }
    return out;
  };

  it("with x2APIC IDs (≥ 255) adds one Local x2APIC NMI (type 0xA) for all processors on LINT1", () => {
    const m = buildAcpiTables({ cpus: 300 }).tables.APIC;
    const e = madtEntries(m);
    const x2 = e.filter((x) => x.type === 9).map((x) => new DataView(x.bytes.buffer, x.bytes.byteOffset, x.bytes.byteLength));
    expect(x2.map((d) => d.getUint32(4, true))).toEqual(Array.from({ length: 45 }, (_, i) => 255 + i)); // x2APIC IDs
    expect(x2.every((d) => d.byteLength === 16 && d.getUint32(8, true) === 1)).toBe(true); // enabled
    const nmi = e.filter((x) => x.type === 0xa);
    expect(nmi).toHaveLength(1);
    const d = new DataView(nmi[0]!.bytes.buffer, nmi[0]!.bytes.byteOffset, 12);
    expect(nmi[0]!.bytes.byteLength).toBe(12);
    expect({ flags: d.getUint16(2, true), uid: d.getUint32(4, true), lint: d.getUint8(8), reserved: [...nmi[0]!.bytes.subarray(9, 12)] })
      .toEqual({ flags: 0, uid: 0xffff_ffff, lint: 1, reserved: [0, 0, 0] });
    // the xAPIC NMI entry stays for the processors with 8-bit IDs
    const lnmi = e.filter((x) => x.type === 4);
    expect(lnmi.map((x) => [x.bytes[2], x.bytes[5]])).toEqual([[0xff, 1]]);
    expect(byteSum(m)).toBe(0);
    // 255 CPUs (IDs 0..254) need no x2APIC structures at all
    expect(madtEntries(buildAcpiTables({ cpus: 255 }).tables.APIC).filter((x) => x.type === 9 || x.type === 0xa)).toEqual([]);
    expect(madtEntries(buildAcpiTables({ cpus: 256 }).tables.APIC).filter((x) => x.type === 0xa)).toHaveLength(1);
  });

  it("gives the IOAPIC the ID of IOAPIC_ID (as the MP table does), or the one asked for", () => {
    const ioapic = (m: Uint8Array) => madtEntries(m).filter((x) => x.type === 1).map((x) => x.bytes[2]);
    expect(ioapic(buildAcpiTables({ cpus: 4 }).tables.APIC)).toEqual([IOAPIC_ID]);
    expect(ioapic(buildAcpiTables({ cpus: 4, ioapicId: 9 }).tables.APIC)).toEqual([9]);
    expect(() => buildAcpiTables({ cpus: 4, ioapicId: 256 })).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
  });

  it("uses Local APIC entries up to ID 254 and x2APIC entries above", () => {
    const m = buildAcpiTables({ cpus: 300 }).tables.APIC;
    const types: number[] = [];
    for (let o = 44; o < m.byteLength; o += m[o + 1]!) types.push(m[o]!);
    expect(types.filter((x) => x === 0)).toHaveLength(255);
    expect(types.filter((x) => x === 9)).toHaveLength(45);
    expect(types.filter((x) => x === 1)).toHaveLength(1);
    expect(byteSum(m)).toBe(0);
  });

  it("puts LNRO0005 devices and COM1 in the DSDT", () => {
    const s = Buffer.from(t.tables.DSDT).toString("latin1");
    expect(s).toContain("LNRO0005");
    expect(s.match(/LNRO0005/g)).toHaveLength(2);
    expect(s).toContain("COM1");
    expect(s).toContain("V001");
  });

  it("uses the given _UIDs and refuses duplicates", () => {
    const d = buildAcpiTables({ cpus: 1, com1: false, virtioMmio: [{ addr: 0xd0000000, irq: 5, uid: 7 }] }).tables.DSDT;
    expect(Buffer.from(d).includes(Buffer.from([0x08, 0x5f, 0x55, 0x49, 0x44, 0x0a, 0x07]))).toBe(true); // Name(_UID, 7)
    expect(() => buildAcpiTables({ cpus: 1, virtioMmio: [{ addr: 0xd0000000, irq: 5, uid: 1 }, { addr: 0xd0001000, irq: 6 }] })).toThrow(
      expect.objectContaining({ code: "InvalidArgument" }),
    );
  });

  it("refuses tables that do not fit", () => {
    expect(() => buildAcpiTables({ cpus: 20000 })).toThrow(expect.objectContaining({ code: "TooManyEntries" }));
    expect(() => buildAcpiTables({ cpus: 0 })).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    expect(() => buildAcpiTables({ cpus: 1, virtioMmio: [{ addr: 0x1_0000_0000, irq: 5 }] })).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
  });
});
