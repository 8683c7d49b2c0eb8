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

  it("routes every port of every range, and only those, to its device (the port table)", () => {
    const bus = new PioBus();
    const hits: [number, number][] = [];
    const dev = (id: number) => ({ read: () => {}, write: (o: number) => { hits.push([id, o]); } });
    bus.insert(0xfffc, 4, dev(3));
    bus.insert(0, 2, dev(1));
    bus.insert(0x3f8, 8, dev(2));
    for (const p of [0, 1, 2, 0x3f7, 0x3f8, 0x3ff, 0x400, 0xfffb, 0xfffc, 0xffff]) bus.write(p, new Uint8Array(1));
    expect(hits).toEqual([[1, 0], [1, 1], [2, 0], [2, 7], [3, 0], [3, 3]]);
    expect(bus.unclaimed).toBe(4);
    // a failed insert leaves the table as it was
    expect(() => bus.insert(0x3f0, 9, dev(4))).toThrow(RangeError);
    bus.write(0x3f0, new Uint8Array(1));
    expect(bus.unclaimed).toBe(5);
  });
});
