import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Ioapic, type IoapicRoute } from "./ioapic.js";

const u32 = (v: number): Uint8Array => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
};
const r32 = (b: Uint8Array): number => new DataView(b.buffer, b.byteOffset).getUint32(0, true);

/** An I/O APIC with a recorder of its route reports, and register helpers as a driver uses them. */
function rig(options?: { pins?: number; id?: number }) {
  const reports: IoapicRoute[][] = [];
  const io = new Ioapic({ onRoutesChanged: (r) => reports.push([...r]) }, options);
  const wr = (reg: number, v: number): void => {
    io.write(0x00, u32(reg));
    io.write(0x10, u32(v));
  };
  const rd = (reg: number): number => {
    io.write(0x00, u32(reg));
    const b = new Uint8Array(4);
    io.read(0x10, b);
    return r32(b);
  };
  return { io, reports, wr, rd };
}

describe("Ioapic", () => {
  it("identifies itself as KVM's does: version 0x20, pins - 1 in bits 16-23, the id in bits 24-27", () => {
    const { rd, wr } = rig({ pins: 24, id: 3 });
    expect(rd(0x01)).toBe((23 << 16) | 0x20);
    expect(rd(0x00)).toBe(3 << 24);
    expect(rd(0x02)).toBe(3 << 24);
    wr(0x01, 0); // read-only
    expect(rd(0x01)).toBe((23 << 16) | 0x20);
    wr(0x00, 5 << 24);
    expect(rd(0x00)).toBe(5 << 24);
  });

  it("starts with every pin masked and no routes", () => {
    const { io, rd } = rig();
    for (let p = 0; p < 24; p++) expect(rd(0x10 + 2 * p)).toBe(0x10000);
    expect(io.routes()).toEqual([]);
  });

  it("an unmasked fixed, physical, edge entry becomes the MSI Linux's own I/O APIC code would send", () => {
    const { reports, wr, rd } = rig();
    wr(0x10 + 2 * 5 + 1, 2 << 24); // destination APIC id 2
    expect(reports).toEqual([]); // still masked: no route change
    wr(0x10 + 2 * 5, 0x31);
    expect(reports.at(-1)).toEqual([{ pin: 5, address: 0xfee0_2000n, data: 0x31 }]);
    expect(rd(0x10 + 2 * 5)).toBe(0x31);
    expect(rd(0x10 + 2 * 5 + 1)).toBe(2 << 24);
  });

  it("level, logical, lowest-priority and extended destination bits reach the MSI; masking removes the route", () => {
    const { io, reports, wr } = rig();
    wr(0x10 + 2 * 9 + 1, (0x01 << 24) | (0x05 << 16)); // dest 0x01, ext dest 0x05 -> id 0x501
    wr(0x10 + 2 * 9, 0x41 | (1 << 8) | (1 << 11) | (1 << 13) | (1 << 15));
    expect(io.entry(9)).toMatchObject({ vector: 0x41, deliveryMode: 1, logical: true, activeLow: true, level: true, masked: false, destination: 0x501 });
    expect(reports.at(-1)).toEqual([{ pin: 9, address: 0xfee0_1000n | (0x05n << 5n) | 4n, data: 0x41 | (1 << 8) | (1 << 15) | (1 << 14) }]);
    wr(0x10 + 2 * 9, 0x41 | (1 << 16));
    expect(reports.at(-1)).toEqual([]);
  });

  it("delivery status and remote IRR are read-only and read 0", () => {
    const { rd, wr } = rig();
    wr(0x10, 0x33 | (1 << 12) | (1 << 14));
    expect(rd(0x10)).toBe(0x33);
  });

  it("ExtINT entries get no route (there is no 8259) and are counted", () => {
    const { io, reports, wr } = rig();
    wr(0x10, 0x20 | (7 << 8));
    expect(reports.at(-1)).toEqual([]);
    expect(io.metrics.extIntEntries).toBe(1);
  });

  it("hostile accesses are ignored without throwing: odd sizes, offsets, registers past the table", () => {
    const { io, rd, wr, reports } = rig({ pins: 4 });
    io.write(0x10, new Uint8Array(2));
    io.write(0x10, new Uint8Array(8));
    io.write(0x20, u32(1));
    const b = new Uint8Array(1);
    io.read(0x10, b);
    expect(b[0]).toBe(0);
    wr(0x10 + 2 * 4, 0x30); // pin 4 of 4
    expect(rd(0x10 + 2 * 4)).toBe(0);
    wr(0xff, 1);
    expect(reports).toEqual([]);
    expect(io.metrics.badAccesses).toBeGreaterThanOrEqual(5);
  });

  it("state round-trips and restore reports the routes; a state that does not fit is refused", () => {
    const a = rig();
    a.wr(0x10 + 2 * 7 + 1, 1 << 24);
    a.wr(0x10 + 2 * 7, 0x52);
    const saved = JSON.parse(JSON.stringify(a.io.state()));
    const b = rig();
    b.io.restoreState(saved);
    expect(b.reports.at(-1)).toEqual(a.io.routes());
    expect(b.io.state()).toEqual(a.io.state());
    expect(() => rig({ pins: 8 }).io.restoreState(saved)).toThrow(RangeError);
    expect(() => b.io.restoreState({ ...saved, entries: saved.entries.map(() => "zz") })).toThrow(RangeError);
  });

  it("reset masks everything and reports no routes", () => {
    const { io, reports, wr } = rig();
    wr(0x10, 0x30);
    io.reset();
    expect(reports.at(-1)).toEqual([]);
    expect(io.entry(0).masked).toBe(true);
  });

  it("property: any sequence of 4-byte writes keeps every reported route a valid x86 MSI of an unmasked pin", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom(0x00, 0x10, 0x40, 0x14), fc.integer({ min: 0, max: 0xffff_ffff })), { maxLength: 64 }), (ops) => {
        const { io, reports } = rig({ pins: 8 });
        for (const [off, v] of ops) io.write(off, u32(v));
        for (const r of reports.at(-1) ?? []) {
          expect(r.pin).toBeLessThan(8);
          expect(r.address >> 20n).toBe(0xfeen);
          expect(r.data).toBeLessThan(1 << 16);
          expect(io.entry(r.pin).masked).toBe(false);
        }
      }),
    );
  });
});
