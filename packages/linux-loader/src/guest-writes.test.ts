import { GuestMemoryArrayBuffer } from "@ts-vmm/vm-memory";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { LoaderError } from "./error.js";
import { commitWrites, validateWrites, type GuestWrite } from "./guest-writes.js";

const SIZE = 0x4000;

function snapshot(mem: GuestMemoryArrayBuffer): Uint8Array {
  const b = new Uint8Array(SIZE);
  mem.read(0, b);
  return b;
}

describe("commitWrites", () => {
  it("writes everything or nothing (property)", () => {
    const write = fc.record({
      addr: fc.oneof(fc.integer({ min: 0, max: SIZE + 0x100 }), fc.constantFrom(-1, 0.5, 2 ** 52, 0xc000_0000)),
      len: fc.integer({ min: 0, max: 0x400 }),
      zeroFill: fc.integer({ min: 0, max: 0x200 }),
      fill: fc.integer({ min: 1, max: 255 }),
    });
    fc.assert(
      fc.property(fc.array(write, { maxLength: 6 }), (specs) => {
        const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: SIZE }], { shared: false });
        mem.write(0, new Uint8Array(SIZE).fill(0xee));
        const writes: GuestWrite[] = specs.map((s, i) => ({ addr: s.addr, data: new Uint8Array(s.len).fill(s.fill), zeroFill: s.zeroFill, what: `w${i}` }));
        const before = snapshot(mem);
        let ok = true;
        try {
          commitWrites(mem, writes);
        } catch (e) {
          expect(e).toBeInstanceOf(LoaderError);
          ok = false;
        }
        const after = snapshot(mem);
        if (!ok) {
          expect(Buffer.compare(after, before)).toBe(0);
          return;
        }
        const expected = before.slice();
        for (const w of writes) {
          expected.set(w.data, w.addr);
          expected.fill(0, w.addr + w.data.length, w.addr + w.data.length + (w.zeroFill ?? 0));
        }
        expect(Buffer.compare(after, expected)).toBe(0);
      }),
      { numRuns: 500 },
    );
  });

  it("memoryIsZero leaves the zeroFill bytes alone and writes the data; without it they are zeroed", () => {
    const w: GuestWrite = { addr: 0x100, data: new Uint8Array(0x10).fill(7), zeroFill: 0x200, what: "segment" };
    for (const memoryIsZero of [true, false]) {
      const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: SIZE }], { shared: false });
      // Not fresh memory: the marker shows whether the fill range was written.
      mem.write(0, new Uint8Array(SIZE).fill(0xee));
      commitWrites(mem, [w], { memoryIsZero });
      const got = snapshot(mem);
      expect([...got.subarray(0x100, 0x110)]).toEqual(new Array(0x10).fill(7));
      expect(got.subarray(0x110, 0x310).every((b) => b === (memoryIsZero ? 0xee : 0))).toBe(true);
      expect(got[0x310]).toBe(0xee);
    }
    // The checks still cover the fill range: a BSS past the end of memory is refused either way.
    const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: SIZE }], { shared: false });
    expect(() => commitWrites(mem, [{ ...w, zeroFill: SIZE }], { memoryIsZero: true })).toThrow(expect.objectContaining({ code: "OutOfGuestMemory" }));
  });

  it("names the writes that collide", () => {
    const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: SIZE }], { shared: false });
    const w = (addr: number, len: number, what: string): GuestWrite => ({ addr, data: new Uint8Array(len), what });
    expect(() => validateWrites(mem, [w(0x100, 0x100, "zero page"), w(0x1f0, 4, "kernel")])).toThrow(/kernel at 0x1f0 overlaps zero page/);
    expect(() => validateWrites(mem, [w(0x3ff0, 0x20, "initrd")])).toThrow(expect.objectContaining({ code: "OutOfGuestMemory" }));
    expect(() => validateWrites(mem, [{ ...w(0x100, 0x10, "bss"), zeroFill: 0x4000 }])).toThrow(expect.objectContaining({ code: "OutOfGuestMemory" }));
    expect(() => validateWrites(mem, [w(0xbffffff0, 0x20, "segment")])).toThrow(expect.objectContaining({ code: "InMmioHole" }));
    expect(() => validateWrites(mem, [w(2 ** 53, 1, "x")])).toThrow(expect.objectContaining({ code: "Overflow" }));
    expect(() => validateWrites(mem, [w(0x100, 0, "empty"), w(0x100, 0x10, "real")])).not.toThrow();
  });
});
