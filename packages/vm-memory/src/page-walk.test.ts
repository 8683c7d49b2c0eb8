import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { GuestMemoryArrayBuffer } from "./guest-memory-array-buffer.js";
import { translate } from "./page-walk.js";

const P = 1n, RW = 2n, US = 4n, PS = 0x80n, XD = 1n << 63n;
const MiB = 2 ** 20, GiB = 2 ** 30;

/** A tiny page-table builder over guest memory: tables are allocated from `next`. */
class Tables {
  readonly mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x100000 }]);
  private next = 0x1000;
  alloc(): number {
    const a = this.next;
    this.next += 0x1000;
    return a;
  }
  set(table: number, index: number, entry: bigint): void {
    this.mem.writeU64(table + index * 8, entry);
  }
}

/** Splits a canonical 48/57-bit VA into its per-level indices (5..1). */
function idx(va: bigint, level: number): number {
  return Number((va >> BigInt(12 + 9 * (level - 1))) & 0x1ffn);
}

/** Maps `va` to `pa` with 4 KiB pages through fresh tables; returns cr3. */
function map4k(t: Tables, va: bigint, pa: bigint, leafFlags: bigint, upperFlags = P | RW | US, levels = 4): number {
  const root = t.alloc();
  let table = root;
  for (let l = levels; l > 1; l--) {
    const nt = t.alloc();
    t.set(table, idx(va, l), BigInt(nt) | upperFlags);
    table = nt;
  }
  t.set(table, idx(va, 1), pa | leafFlags);
  return root;
}

