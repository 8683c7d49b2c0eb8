import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { memory } from "../test/fixtures.js";
import { BOOT_CS, BOOT_DS, gdtEntry, longModeState, pvhState } from "./cpu-state.js";
import { commitWrites } from "./guest-writes.js";

describe("longModeState", () => {
  const st = longModeState(0x100200, 0x7000);

  it("sets the 64-bit boot protocol registers", () => {
    expect(st.regs.rip).toBe(0x100200n);
    expect(st.regs.rsi).toBe(0x7000n);
    expect(st.regs.rflags & 0x200n).toBe(0n); // interrupts off
    expect(st.sregs.cs).toMatchObject({ selector: BOOT_CS, l: 1, db: 0, present: 1, s: 1, base: 0n });
    for (const s of [st.sregs.ds, st.sregs.es, st.sregs.ss]) expect(s).toMatchObject({ selector: BOOT_DS, type: 3, limit: 0xffffffff, g: 1 });
    expect(st.sregs.cr0).toBe(0x80050033n);
    expect(st.sregs.cr4 & 0x20n).toBe(0x20n);
    expect(st.sregs.efer).toBe(0x500n);
    expect(st.sregs.cr3).toBe(0x9000n);
  });

  it("encodes GDT descriptors like the kernel's own boot GDT", () => {
    expect(gdtEntry(st.sregs.cs)).toBe(0x00af9b000000ffffn);
    expect(gdtEntry(st.sregs.ds)).toBe(0x00cf93000000ffffn);
    const gdt = st.writes.find((w) => w.what === "boot GDT")!;
    expect(new DataView(gdt.data.buffer).getBigUint64(BOOT_CS, true)).toBe(0x00af9b000000ffffn);
  });

  it("identity-maps the first 4 GiB (page walk over the written tables)", () => {
    const mem = memory(16 << 20);
    commitWrites(mem, st.writes);
    const walk = (va: number): number | undefined => {
      const pml4e = mem.readU64(Number(st.sregs.cr3) + ((va / 2 ** 39) & 511) * 8);
      if (!(pml4e & 1n)) return undefined;
      const pdpte = mem.readU64(Number(pml4e & 0xffffffffff000n) + (Math.floor(va / 2 ** 30) & 511) * 8);
      if (!(pdpte & 1n)) return undefined;
      const pde = mem.readU64(Number(pdpte & 0xffffffffff000n) + (Math.floor(va / 2 ** 21) & 511) * 8);
      if (!(pde & 1n) || !(pde & 0x80n) || !(pde & 2n)) return undefined;
      return Number(pde & 0xfffffffe00000n) + (va % 2 ** 21);
    };
    fc.assert(fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), (va) => walk(va) === va));
    expect(walk(2 ** 32)).toBeUndefined();
  });

  it("refuses an entry outside the identity map", () => {
    expect(() => longModeState(2 ** 32)).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
  });
});

describe("pvhState", () => {
  it("sets the PVH ABI registers", () => {
    const st = pvhState(0x1000a30, 0x6000);
    expect(st.regs).toMatchObject({ rip: 0x1000a30n, rbx: 0x6000n, rflags: 2n });
    expect(st.sregs).toMatchObject({ cr0: 0x11n, cr4: 0n, efer: 0n });
    expect(st.sregs.cs).toMatchObject({ db: 1, l: 0, limit: 0xffffffff, base: 0n });
    expect(st.sregs.tr).toMatchObject({ type: 0xb, limit: 0x67, base: 0n });
    expect(gdtEntry(st.sregs.cs)).toBe(0x00cf9b000000ffffn);
    expect(() => pvhState(2 ** 32)).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
  });
});
