import { describe, expect, it } from "vitest";
import { SerialOutputRing } from "./serial-output.js";

describe("SerialOutputRing", () => {
  const bytes = (n: number, from = 0): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (from + i) & 0xff);

  it("rounds its capacity down to a power of two and refuses bad sizes", () => {
    expect(new SerialOutputRing(4096).capacity).toBe(4096);
    expect(new SerialOutputRing(5000).capacity).toBe(4096);
    expect(() => new SerialOutputRing(0)).toThrow(RangeError);
    expect(() => new SerialOutputRing(new SharedArrayBuffer(32 + 3))).toThrow(RangeError);
  });

  it("hands every byte over in order, across the wrap, with one wake-up until drained", () => {
    const ring = new SerialOutputRing(1024);
    const consumer = new SerialOutputRing(ring.buffer);
    let wakes = 0;
    const got: number[] = [];
    let next = 0;
    for (let round = 0; round < 10; round++) {
      for (let k = 0; k < 3; k++) {
        const b = bytes(300, next);
        ring.write(b, b.byteLength, () => false, () => wakes++);
        next += 300;
      }
      expect(wakes).toBe(round + 1); // one per drain cycle, not per write
      got.push(...consumer.drain()!);
      expect(consumer.drain()).toBeUndefined();
    }
    expect(got).toEqual([...bytes(9000)]);
    expect(ring.dropped).toBe(0);
  });

  it("writes only `length` bytes, and drops (counting) what does not fit while the VM is stopping", () => {
    const ring = new SerialOutputRing(1024);
    ring.write(bytes(10), 4, () => false, () => {});
    expect([...ring.drain()!]).toEqual([0, 1, 2, 3]);
    ring.write(bytes(1500), 1500, () => true, () => {});
    expect(ring.dropped).toBe(476);
    expect(ring.drain()!.byteLength).toBe(1024);
  });
});