describe("translate: 4-level paging", () => {
  it("translates through a 4 KiB page", () => {
    const t = new Tables();
    const va = 0x0000_7f12_3456_7abcn;
    const cr3 = map4k(t, va & ~0xfffn, 0x000f_1234_5000n, P | RW | US);
    const r = translate(t.mem, cr3, va);
    expect(r).toEqual({ ok: true, gpa: 0x000f_1234_5abc, pageSize: 4096, writable: true, user: true, executable: true, entryAddr: expect.any(Number) });
  });
  it("ignores CR3's low 12 bits (PCID/PWT/PCD)", () => {
    const t = new Tables();
    const cr3 = map4k(t, 0x1000n, 0x5000n, P);
    expect(translate(t.mem, cr3 | 0xfff, 0x1234n)).toMatchObject({ ok: true, gpa: 0x5234 });
  });
  it("translates through a 2 MiB page", () => {
    const t = new Tables();
    const va = 0xffff_8000_0040_1234n; // kernel half, canonical
    const pml4 = t.alloc(), pdpt = t.alloc(), pd = t.alloc();
    t.set(pml4, idx(va, 4), BigInt(pdpt) | P | RW);
    t.set(pdpt, idx(va, 3), BigInt(pd) | P | RW);
    t.set(pd, idx(va, 2), 0x4020_0000n | P | RW | PS);
    const r = translate(t.mem, pml4, va);
    expect(r).toMatchObject({ ok: true, gpa: 0x4020_0000 + 0x1234, pageSize: 2 * MiB, user: false });
  });
  it("translates through a 1 GiB page", () => {
    const t = new Tables();
    const va = 0x0000_0040_3fff_fff8n;
    const pml4 = t.alloc(), pdpt = t.alloc();
    t.set(pml4, idx(va, 4), BigInt(pdpt) | P | RW | US);
    t.set(pdpt, idx(va, 3), 0x000c_4000_0000n | P | RW | US | PS);
    expect(translate(t.mem, pml4, va)).toMatchObject({ ok: true, gpa: 0xc_4000_0000 + 0x3fff_fff8, pageSize: GiB });
    // without 1 GiB page support PS is reserved
    expect(translate(t.mem, pml4, va, { pdpe1gb: false })).toMatchObject({ ok: false, fault: "ReservedBit", level: 3 });
  });
  it("faults NotPresent at each level", () => {
    for (const level of [4, 3, 2, 1]) {
      const t = new Tables();
      const va = 0x0000_1234_5678_9000n;
      const pml4 = t.alloc();
      let table = pml4;
      for (let l = 4; l >= 1; l--) {
        const nt = l === 1 ? 0x9000 : t.alloc();
        t.set(table, idx(va, l), l === level ? BigInt(nt) | RW : BigInt(nt) | P | RW);
        table = nt;
      }
      expect(translate(t.mem, pml4, va)).toMatchObject({ ok: false, fault: "NotPresent", level });
    }
  });
  it("faults ReservedBit at each level", () => {
    const va = 0x2000n;
    const cases: [number, bigint, object?][] = [
      [4, PS], // PS in a PML4E
      [4, 1n << 51n, { maxPhysAddr: 48 }], // address bit above MAXPHYADDR
      [3, 1n << 40n, { maxPhysAddr: 40 }],
      [2, XD, { nxe: false }], // XD without NXE
      [1, 1n << 50n, { maxPhysAddr: 46 }],
    ];
    for (const [level, bad, opts] of cases) {
      const t = new Tables();
      const pml4 = t.alloc();
      let table = pml4;
      for (let l = 4; l >= 1; l--) {
        const nt = l === 1 ? 0x9000 : t.alloc();
        t.set(table, idx(va, l), BigInt(nt) | P | RW | (l === level ? bad : 0n));
        table = nt;
      }
      expect(translate(t.mem, pml4, va, opts)).toMatchObject({ ok: false, fault: "ReservedBit", level });
    }
  });
  it("faults ReservedBit for the low bits of a large page's address", () => {
    const t = new Tables();
    const pml4 = t.alloc(), pdpt = t.alloc(), pd = t.alloc();
    t.set(pml4, 0, BigInt(pdpt) | P);
    t.set(pdpt, 0, BigInt(pd) | P);
    t.set(pdpt, 1, 0x4000_0000n | (1n << 13n) | P | PS); // 1 GiB page with bit 13 set
    t.set(pd, 0, 0x20_0000n | (1n << 20n) | P | PS); // 2 MiB page with bit 20 set
    t.set(pd, 1, 0x40_0000n | (1n << 12n) | P | PS); // bit 12 is PAT: allowed
    expect(translate(t.mem, pml4, 0x4000_0000n)).toMatchObject({ ok: false, fault: "ReservedBit", level: 3 });
    expect(translate(t.mem, pml4, 0n)).toMatchObject({ ok: false, fault: "ReservedBit", level: 2 });
    expect(translate(t.mem, pml4, 0x20_0010n)).toMatchObject({ ok: true, gpa: 0x40_0010 });
  });
  it("faults NonCanonical", () => {
    const t = new Tables();
    const cr3 = map4k(t, 0n, 0n, P);
    expect(translate(t.mem, cr3, 0x0000_8000_0000_0000n)).toMatchObject({ ok: false, fault: "NonCanonical", level: 4 });
    expect(translate(t.mem, cr3, 0xffff_7fff_ffff_ffffn)).toMatchObject({ ok: false, fault: "NonCanonical" });
    expect(translate(t.mem, cr3, -1n)).toMatchObject({ ok: false, fault: "NotPresent" }); // canonical, unmapped
  });
  it("faults MemoryError when a table is outside guest memory", () => {
    const t = new Tables();
    expect(translate(t.mem, 0x200000, 0n)).toMatchObject({ ok: false, fault: "MemoryError", level: 4 });
    const pml4 = t.alloc();
    t.set(pml4, 0, 0x000f_ffff_ffff_f000n | P); // PDPT far outside memory
    expect(translate(t.mem, pml4, 0n)).toMatchObject({ ok: false, fault: "MemoryError", level: 3 });
  });
  it("accumulates permissions and checks access", () => {
    const t = new Tables();
    const va = 0x40_0000n;
    // upper levels: RW but supervisor-only at the PDPT; leaf: read-only, XD
    const pml4 = t.alloc(), pdpt = t.alloc(), pd = t.alloc(), pt = t.alloc();
    t.set(pml4, idx(va, 4), BigInt(pdpt) | P | RW | US);
    t.set(pdpt, idx(va, 3), BigInt(pd) | P | RW);
    t.set(pd, idx(va, 2), BigInt(pt) | P | RW | US);
    t.set(pt, idx(va, 1), 0x7000n | P | US | XD);
    expect(translate(t.mem, pml4, va)).toMatchObject({ ok: true, writable: false, user: false, executable: false });
    expect(translate(t.mem, pml4, va, { wp: false })).toMatchObject({ ok: true, writable: true });
    expect(translate(t.mem, pml4, va, { nxe: false })).toMatchObject({ ok: false, fault: "ReservedBit", level: 1 });
    expect(translate(t.mem, pml4, va, { access: "write" })).toMatchObject({ ok: false, fault: "Protection", level: 1 });
    expect(translate(t.mem, pml4, va, { access: "write", wp: false })).toMatchObject({ ok: true });
    expect(translate(t.mem, pml4, va, { access: "execute" })).toMatchObject({ ok: false, fault: "Protection" });
    expect(translate(t.mem, pml4, va, { access: "read" })).toMatchObject({ ok: true });
    expect(translate(t.mem, pml4, va, { access: "read", user: true })).toMatchObject({ ok: false, fault: "Protection" });
    // make it user-accessible and writable everywhere
    t.set(pdpt, idx(va, 3), BigInt(pd) | P | RW | US);
    t.set(pt, idx(va, 1), 0x7000n | P | US | RW);
    expect(translate(t.mem, pml4, va, { user: true, access: "write" })).toMatchObject({
      ok: true, writable: true, user: true, executable: true,
    });
  });
  it("rejects caller errors with InvalidArgument", () => {
    const t = new Tables();
    expect(() => translate(t.mem, 0, 1n << 64n)).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    expect(() => translate(t.mem, 0, -1)).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    expect(() => translate(t.mem, 0, 0n, { maxPhysAddr: 60 })).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
  });
});

