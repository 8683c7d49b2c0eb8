import fc from "fast-check";
import { GuestMemoryArrayBuffer } from "@ts-vmm/vm-memory";
import { describe, expect, it } from "vitest";
import { makeElf, memHash, memory, pvhNote } from "../test/fixtures.js";
import { Elf } from "./elf.js";
import { LoaderError } from "./error.js";

function code(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof LoaderError) return e.code;
    throw e;
  }
  return "no error";
}

const seg = { paddr: 0x200000n, filesz: 0x100n, memsz: 0x300n };

describe("Elf.parse", () => {
  it("reads PT_LOAD segments, the entry and an 8-byte PVH note (as Linux writes it)", () => {
    const e = Elf.parse(makeElf({ entry: 0x200010n, segments: [seg], notes: [{ name: "Linux", type: 1, desc: new Uint8Array(4) }, pvhNote(0x200020, 8)] }));
    expect(e.bits).toBe(64);
    expect(e.entry).toBe(0x200010);
    expect(e.pvhEntry).toBe(0x200020);
    expect(e.segments).toEqual([{ paddr: 0x200000, offset: 64 + 56 * 2, fileSize: 0x100, memSize: 0x300 }]);
  });

  it("accepts a 4-byte PVH note and ELF32 images", () => {
    const e = Elf.parse(makeElf({ bits: 32, segments: [seg], notes: [pvhNote(0x200040, 4)] }));
    expect(e.bits).toBe(32);
    expect(e.pvhEntry).toBe(0x200040);
  });

  it("has no PVH entry without the note", () => {
    expect(Elf.parse(makeElf({ segments: [seg] })).pvhEntry).toBeUndefined();
  });

  it("refuses a PVH note of the wrong size", () => {
    for (const size of [0, 2, 6, 12]) expect(code(() => Elf.parse(makeElf({ segments: [seg], notes: [pvhNote(0x1000, size)] })))).toBe("PvhNoteSize");
  });

  it("refuses a PVH entry above 4 GiB", () => {
    const note = pvhNote(0x1000, 8);
    note.desc[4] = 1;
    expect(code(() => Elf.parse(makeElf({ segments: [seg], notes: [note] })))).toBe("Overflow");
  });

  it("catches 64-bit sizes that overflow, as bigints", () => {
    const max = 0xffff_ffff_ffff_ffffn;
    expect(code(() => Elf.parse(makeElf({ segments: [{ paddr: 0x1000n, offset: max - 0x10n, filesz: 0x100n, memsz: 0x100n }] })))).toBe("Overflow");
    expect(code(() => Elf.parse(makeElf({ segments: [{ paddr: 0x1000n, offset: 0x40n, filesz: max, memsz: max }] })))).toBe("Overflow");
    expect(code(() => Elf.parse(makeElf({ segments: [{ paddr: max - 0xfffn, filesz: 0x10n, memsz: 0x1000n }] })))).toBe("Overflow");
    expect(code(() => Elf.parse(makeElf({ segments: [{ paddr: 1n << 52n, filesz: 0n, memsz: 0x10n }] })))).toBe("Overflow");
    expect(code(() => Elf.parse(makeElf({ entry: 1n << 60n, segments: [seg] })))).toBe("Overflow");
  });

  it("refuses malformed images with typed errors", () => {
    const good = makeElf({ segments: [seg] });
    const patched = (f: (b: Uint8Array, v: DataView) => void): string => {
      const b = good.slice();
      f(b, new DataView(b.buffer));
      return code(() => Elf.parse(b));
    };
    expect(patched((b) => (b[0] = 0))).toBe("BadMagic");
    expect(patched((b) => (b[4] = 3))).toBe("InvalidElf");
    expect(patched((b) => (b[5] = 2))).toBe("InvalidElf");
    expect(patched((_b, v) => v.setUint16(16, 3, true))).toBe("InvalidElf");
    expect(patched((_b, v) => v.setUint16(18, 40, true))).toBe("InvalidElf");
    expect(patched((_b, v) => v.setUint16(54, 32, true))).toBe("InvalidElf");
    expect(patched((_b, v) => v.setUint16(56, 0, true))).toBe("InvalidElf");
    expect(patched((_b, v) => v.setUint16(56, 50, true))).toBe("Truncated");
    expect(patched((_b, v) => v.setBigUint64(32, 1n << 62n, true))).toBe("Overflow");
    expect(code(() => Elf.parse(good.subarray(0, 40)))).toBe("Truncated");
    expect(code(() => Elf.parse(makeElf({ segments: [{ paddr: 0x1000n, filesz: 0x20n, memsz: 0x10n }] })))).toBe("InvalidElf");
    expect(code(() => Elf.parse(makeElf({ segments: [{ paddr: 0x1000n, filesz: 0x10n, memsz: 0x1000n }, { paddr: 0x1800n, filesz: 0x10n, memsz: 0x10n }] })))).toBe("InvalidElf");
    expect(code(() => Elf.parse(makeElf({ segments: [{ type: 6, ...seg }] })))).toBe("InvalidElf");
    const badNote = makeElf({ segments: [seg], notes: [pvhNote(0x1000)] });
    new DataView(badNote.buffer).setUint32(badNote.length - 24 + 4, 0x1000, true); // descsz past the segment
    expect(code(() => Elf.parse(badNote))).toBe("InvalidElf");
  });
});

describe("Elf.load", () => {
  it("copies file bytes and zeroes the rest of p_memsz", () => {
    const img = makeElf({ segments: [seg] });
    const mem = memory(4 << 20);
    mem.write(0x200000, new Uint8Array(0x300).fill(0xee));
    const load = Elf.parse(img).load(mem);
    expect(load).toMatchObject({ start: 0x200000, end: 0x200300 });
    const got = new Uint8Array(0x300);
    mem.read(0x200000, got);
    expect(got.subarray(0, 0x100)).toEqual(img.subarray(64 + 56, 64 + 56 + 0x100));
    expect(got.subarray(0x100).every((b) => b === 0)).toBe(true);
  });

  it("writes nothing when any segment lies outside memory or in the MMIO hole", () => {
    const mem = memory(4 << 20);
    const before = memHash(mem);
    const img = makeElf({ segments: [seg, { paddr: 0x3ff000n, filesz: 0x10n, memsz: 0x2000n }] });
    expect(code(() => Elf.parse(img).load(mem))).toBe("OutOfGuestMemory");
    const hole = makeElf({ segments: [seg, { paddr: 0xbffff000n, filesz: 0x10n, memsz: 0x2000n }] });
    const sparse = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 4 << 20 }, { start: 0xbff00000, size: 0x100000 }], { shared: false });
    expect(code(() => Elf.parse(hole).load(sparse))).toBe("InMmioHole");
    expect(memHash(mem)).toBe(before);
  });

  it("never throws anything but LoaderError for arbitrary program headers", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (paddr, offset, filesz, memsz) => {
        const img = makeElf({ segments: [{ paddr, offset, filesz, memsz, data: new Uint8Array(16) }] });
        try {
          const e = Elf.parse(img);
          for (const s of e.segments) {
            expect(s.offset + s.fileSize).toBeLessThanOrEqual(img.byteLength);
            expect(s.paddr + s.memSize).toBeLessThanOrEqual(2 ** 52);
          }
        } catch (err) {
          expect(err).toBeInstanceOf(LoaderError);
        }
      }),
      { numRuns: 300 },
    );
  });
});
