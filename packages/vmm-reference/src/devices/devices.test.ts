import { describe, expect, it } from "vitest";
import { DebugExit, debugExitStatus } from "./debug-exit.js";
import { PioBus } from "./pio-bus.js";
import { AcpiPm } from "./acpi-pm.js";
import { I8042, i8042State } from "./i8042.js";
import { Serial16550, serialState } from "./serial.js";
import { SerialOutputRing } from "./serial-output.js";

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
});

describe("AcpiPm", () => {
  it("powers off on SLP_EN with SLP_TYP 5 and resets on RESET_VALUE 1; ignores everything else", () => {
    const got: string[] = [];
    const pm = new AcpiPm((e) => got.push(e));
    pm.write(0, b(0x14)); // SLP_TYP 5 without SLP_EN
    pm.write(0, b(0x20 | (3 << 2))); // S3: not supported
    pm.write(1, b(0x80)); // clearing WAK_STS
    pm.write(2, b(2));
    expect(got).toEqual([]);
    pm.write(0, b(0x20 | (5 << 2)));
    pm.write(2, b(1));
    expect(got).toEqual(["PowerOff", "Reset"]);
    expect(rd(pm, 1)).toBe(0);
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