describe("translate: 5-level paging", () => {
  it("translates a 57-bit address and rejects 48-bit non-canonical forms only when not canonical", () => {
    const t = new Tables();
    const va = 0x00ff_8000_1234_5678n; // canonical under LA57 (bit 56 = 0), not under 4-level
    const cr3 = map4k(t, va & ~0xfffn, 0xa000n, P | RW, P | RW, 5);
    expect(translate(t.mem, cr3, va, { la57: true })).toMatchObject({ ok: true, gpa: 0xa678, pageSize: 4096 });
    expect(translate(t.mem, cr3, va)).toMatchObject({ ok: false, fault: "NonCanonical", level: 4 });
    expect(translate(t.mem, cr3, 0x0100_0000_0000_0000n, { la57: true })).toMatchObject({ ok: false, fault: "NonCanonical", level: 5 });
  });
  it("faults at level 5 and treats PS in a PML5E as reserved", () => {
    const t = new Tables();
    const pml5 = t.alloc();
    expect(translate(t.mem, pml5, 0n, { la57: true })).toMatchObject({ ok: false, fault: "NotPresent", level: 5 });
    t.set(pml5, 0, BigInt(t.alloc()) | P | PS);
    expect(translate(t.mem, pml5, 0n, { la57: true })).toMatchObject({ ok: false, fault: "ReservedBit", level: 5 });
  });
});

