import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { DirtyBitmap } from "./dirty-bitmap.js";
import { GuestMemoryError } from "./error.js";

describe("DirtyBitmap", () => {
  it("sizes to whole u64 words like KVM's log", () => {
    const b = new DirtyBitmap(4096 * 65 + 1);
    expect(b.pageCount).toBe(66);
    expect(b.buffer.byteLength).toBe(16);
    expect(new DirtyBitmap(0).pageCount).toBe(0);
  });
  it("marks page ranges, including across word boundaries", () => {
    const b = new DirtyBitmap(4096 * 200);
    b.mark(4096 * 30 + 5, 4096 * 5); // pages 30..35
    b.mark(4096 * 100, 1);
    b.mark(4096 * 199 + 4095, 1);
    b.mark(0, 0); // nothing
    expect([...b.pages()]).toEqual([30, 31, 32, 33, 34, 35, 100, 199]);
    expect(b.count()).toBe(8);
    expect(b.isDirty(35)).toBe(true);
    expect(b.isDirty(36)).toBe(false);
    expect(() => b.isDirty(200)).toThrow(GuestMemoryError);
  });
  it("never marks past its pages", () => {
    const b = new DirtyBitmap(4096 * 3);
    b.mark(4096 * 2, 4096 * 100);
    expect([...b.pages()]).toEqual([2]);
    expect(b.toKvmLayout()[0]).toBe(4n);
  });
  it("merges a KVM dirty log given as bytes, u32 or u64 words", () => {
    const b = new DirtyBitmap(4096 * 130);
    const log = new BigUint64Array(3);
    log[0] = (1n << 0n) | (1n << 63n);
    log[1] = 1n << 1n; // page 65
    log[2] = 1n | (1n << 40n); // page 128, and page 168 which is past pageCount: ignored
    b.mergeKvmLog(log);
    expect([...b.pages()]).toEqual([0, 63, 65, 128]);
    const b2 = new DirtyBitmap(4096 * 130);
    b2.mergeKvmLog(new Uint8Array(log.buffer));
    b2.mergeKvmLog(new Uint32Array(log.buffer));
    expect([...b2.pages()]).toEqual([0, 63, 65, 128]);
    expect(() => b.mergeKvmLog(new Uint8Array(16))).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
  });
  it("takes and clears in KVM layout", () => {
    const b = new DirtyBitmap(4096 * 70);
    b.mark(4096 * 64, 4096 * 2);
    const t = b.takeKvmLayout();
    expect([...t]).toEqual([0n, 3n]);
    expect(b.count()).toBe(0);
    b.mark(0, 1);
    b.clear();
    expect([...b.pages()]).toEqual([]);
  });
  it("adopts shared storage from another bitmap", () => {
    const a = new DirtyBitmap(4096 * 10);
    const b = new DirtyBitmap(4096 * 10, a.buffer);
    b.mark(4096 * 3, 1);
    expect(a.isDirty(3)).toBe(true);
    expect(() => new DirtyBitmap(4096 * 100, new SharedArrayBuffer(8))).toThrow(GuestMemoryError);
    expect(() => new DirtyBitmap(-1)).toThrow(GuestMemoryError);
  });
  it("matches a set model under random marks", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 300 }),
        fc.array(fc.tuple(fc.nat(4096 * 310), fc.nat(4096 * 40)), { maxLength: 20 }),
        (pages, marks) => {
          const b = new DirtyBitmap(pages * 4096);
          const model = new Set<number>();
          for (const [off, len] of marks) {
            b.mark(off, len);
            if (len > 0) {
              for (let p = Math.floor(off / 4096); p <= Math.floor((off + len - 1) / 4096) && p < pages; p++) model.add(p);
            }
          }
          expect([...b.pages()]).toEqual([...model].sort((x, y) => x - y));
        },
      ),
      { numRuns: 200 },
    );
  });
});
