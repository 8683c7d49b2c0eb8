import { describe, expect, it } from "vitest";
import { Serial16550, serialState } from "./serial.js";

const b = (...v: number[]): Uint8Array => Uint8Array.from(v);

function uart(): { s: Serial16550; out: number[]; irqs: boolean[]; space: number[] } {
  const out: number[] = [];
  const irqs: boolean[] = [];
  const space: number[] = [];
  const s = new Serial16550(serialState(), { out: (x) => out.push(x), irq: (l) => irqs.push(l), rxSpace: () => space.push(1) });
  return { s, out, irqs, space };
}
const rd = (d: { read(o: number, b: Uint8Array): void }, o: number): number => {
  const r = b(0);
  d.read(o, r);
  return r[0]!;
};

describe("Serial16550", () => {
  it("transmits THR writes at once and always reports the transmitter empty", () => {
    const { s, out } = uart();
    s.write(0, b(0x41));
    s.write(0, b(0x0a));
    expect(out).toEqual([0x41, 0x0a]);
    expect(rd(s, 5) & 0x61).toBe(0x60); // THRE, TEMT, no data
  });

  it("routes offsets 0 and 1 to the divisor latch while DLAB is set", () => {
    const { s, out } = uart();
    s.write(3, b(0x83));
    s.write(0, b(0x01));
    s.write(1, b(0x02));
    expect(rd(s, 0)).toBe(0x01);
    expect(rd(s, 1)).toBe(0x02);
    expect(out).toEqual([]);
    s.write(3, b(0x03));
    expect(rd(s, 1)).toBe(0); // IER again
  });

  it("reflects MCR into MSR in loopback and receives its own output there", () => {
    const { s, out } = uart();
    s.write(4, b(0x10 | 0x0f));
    expect(rd(s, 6)).toBe(0xf0);
    s.write(0, b(0x42));
    expect(out).toEqual([]);
    expect(rd(s, 5) & 1).toBe(1);
    expect(rd(s, 0)).toBe(0x42);
    s.write(4, b(0x10 | 0x02)); // RTS only -> CTS only
    expect(rd(s, 6)).toBe(0x10);
    for (let i = 0; i < 17; i++) s.write(0, b(i)); // one more than the FIFO holds
    expect(rd(s, 5) & 0x03).toBe(0x03); // data ready and overrun
    expect(rd(s, 5) & 0x02).toBe(0); // OE clears on read
  });

  it("looks like a 16550A to Linux's autoconfig: FIFO bits in IIR, IER bits 4-7 read 0, scratch kept", () => {
    const { s } = uart();
    expect(rd(s, 2)).toBe(0x01);
    s.write(2, b(0xc7));
    expect(rd(s, 2) >> 6).toBe(3);
    s.write(1, b(0xff & ~0x02));
    expect(rd(s, 1)).toBe(0x0d);
    s.write(7, b(0x5a));
    expect(rd(s, 7)).toBe(0x5a);
  });

  it("raises THRE when IER.THRI is enabled, acknowledges it on an IIR read, raises it again after a THR write", () => {
    const { s, out, irqs } = uart();
    s.write(1, b(0x02));
    expect(irqs).toEqual([true]);
    expect(rd(s, 2) & 0x0f).toBe(0x02);
    expect(irqs).toEqual([true, false]);
    expect(rd(s, 2) & 0x0f).toBe(0x01); // acknowledged
    s.write(0, b(0x61));
    expect(out).toEqual([0x61]);
    expect(irqs).toEqual([true, false, true]);
    s.write(0, b(0x62)); // still pending: no second edge
    expect(irqs).toEqual([true, false, true]);
    s.write(1, b(0x00));
    expect(irqs).toEqual([true, false, true, false]);
    // Linux's THRE test: re-enabling THRI with the THR empty raises it again.
    s.write(1, b(0x02));
    expect(rd(s, 2) & 0x0f).toBe(0x02);
  });

  it("delivers host input through a bounded FIFO with the received-data interrupt, and asks for more once drained", () => {
    const { s, irqs, space } = uart();
    s.write(1, b(0x01));
    const input = Uint8Array.from({ length: 20 }, (_, i) => 0x30 + i);
    expect(s.enqueue(input)).toBe(16);
    expect(irqs).toEqual([true]);
    expect(rd(s, 2) & 0x0f).toBe(0x04);
    const got: number[] = [];
    while (rd(s, 5) & 1) got.push(rd(s, 0));
    expect(got).toEqual([...input.subarray(0, 16)]);
    expect(space).toEqual([1]); // once, at the first read after the short enqueue
    expect(irqs).toEqual([true, false]);
    expect(s.enqueue(input.subarray(16))).toBe(4);
    expect(rd(s, 0)).toBe(0x40);
    // Clearing the FIFO (the 8250 driver does at open) with input held back asks for more too.
    expect(s.enqueue(new Uint8Array(20))).toBe(13);
    s.write(2, b(0x07));
    expect(space).toEqual([1, 1]);
    expect(rd(s, 5) & 1).toBe(0);
    expect(rd(s, 0xff)).toBe(0); // a bad offset reads 0, no crash
  });

  it("is one device seen from two views of the same state", () => {
    const state = serialState();
    const a = new Serial16550(state, { out: () => {}, irq: () => {} });
    const c = new Serial16550(state, { out: () => {}, irq: () => {} });
    a.write(7, b(0x77));
    expect(rd(c, 7)).toBe(0x77);
    expect(() => new Serial16550(new SharedArrayBuffer(4), { out: () => {}, irq: () => {} })).toThrow(RangeError);
  });
});
