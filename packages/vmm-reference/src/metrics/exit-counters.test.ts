import { describe, expect, it } from "vitest";
import { EXIT_REASONS, ExitCounterWriter, PIO_DEVICES, exitCountersBytes, readExitCounters } from "./exit-counters.js";
import { exitMetrics } from "./collect.js";

const WINDOWS: [number, number][] = [[0xfec00000, 0xfec01000], [0xd0001000, 0xd0002000]];
const NAMES = ["ioapic", "blk0"];

describe("exit counters", () => {
  it("counts by reason, port device and MMIO window; the reader sees what the writer added", () => {
    const buf = new SharedArrayBuffer(exitCountersBytes(WINDOWS.length));
    const w = new ExitCounterWriter(buf, WINDOWS);
    for (const p of [0x3f8, 0x3fd, 0x3ff, 0x60, 0x64, 0x3c2, 0xf4, 0x440, 0x80, 0x400, 0x10000 + 0x3f8]) {
      w.exit("IoOut");
      w.port(p);
    }
    for (const a of [0xfec00000, 0xfec00fff, 0xd0001000, 0xd0001fff, 0xd0002000, 0xd0000000]) {
      w.exit("MmioWrite");
      w.mmio(a);
    }
    w.exit("Hlt");
    w.again();
    w.interruptRegister();
    w.mailboxTimeouts(3);
    w.mailboxTimeouts(4); // copied, not added
    const r = readExitCounters(buf, NAMES);
    expect(r.total).toBe(11 + 6 + 1);
    expect(r.byReason).toEqual({ IoOut: 11, MmioWrite: 6, Hlt: 1, Again: 1, MmioInterruptRegister: 1, MmioMailboxTimeouts: 4 });
    expect(r.byDevice).toEqual({
      com1: 4, i8042: 2, "acpi-pm": 1, "debug-exit": 1, "boot-timer": 1,
      pic: 0, pit: 0, "port-b": 0, cmos: 0, port80: 1, "pci-config": 0, "pio-unknown": 1,
      ioapic: 2, blk0: 2, "mmio-unknown": 2,
    });
    expect(w.reasons()).toEqual(r.byReason);
  });

  it("io() and mmioExit() count the same as exit()+port()/mmio(), and mmioExit returns the window", () => {
    const a = new SharedArrayBuffer(exitCountersBytes(WINDOWS.length));
    const b = new SharedArrayBuffer(exitCountersBytes(WINDOWS.length));
    const wa = new ExitCounterWriter(a, WINDOWS);
    const wb = new ExitCounterWriter(b, WINDOWS);
    const ports: [boolean, number][] = [[true, 0x3f8], [false, 0x3fd], [true, 0x80], [false, 0x1234], [true, 0xcfc]];
    for (const [out, p] of ports) {
      wa.io(out, p);
      wb.exit(out ? "IoOut" : "IoIn");
      wb.port(p);
    }
    const addrs: [boolean, number, number][] = [[true, 0xfec00010, 0], [false, 0xd0001ffc, 1], [true, 0xd0002000, -1], [false, 0, -1]];
    for (const [write, addr, win] of addrs) {
      expect(wa.mmioExit(write, addr)).toBe(win);
      wb.exit(write ? "MmioWrite" : "MmioRead");
      expect(wb.mmio(addr)).toBe(win);
    }
    wa.exit("Hlt");
    wb.exit("Hlt");
    wa.exit("NotAKind" as never); // a kind this build does not know counts as Unknown
    wb.exit("Unknown");
    const ra = readExitCounters(a, NAMES);
    expect(ra).toEqual(readExitCounters(b, NAMES));
    expect(ra.byReason).toEqual({ IoOut: 3, IoIn: 2, MmioWrite: 2, MmioRead: 2, Hlt: 1, Unknown: 1 });
    expect(ra.byDevice).toMatchObject({ com1: 2, port80: 1, "pci-config": 1, "pio-unknown": 1, ioapic: 1, blk0: 1, "mmio-unknown": 2 });
    expect(ra.total).toBe(11);
  });

  it("sums vCPUs; a buffer too small for its windows is refused", () => {
    const bufs = [0, 1].map(() => new SharedArrayBuffer(exitCountersBytes(WINDOWS.length)));
    bufs.forEach((b, i) => {
      const w = new ExitCounterWriter(b, WINDOWS);
      for (let k = 0; k <= i; k++) {
        w.exit("MmioRead");
        w.mmio(0xd0001004);
      }
    });
    const m = exitMetrics(bufs, NAMES);
    expect(m.total).toBe(3);
    expect(m.byDevice["blk0"]).toBe(3);
    expect(m.vcpus.map((v) => v.total)).toEqual([1, 2]);
    expect(() => new ExitCounterWriter(new SharedArrayBuffer(8), WINDOWS)).toThrow(RangeError);
    expect(EXIT_REASONS).toContain("X86Rdmsr");
    expect(PIO_DEVICES.at(-1)).toBe("pio-unknown");
  });
});
