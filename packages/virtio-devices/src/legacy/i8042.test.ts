import { describe, expect, it } from "vitest";
import { I8042, i8042State } from "./i8042.js";

const b = (...v: number[]): Uint8Array => Uint8Array.from(v);
const rd = (d: { read(o: number, b: Uint8Array): void }, o: number): number => {
  const r = b(0);
  d.read(o, r);
  return r[0]!;
};

describe("I8042", () => {
  const kbc = (): { k: I8042; resets: number[]; irqs: number[] } => {
    const resets: number[] = [];
    const irqs: number[] = [];
    return { k: new I8042(i8042State(), { reset: () => resets.push(1), kbdIrq: () => irqs.push(1) }), resets, irqs };
  };

  it("answers the controller self test and command byte reads and writes", () => {
    const { k } = kbc();
    expect(rd(k, 4) & 1).toBe(0);
    k.write(4, b(0xaa));
    expect(rd(k, 4) & 1).toBe(1);
    expect(rd(k, 0)).toBe(0x55);
    expect(rd(k, 4) & 1).toBe(0);
    k.write(4, b(0x60));
    k.write(0, b(0x45));
    k.write(4, b(0x20));
    expect(rd(k, 0)).toBe(0x45 | 0x20); // no AUX port: AUXDIS stays set
    k.write(4, b(0xa8));
    k.write(4, b(0x20));
    expect(rd(k, 0) & 0x20).toBe(0x20);
  });

  it("acks keyboard commands with an interrupt and identifies as an MF2 keyboard", () => {
    const { k, irqs } = kbc();
    k.write(0, b(0xf2));
    expect(irqs).toEqual([1]);
    expect([rd(k, 0), rd(k, 0), rd(k, 0)]).toEqual([0xfa, 0xab, 0x83]);
    expect(irqs).toEqual([1, 1, 1]);
    expect(rd(k, 4) & 1).toBe(0);
  });

  it("resets the CPU on command 0xFE and on an output-port write with bit 0 clear", () => {
    const { k, resets } = kbc();
    k.write(4, b(0xfe));
    expect(resets).toEqual([1]);
    k.write(4, b(0xd1));
    k.write(0, b(0x02));
    expect(resets).toEqual([1, 1]);
    k.write(4, b(0xd1));
    k.write(0, b(0x03));
    expect(resets).toEqual([1, 1]);
  });

  it("injects Ctrl-Alt-Del as set 1 make and break codes with one interrupt per byte", () => {
    const { k, irqs } = kbc();
    expect(k.ctrlAltDel()).toBe(true);
    expect(irqs).toEqual([1]);
    const got: number[] = [];
    while (rd(k, 4) & 1) got.push(rd(k, 0));
    expect(got).toEqual([0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d]);
    expect(irqs.length).toBe(8);
  });

  it("injects set 2 codes with translation off, no interrupt with KBDINT off, nothing while the keyboard is disabled", () => {
    const { k, irqs } = kbc();
    k.write(4, b(0x60));
    k.write(0, b(0x04)); // SYS only: no translation, no keyboard interrupt
    expect(k.ctrlAltDel()).toBe(true);
    expect(irqs).toEqual([]);
    const got: number[] = [];
    while (rd(k, 4) & 1) got.push(rd(k, 0));
    expect(got).toEqual([0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14]);
    k.write(4, b(0xad));
    expect(k.ctrlAltDel()).toBe(false);
    expect(rd(k, 4) & 1).toBe(0);
    k.write(4, b(0xae));
    expect(k.ctrlAltDel()).toBe(true);
  });

  it("does not split a sequence when the output queue is short of room", () => {
    const { k } = kbc();
    expect(k.ctrlAltDel()).toBe(true);
    expect(k.ctrlAltDel()).toBe(true); // 16 bytes: full
    expect(k.ctrlAltDel()).toBe(false);
    let n = 0;
    while (rd(k, 4) & 1) { rd(k, 0); n++; }
    expect(n).toBe(16);
  });
});
