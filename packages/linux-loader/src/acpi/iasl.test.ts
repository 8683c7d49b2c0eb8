import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeWith } from "@ts-vmm/test-utils";
import { afterAll, expect, it } from "vitest";
import { buildAcpiTables } from "./tables.js";

// iasl (Debian acpica-tools) is the independent parser: it disassembles each
// table we write, verifying lengths, checksums and the AML, and compiles the
// DSDT's disassembly back. (It does not take a bare RSDP; the RSDP is checked
// field by field in acpi.test.ts.)
describeWith({ tools: ["iasl"] }, "ACPI tables through iasl", () => {
  const dir = mkdtempSync(join(tmpdir(), "ts-vmm-iasl-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const t = buildAcpiTables({ cpus: 300, virtioMmio: [{ addr: 0xd0000000, irq: 5 }, { addr: 0xd0001000, irq: 6 }, { addr: 0xd0002000, irq: 7 }] });

  /** Runs iasl and returns stdout and stderr together (its firmware warnings go to stderr). */
  const iasl = (args: string[]): string => {
    const r = spawnSync("iasl", args, { encoding: "utf8" });
    return `${r.stdout}${r.stderr}`;
  };
  const disassemble = (sig: "XSDT" | "FACP" | "APIC" | "DSDT"): { out: string; dsl: string } => {
    const file = join(dir, `${sig}.dat`);
    writeFileSync(file, t.tables[sig]);
    const out = iasl(["-d", file]);
    return { out, dsl: readFileSync(join(dir, `${sig}.dsl`), "utf8") };
  };

  for (const sig of ["XSDT", "FACP", "APIC", "DSDT"] as const) {
    it(`disassembles ${sig} without errors, warnings or checksum complaints`, () => {
      const { out, dsl } = disassemble(sig);
      expect(out + dsl).not.toMatch(/error|warning|incorrect|invalid/i);
      expect(dsl).toMatch(new RegExp(`Signature\\s*:?\\s*"${sig}"`));
    });
  }

  it("shows the LNRO0005 devices and COM1 in the DSDT, and compiles it back", () => {
    const { dsl } = disassemble("DSDT");
    expect(dsl.match(/Name \(_HID, "LNRO0005"\)/g)).toHaveLength(3);
    const kbd = dsl.slice(dsl.indexOf("Device (KBD)"), dsl.indexOf("Device (COM1)"));
    expect(kbd).toContain('EisaId ("PNP0303")');
    expect(kbd).toMatch(/IO \(Decode16,\s*0x0060,[^)]*\)\s*IO \(Decode16,\s*0x0064,/);
    expect(kbd).toMatch(/IRQNoFlags \(\)\s*\{1\}/);
    expect(dsl).toMatch(/Name \(\\_S5, Package \(0x04\)[^{]*\{\s*0x05,\s*Zero,\s*Zero,\s*Zero\s*\}\)/);
    const com1 = dsl.slice(dsl.indexOf("Device (COM1)"), dsl.indexOf("Device (V000)"));
    expect(com1).toContain('EisaId ("PNP0501")');
    expect(com1).toMatch(/IO \(Decode16,\s*0x03F8,\s*\/\/ Range Minimum\s*0x03F8,\s*\/\/ Range Maximum\s*0x00,\s*\/\/ Alignment\s*0x08,/);
    expect(com1).toMatch(/IRQNoFlags \(\)\s*\{4\}/);
    const v2 = dsl.slice(dsl.indexOf("Device (V002)"));
    expect(v2).toMatch(/Memory32Fixed \(ReadWrite,\s*0xD0002000,\s*\/\/ Address Base\s*0x00001000,/);
    expect(v2).toMatch(/Interrupt \(ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, \)\s*\{\s*0x00000007,/);
    const out = iasl(["-p", join(dir, "recompiled"), join(dir, "DSDT.dsl")]);
    expect(out).toMatch(/Compilation successful\. 0 Errors, 0 Warnings/);
  });

  it("shows the reset and sleep registers in the FADT", () => {
    const { dsl } = disassemble("FACP");
    expect(dsl).toMatch(/Reset Register Supported[^\n]*: 1/);
    expect(dsl).toMatch(/Reset Register : \[Generic Address Structure\][\s\S]*?Space ID : 01 \[SystemIO\][\s\S]*?Address : 00000000000003C2/);
    expect(dsl).toMatch(/Value to cause reset : 01/);
    expect(dsl).toMatch(/Sleep Control Register[\s\S]*?Space ID : 01 \[SystemIO\][\s\S]*?Bit Width : 08[\s\S]*?Address : 00000000000003C0/);
    expect(dsl).toMatch(/Sleep Status Register[\s\S]*?Address : 00000000000003C1/);
  });

  it("shows the CMOS RTC's century register by default, and CMOS RTC Not Present with cmosRtc: false", () => {
    const { dsl } = disassemble("FACP");
    expect(dsl).toMatch(/RTC Century Index : 32/);
    expect(dsl).toMatch(/CMOS RTC Not Present \(V5\) : 0/);
    const file = join(dir, "NOCMOS.dat");
    writeFileSync(file, buildAcpiTables({ cpus: 1, cmosRtc: false }).tables.FACP);
    const out = iasl(["-d", file]);
    const off = readFileSync(join(dir, "NOCMOS.dsl"), "utf8");
    expect(out + off).not.toMatch(/error|warning|incorrect|invalid/i);
    expect(off).toMatch(/CMOS RTC Not Present \(V5\) : 1/);
    expect(off).toMatch(/RTC Century Index : 00/);
  });

  it("describes the CMOS RTC in the DSDT as PNP0B00 with ports 0x70-0x71 and no interrupt, and not at all with cmosRtc: false", () => {
    const { dsl } = disassemble("DSDT");
    const rtc = dsl.slice(dsl.indexOf("Device (RTC)"), dsl.indexOf("Device (COM1)"));
    expect(rtc).toContain('EisaId ("PNP0B00")');
    expect(rtc).toMatch(/IO \(Decode16,\s*0x0070,\s*\/\/ Range Minimum\s*0x0070,\s*\/\/ Range Maximum\s*0x01,\s*\/\/ Alignment\s*0x02,/);
    expect(rtc).not.toMatch(/IRQ|Interrupt/);
    const file = join(dir, "NOCMOSDSDT.dat");
    writeFileSync(file, buildAcpiTables({ cpus: 1, cmosRtc: false }).tables.DSDT);
    iasl(["-d", file]);
    expect(readFileSync(join(dir, "NOCMOSDSDT.dsl"), "utf8")).not.toContain("PNP0B00");
  });

  it("would notice a wrong checksum (the assertions above can fail)", () => {
    const bad = t.tables.FACP.slice();
    bad[9] = (bad[9]! + 1) & 0xff;
    const file = join(dir, "BAD.dat");
    writeFileSync(file, bad);
    const out = iasl(["-d", file]);
    expect(out).toMatch(/Firmware Warning \(ACPI\): Incorrect checksum/);
    expect(readFileSync(join(dir, "BAD.dsl"), "utf8")).toMatch(/incorrect checksum/i);
  });

  it("shows 255 Local APIC and 45 Local x2APIC entries in the MADT for 300 CPUs", () => {
    const { dsl } = disassemble("APIC");
    expect(dsl.match(/Subtable Type : 00 \[Processor Local APIC\]/g)).toHaveLength(255);
    expect(dsl.match(/Subtable Type : 09 \[Processor Local x2APIC\]/g)).toHaveLength(45);
    // one Local x2APIC NMI for all processors (UID 0xFFFFFFFF) on LINT1
    const nmi = dsl.slice(dsl.indexOf("Subtable Type : 0A"));
    expect(dsl.match(/Subtable Type : 0A \[Local x2APIC NMI\]/g)).toHaveLength(1);
    expect(nmi).toMatch(/Processor UID : FFFFFFFF/);
    expect(nmi).toMatch(/Interrupt Input LINT : 01/);
    expect(dsl).toMatch(/Subtable Type : 01 \[I\/O APIC\][\s\S]*Address : FEC00000/);
  });

  it("decodes the FADT as hardware-reduced with our DSDT", () => {
    const { dsl } = disassemble("FACP");
    expect(dsl).toMatch(/Hardware Reduced \(V5\) : 1/);
    const dsdt = t.writes.find((w) => w.what === "ACPI DSDT")!.addr.toString(16).toUpperCase().padStart(16, "0");
    expect(dsl).toContain(`DSDT Address : ${dsdt}`);
  });
});
