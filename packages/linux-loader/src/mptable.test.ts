import { describe, expect, it } from "vitest";
import { byteSum } from "./bytes.js";
import { IOAPIC_ID } from "./layout.js";
import { MPTABLE_MAX_SIZE, buildMpTable } from "./mptable.js";

describe("buildMpTable", () => {
  it("writes a floating pointer and a config table with correct checksums and counts", () => {
    const w = buildMpTable({ cpus: 4 });
    const b = w.data;
    const v = new DataView(b.buffer);
    expect(w.addr).toBe(0x9fc00);
    expect(String.fromCharCode(...b.subarray(0, 4))).toBe("_MP_");
    expect(v.getUint32(4, true)).toBe(0x9fc10);
    expect(b[8]).toBe(1);
    expect(b[9]).toBe(4);
    expect(byteSum(b, 0, 16)).toBe(0);
    const cfg = b.subarray(16);
    const cv = new DataView(cfg.buffer, cfg.byteOffset);
    expect(String.fromCharCode(...cfg.subarray(0, 4))).toBe("PCMP");
    const len = cv.getUint16(4, true);
    expect(len).toBe(b.byteLength - 16);
    expect(byteSum(cfg, 0, len)).toBe(0);
    expect(cv.getUint16(34, true)).toBe(4 + 1 + 1 + 24 + 2);
    expect(cv.getUint32(36, true)).toBe(0xfee00000);
    // processor entries: APIC IDs 0..3, only CPU 0 is the BSP
    for (let i = 0; i < 4; i++) {
      expect(cfg[44 + i * 20]).toBe(0);
      expect(cfg[44 + i * 20 + 1]).toBe(i);
      expect(cfg[44 + i * 20 + 3]).toBe(i === 0 ? 3 : 1);
    }
    const bus = 44 + 80;
    expect(String.fromCharCode(...cfg.subarray(bus + 2, bus + 8))).toBe("ISA   ");
    expect(cfg[bus + 8]).toBe(2); // IOAPIC entry
    expect(cv.getUint32(bus + 12, true)).toBe(0xfec00000);
  });

  it("gives the IOAPIC entry and every I/O interrupt entry the ID IOAPIC_ID, or the one asked for", () => {
    const ids = (cfg: Uint8Array, cpus: number) => {
      const ioapic = 44 + cpus * 20 + 8;
      expect(cfg[ioapic]).toBe(2);
      const irqIds = Array.from({ length: 24 }, (_, i) => cfg[ioapic + 8 + i * 8 + 6]);
      return { ioapic: cfg[ioapic + 1], irqs: [...new Set(irqIds)] };
    };
    // cpus 4: before, the IOAPIC got ID = cpus (4) while the MADT said 0
    expect(ids(buildMpTable({ cpus: 4 }).data.subarray(16), 4)).toEqual({ ioapic: IOAPIC_ID, irqs: [IOAPIC_ID] });
    expect(ids(buildMpTable({ cpus: 2, ioapicId: 7 }).data.subarray(16), 2)).toEqual({ ioapic: 7, irqs: [7] });
    expect(() => buildMpTable({ cpus: 2, ioapicId: 255 })).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
  });

  it("refuses what it cannot express", () => {
    expect(() => buildMpTable({ cpus: 0 })).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    expect(() => buildMpTable({ cpus: 255 })).toThrow(expect.objectContaining({ code: "TooManyEntries" }));
    expect(() => buildMpTable({ cpus: 64 })).toThrow(expect.objectContaining({ code: "TooManyEntries" }));
    expect(buildMpTable({ cpus: 32 }).data.byteLength).toBeLessThanOrEqual(MPTABLE_MAX_SIZE);
    expect(buildMpTable({ cpus: 200, addr: 0x200000 }).data.byteLength).toBeGreaterThan(MPTABLE_MAX_SIZE);
  });
});
