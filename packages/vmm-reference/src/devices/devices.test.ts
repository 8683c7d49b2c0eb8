import { describe, expect, it } from "vitest";
import { DebugExit, debugExitStatus } from "./debug-exit.js";
import { PioBus } from "./pio-bus.js";
import { Serial8250 } from "./serial.js";

const b = (...v: number[]): Uint8Array => Uint8Array.from(v);

describe("Serial8250", () => {
  it("transmits THR writes and always reports the transmitter empty", () => {
    const out: number[] = [];
    const s = new Serial8250((x) => out.push(x));
    s.write(0, b(0x41));
    s.write(0, b(0x0a));
    const lsr = b(0);
    s.read(5, lsr);
    expect(out).toEqual([0x41, 0x0a]);
    expect(lsr[0]! & 0x60).toBe(0x60);
    expect(lsr[0]! & 0x01).toBe(0); // no received data
  });

  it("routes offsets 0 and 1 to the divisor latch while DLAB is set", () => {
    const out: number[] = [];
    const s = new Serial8250((x) => out.push(x));
    s.write(3, b(0x83));
    s.write(0, b(0x01));
    s.write(1, b(0x02));
    const r = b(0);
    s.read(0, r);
    expect(r[0]).toBe(0x01);
    s.read(1, r);
    expect(r[0]).toBe(0x02);
    expect(out).toEqual([]);
    s.write(3, b(0x03));
    s.read(1, r);
    expect(r[0]).toBe(0); // IER again
  });

  it("reflects MCR into MSR in loopback and swallows output there", () => {
    const out: number[] = [];
    const s = new Serial8250((x) => out.push(x));
    s.write(4, b(0x10 | 0x0f));
    const r = b(0);
    s.read(6, r);
    expect(r[0]).toBe(0xf0);
    s.write(0, b(0x42));
    expect(out).toEqual([]);
    s.write(4, b(0x10 | 0x02)); // RTS only -> CTS only
    s.read(6, r);
    expect(r[0]).toBe(0x10);
  });

  it("never reports a pending interrupt and keeps the scratch register", () => {
    const s = new Serial8250(() => {});
    const r = b(0);
    s.read(2, r);
    expect(r[0]).toBe(0x01);
    s.write(7, b(0x5a));
    s.read(7, r);
    expect(r[0]).toBe(0x5a);
  });
});

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

describe("DebugExit", () => {
  it("reports the little-endian value of 1-, 2- and 4-byte writes", () => {
    const got: number[] = [];
    const d = new DebugExit((v) => got.push(v));
    d.write(0, b(0x05));
    d.write(0, b(0x34, 0x12));
    d.write(0, b(0x78, 0x56, 0x34, 0xf2));
    expect(got).toEqual([5, 0x1234, 0xf2345678]);
  });

  it("maps values to QEMU's isa-debug-exit status", () => {
    expect(debugExitStatus(0)).toBe(1);
    expect(debugExitStatus(1)).toBe(3);
    expect(debugExitStatus(0x80)).toBe(1);
  });
});
