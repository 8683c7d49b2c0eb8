import { describe, expect, it } from "vitest";
import { PioBus } from "./pio-bus.js";

const b = (...v: number[]): Uint8Array => Uint8Array.from(v);

describe("PioBus", () => {
  it("dispatches by range with offsets and floats unclaimed reads high", () => {
    const seen: Array<[string, number, number]> = [];
    const bus = new PioBus();
    bus.insert(0x3f8, 8, {
      read: (o, d) => { seen.push(["r", o, d.length]); d.fill(7); },
      write: (o, d) => { seen.push(["w", o, d[0]!]); },
    });
    const d = b(0, 0);
    bus.read(0x3fd, d);
    bus.write(0x3f8, b(9));
    bus.read(0x80, d);
    expect(seen).toEqual([["r", 5, 2], ["w", 0, 9]]);
    expect([...d]).toEqual([0xff, 0xff]);
    expect(bus.unclaimed).toBe(1);
  });

  it("rejects overlapping and out-of-range ranges", () => {
    const bus = new PioBus();
    const dev = { read: () => {}, write: () => {} };
    bus.insert(0x60, 1, dev);
    expect(() => bus.insert(0x5f, 2, dev)).toThrow(RangeError);
    expect(() => bus.insert(0xffff, 2, dev)).toThrow(RangeError);
    expect(() => bus.insert(-1, 1, dev)).toThrow(RangeError);
    bus.insert(0x61, 1, dev);
  });
});