describe("translate: hostile tables", () => {
  it("never throws on random table contents", () => {
    fc.assert(
      fc.property(
        fc.array(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), { minLength: 512, maxLength: 512 }),
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        fc.boolean(),
        (entries, va, la57) => {
          const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x1000 }]);
          // every table is this one page: entries point anywhere
          entries.forEach((e, i) => mem.writeU64(i * 8, e));
          const r = translate(mem, 0, va, { la57 });
          if (r.ok) {
            expect(Number.isSafeInteger(r.gpa)).toBe(true);
            expect(r.gpa).toBeLessThan(2 ** 52);
          } else {
            expect(["NotPresent", "ReservedBit", "NonCanonical", "MemoryError"]).toContain(r.fault);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

/**
 * An independent reference walker over bigints, written from the SDM (4.5 and
 * 4.6) rather than from page-walk.ts: the whole entry as one u64, masks built
 * from bit positions.
 */
function referenceWalk(
  mem: GuestMemoryArrayBuffer,
  cr3: bigint,
  va: bigint,
  o: { la57: boolean; nxe: boolean; wp: boolean; user: boolean; access?: "read" | "write" | "execute"; maxPhysAddr: number; pdpe1gb: boolean },
): Record<string, unknown> {
  const bit = (n: number): bigint => 1n << BigInt(n);
  const bits = (hi: number, lo: number): bigint => (bit(hi + 1) - 1n) & ~(bit(lo) - 1n);
  const top = o.la57 ? 5 : 4;
  const vaBits = o.la57 ? 57 : 48;
  const sign = (va >> BigInt(vaBits - 1)) & 1n;
  const high = va >> BigInt(vaBits);
  if (high !== (sign === 1n ? bit(64 - vaBits) - 1n : 0n)) return { ok: false, fault: "NonCanonical", level: top };
  const rsvdPhys = o.maxPhysAddr < 52 ? bits(51, o.maxPhysAddr) : 0n;
  if ((cr3 & rsvdPhys) !== 0n) return { ok: false, fault: "ReservedBit", level: top };
  let table = cr3 & bits(51, 12);
  let rw = true;
  let us = true;
  let xd = false;
  for (let level = top; level >= 1; level--) {
    const shift = 12 + 9 * (level - 1);
    const entryAddr = Number(table + ((va >> BigInt(shift)) & 0x1ffn) * 8n);
    if (!mem.checkRange(entryAddr, 8)) return { ok: false, fault: "MemoryError", level, entryAddr };
    const e = mem.readU64(entryAddr);
    if ((e & 1n) === 0n) return { ok: false, fault: "NotPresent", level, entryAddr };
    const ps = (e & bit(7)) !== 0n;
    const leaf = level === 1 || (ps && (level === 2 || (level === 3 && o.pdpe1gb)));
    let reserved = (e & rsvdPhys) !== 0n || (!o.nxe && (e & bit(63)) !== 0n);
    if (ps && level >= 4) reserved = true;
    if (ps && level === 3 && !o.pdpe1gb) reserved = true;
    if (leaf && level > 1 && (e & bits(shift - 1, 13)) !== 0n) reserved = true;
    if (reserved) return { ok: false, fault: "ReservedBit", level, entryAddr };
    rw &&= (e & bit(1)) !== 0n;
    us &&= (e & bit(2)) !== 0n;
    xd ||= o.nxe && (e & bit(63)) !== 0n;
    if (leaf) {
      const writable = o.user ? us && rw : o.wp ? rw : true;
      const executable = !xd && (!o.user || us);
      const readable = !o.user || us;
      if ((o.access === "write" && !writable) || (o.access === "execute" && !executable) || (o.access === "read" && !readable)) {
        return { ok: false, fault: "Protection", level, entryAddr };
      }
      const gpa = (e & bits(51, shift)) | (va & (bit(shift) - 1n));
      return { ok: true, gpa: Number(gpa), pageSize: 2 ** shift, writable, user: us, executable, entryAddr };
    }
    table = e & bits(51, 12);
  }
  throw new Error("unreachable");
}

describe("translate: property against a reference walker", () => {
  it("random tables, addresses and modes give exactly the reference result, and never throw", () => {
    const PAGES = 8;
    fc.assert(
      fc.property(
        fc.integer(),
        fc.nat(PAGES - 1),
        fc.bigInt(0n, (1n << 64n) - 1n),
        fc.boolean(),
        fc.record({
          la57: fc.boolean(),
          nxe: fc.boolean(),
          wp: fc.boolean(),
          user: fc.boolean(),
          access: fc.constantFrom(undefined, "read" as const, "write" as const, "execute" as const),
          maxPhysAddr: fc.constantFrom(32, 36, 40, 46, 52),
          pdpe1gb: fc.boolean(),
        }),
        (seed, rootPage, rawVa, canonical, o) => {
          // Tables from a seeded PRNG (mulberry32) in 8 pages, two at each GiB (so a
          // table address has no bits set in 29..13 unless an entry adds them). Entries are
          // mostly present and point at one of the pages (self-references included), with
          // random flag bits (PS less often, then sometimes with a bit in 29..13), and
          // sometimes random address bits, bits 51..32 or bits 63..52.
          let a = seed >>> 0;
          const next = (): number => {
            a = (a + 0x6d2b79f5) >>> 0;
            let t = Math.imul(a ^ (a >>> 15), a | 1);
            t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
            return (t ^ (t >>> 14)) >>> 0;
          };
          const pageAddr = (k: number): number => (k >> 1) * 2 ** 30 + (k & 1) * 0x1000;
          const mem = GuestMemoryArrayBuffer.fromRanges(
            [0, 1, 2, 3].map((g) => ({ start: g * 2 ** 30, size: 0x2000 })),
            { shared: false },
          );
          for (let k = 0; k < PAGES; k++) {
            for (let i = 0; i < 512; i++) {
              const r = next();
              let low = next() & 0xfff;
              if (r % 8 === 0) low &= ~1;
              else low |= 1;
              if (r % 4 !== 1) low &= ~0x80;
              let lo = (pageAddr(next() % PAGES) + low) >>> 0;
              if (r % 8 === 2) lo = (lo | (next() & 0xfffff000)) >>> 0;
              if (r % 4 === 1 && (r & 0x100) !== 0) lo = (lo | (1 << (13 + (next() % 17)))) >>> 0; // a large page's reserved bits
              let hi = r % 8 === 3 ? next() & 0xfffff : 0;
              if (r % 4 === 3) hi = (hi | (next() & 0xfff00000)) >>> 0;
              mem.writeU32(pageAddr(k) + i * 8, lo);
              mem.writeU32(pageAddr(k) + i * 8 + 4, hi);
            }
          }
          const vaBits = o.la57 ? 57n : 48n;
          let va = rawVa;
          if (canonical) {
            const low = rawVa & ((1n << vaBits) - 1n);
            va = (low >> (vaBits - 1n)) & 1n ? low | (((1n << 64n) - 1n) ^ ((1n << vaBits) - 1n)) : low;
          }
          const cr3 = BigInt(pageAddr(rootPage)) | (rawVa & 0xfffn);
          const { access, ...rest } = o;
          const opts = access === undefined ? rest : { ...rest, access };
          expect(translate(mem, cr3, va, opts)).toEqual(referenceWalk(mem, cr3, va, opts));
        },
      ),
      { numRuns: 400 },
    );
  });
});
