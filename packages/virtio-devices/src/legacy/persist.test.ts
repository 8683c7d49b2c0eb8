import { describe, expect, it } from "vitest";
import { I8042, i8042State } from "./i8042.js";
import { Serial16550, serialState, type SerialState } from "./serial.js";

const b = (...v: number[]): Uint8Array => Uint8Array.from(v);
const rd = (d: { read(o: number, x: Uint8Array): void }, o: number): number => {
  const x = new Uint8Array(1);
  d.read(o, x);
  return x[0]!;
};

describe("legacy device persist", () => {
  it("16550A: registers, pending THRE and the receive FIFO survive a save into a fresh device; the IRQ output follows", () => {
    const irqs: boolean[] = [];
    const a = new Serial16550(serialState(), { out: () => {}, irq: () => {} }, false);
    a.write(3, b(0x83)); // DLAB
    a.write(0, b(0x01));
    a.write(1, b(0x00));
    a.write(3, b(0x03));
    a.write(7, b(0x5a)); // scratch
    a.write(1, b(0x03)); // IER: RDI | THRI
    expect(a.enqueue(b(0x41, 0x42, 0x43))).toBe(3);
    const saved = JSON.parse(JSON.stringify(a.state())) as SerialState;
    expect(saved).toMatchObject({ ier: 3, lcr: 3, scr: 0x5a, dll: 1, dlm: 0, rx: [0x41, 0x42, 0x43] });
    const c = new Serial16550(serialState(), { out: () => {}, irq: (l) => irqs.push(l) }, false);
    c.restoreState(saved);
    expect(c.state()).toEqual(a.state());
    expect(irqs).toEqual([true]); // data waiting with IER.RDI: the line is high after restore
    expect(rd(c, 2) & 0x0f).toBe(rd(a, 2) & 0x0f); // same interrupt identification
    expect([rd(c, 0), rd(c, 0), rd(c, 0)]).toEqual([0x41, 0x42, 0x43]);
  });

  it("16550A: a state with a field out of range is refused and changes nothing", () => {
    const c = new Serial16550(serialState(), { out: () => {}, irq: () => {} }, false);
    const before = c.state();
    const good = { ...before };
    for (const bad of [{ ...good, ier: 0x10 }, { ...good, lcr: 256 }, { ...good, rx: new Array(17).fill(0) }, { ...good, rx: [300] }, { ...good, threPending: 1 }, { ...good, dll: -1 }]) {
      expect(() => c.restoreState(bad as unknown as SerialState)).toThrow(RangeError);
    }
    expect(c.state()).toEqual(before);
  });

  it("i8042: command byte, a command waiting for data and the output queue survive; OBF follows the queue", () => {
    const a = new I8042(i8042State(), { reset: () => {}, kbdIrq: () => {} }, false);
    a.write(0, b(0xf2)); // keyboard identify: 0xFA 0xAB 0x83 queued
    a.write(4, b(0x60)); // write command byte: waits for data
    const saved = JSON.parse(JSON.stringify(a.state()));
    expect(saved.pending).toBe(0x60);
    expect(saved.queue.map((e: { value: number }) => e.value)).toEqual([0xfa, 0xab, 0x83]);
    const c = new I8042(i8042State(), { reset: () => {}, kbdIrq: () => {} }, false);
    c.restoreState(saved);
    expect(c.state()).toEqual(a.state());
    expect(rd(c, 4) & 1).toBe(1); // OBF
    expect([rd(c, 0), rd(c, 0), rd(c, 0)]).toEqual([0xfa, 0xab, 0x83]);
    c.write(0, b(0x45)); // the data byte of the pending 0x60
    expect(c.state().ctr).toBe(0x45 | 0x20); // the data reached the command byte (AUX-disable stays set: no AUX port)
    expect(() => c.restoreState({ ...saved, pending: 0x20 })).toThrow(RangeError);
    expect(() => c.restoreState({ ...saved, queue: new Array(17).fill({ value: 1, keyboard: true }) })).toThrow(RangeError);
  });
});
