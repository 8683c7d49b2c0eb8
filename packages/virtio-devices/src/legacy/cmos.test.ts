import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { CMOS_DATA_PORT, CMOS_INDEX_PORT, CMOS_PORTS, CmosRtc, cmosState, type CmosState } from "./cmos.js";
import { PioBus } from "./pio-bus.js";

const b = (...v: number[]): Uint8Array => Uint8Array.from(v);

/** An RTC on a fake UTC clock (ms) that the test sets. */
function rtc(start = Date.UTC(2024, 1, 29, 23, 59, 58, 500)): { c: CmosRtc; set: (ms: number) => void; tick: (ms: number) => void; rd: (r: number) => number; wr: (r: number, v: number) => void } {
  let now = start;
  const c = new CmosRtc(cmosState(), { canWait: false, clock: () => now });
  const rd = (r: number): number => {
    c.write(0, b(r));
    const x = b(0);
    c.read(1, x);
    return x[0]!;
  };
  const wr = (r: number, v: number): void => {
    c.write(0, b(r));
    c.write(1, b(v));
  };
  return { c, set: (ms) => void (now = ms), tick: (ms) => void (now += ms), rd, wr };
}

const TIME = [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32];
const readAll = (rd: (r: number) => number): number[] => TIME.map(rd);

describe("CmosRtc", () => {
  it("reads the host's UTC time in BCD and 24-hour mode by default, day of week 1 = Sunday", () => {
    const { rd } = rtc(Date.UTC(2025, 11, 31, 23, 59, 58, 0)); // Wednesday
    expect(readAll(rd)).toEqual([0x58, 0x59, 0x23, 0x04, 0x31, 0x12, 0x25, 0x20]);
    expect(rd(0x0b)).toBe(0x02);
    expect(rd(0x0d)).toBe(0x80); // VRT
    expect(rd(0x0a) & 0x7f).toBe(0x26);
  });

  it("the time advances with the clock, across day, month and year", () => {
    const { rd, tick } = rtc(Date.UTC(2025, 11, 31, 23, 59, 58, 0));
    tick(2000);
    expect(readAll(rd)).toEqual([0x00, 0x00, 0x00, 0x05, 0x01, 0x01, 0x26, 0x20]);
  });

  it("reads in binary when DM is set, and in 12-hour mode with the PM bit when bit 1 is clear", () => {
    const { rd, wr, set } = rtc(Date.UTC(2031, 6, 4, 13, 5, 9));
    wr(0x0b, 0x06); // binary, 24h
    expect(readAll(rd)).toEqual([9, 5, 13, 6, 4, 7, 31, 20]);
    wr(0x0b, 0x04); // binary, 12h
    expect(rd(0x04)).toBe(0x80 | 1);
    wr(0x0b, 0x00); // BCD, 12h
    expect(rd(0x04)).toBe(0x81);
    set(Date.UTC(2031, 6, 4, 0, 30));
    expect(rd(0x04)).toBe(0x12); // midnight is 12 AM
    set(Date.UTC(2031, 6, 4, 12, 30));
    expect(rd(0x04)).toBe(0x92); // noon is 12 PM
    set(Date.UTC(2031, 6, 4, 23, 30));
    expect(rd(0x04)).toBe(0x91);
  });

  it("SET freezes the registers; the guest's time is taken when SET clears and then runs from there", () => {
    const { c, rd, wr, tick } = rtc(Date.UTC(2024, 0, 1, 10, 0, 0, 250));
    wr(0x0b, 0x82); // SET, BCD, 24h
    expect(rd(0x0b) & 0x80).toBe(0x80);
    expect(rd(0x0a) & 0x80).toBe(0); // no update in progress while stopped
    tick(5000);
    expect(rd(0x00)).toBe(0x00); // frozen
    // 1999-12-31 23:59:50 (a Friday)
    for (const [r, v] of [[0x00, 0x50], [0x02, 0x59], [0x04, 0x23], [0x07, 0x31], [0x08, 0x12], [0x09, 0x99], [0x32, 0x19]] as const) wr(r, v);
    tick(3000);
    expect(rd(0x00)).toBe(0x50);
    expect(c.guestTime()).toBe(Date.UTC(1999, 11, 31, 23, 59, 50));
    wr(0x0b, 0x02); // clear SET: the clock runs from the written time
    expect(c.guestTime()).toBe(Date.UTC(1999, 11, 31, 23, 59, 50));
    tick(10_000);
    expect(readAll(rd)).toEqual([0x00, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20]); // 2000-01-01 00:00:00, Saturday
    expect(c.state().offsetMs).toBe(Date.UTC(1999, 11, 31, 23, 59, 50) - Date.UTC(2024, 0, 1, 10, 0, 8, 250));
  });

  it("setting the time in binary and 12-hour mode is read back in that mode", () => {
    const { c, wr } = rtc();
    wr(0x0b, 0x80 | 0x04); // SET, binary, 12h
    for (const [r, v] of [[0x00, 7], [0x02, 8], [0x04, 0x80 | 11], [0x07, 15], [0x08, 3], [0x09, 2], [0x32, 21]] as const) wr(r, v);
    wr(0x0b, 0x04);
    expect(c.guestTime()).toBe(Date.UTC(2102, 2, 15, 23, 8, 7));
  });

  it("a divider other than 010 stops the clock; restoring it starts the clock from the registers (Linux's set-time sequence)", () => {
    const { c, rd, wr, tick } = rtc(Date.UTC(2024, 5, 1, 12, 0, 0));
    const a = rd(0x0a);
    wr(0x0b, 0x82);
    wr(0x0a, a | 0x70); // divider reset
    wr(0x00, 0x30);
    wr(0x0b, 0x02); // SET off first, divider still in reset: still stopped
    tick(4000);
    expect(rd(0x00)).toBe(0x30);
    wr(0x0a, a);
    tick(1500);
    expect(rd(0x00)).toBe(0x31);
    expect(c.guestTime()).toBe(Date.UTC(2024, 5, 1, 12, 0, 31, 500));
  });

  it("a write to one time register while the clock runs sets that field and keeps the others and the phase", () => {
    const { c, wr } = rtc(Date.UTC(2024, 5, 1, 12, 0, 10, 400));
    wr(0x02, 0x45);
    expect(c.guestTime()).toBe(Date.UTC(2024, 5, 1, 12, 45, 10, 400));
  });

  it("UIP reads set only in the 244 µs before each update, and not at all while stopped", () => {
    const { rd, set, wr } = rtc();
    const at = (ms: number): number => {
      set(Date.UTC(2024, 0, 1, 0, 0, 0) + ms);
      return rd(0x0a) & 0x80;
    };
    expect(at(0)).toBe(0);
    expect(at(500)).toBe(0);
    expect(at(999.7)).toBe(0);
    expect(at(999.8)).toBe(0x80);
    expect(at(999.99)).toBe(0x80);
    expect(at(1000)).toBe(0);
    // a reader that polls UIP sees it clear within 244 µs
    let t = 999.8;
    while (at(t) !== 0) t += 0.05;
    expect(t - 999.8).toBeLessThanOrEqual(0.25);
    wr(0x0b, 0x82);
    expect(at(999.9)).toBe(0);
  });

  it("register A keeps its divider and rate bits, never the UIP bit; C reads 0 and D reads VRT, neither writable", () => {
    const { rd, wr } = rtc(Date.UTC(2024, 0, 1, 0, 0, 0, 100));
    wr(0x0a, 0xaf);
    expect(rd(0x0a)).toBe(0x2f);
    wr(0x0c, 0xff);
    expect(rd(0x0c)).toBe(0);
    wr(0x0d, 0x00);
    expect(rd(0x0d)).toBe(0x80);
    wr(0x0b, 0x72); // interrupt enables stored
    expect(rd(0x0b)).toBe(0x72);
    wr(0x0b, 0x92); // SET clears UIE
    expect(rd(0x0b)).toBe(0x82);
  });

  it("stores the alarm registers and the RAM bytes 0x0e-0x7f, and takes initial RAM", () => {
    const { rd, wr } = rtc();
    for (const r of [0x01, 0x03, 0x05]) wr(r, 0x40 + r);
    expect([rd(0x01), rd(0x03), rd(0x05)]).toEqual([0x41, 0x43, 0x45]);
    for (let r = 0x0e; r < 0x80; r++) if (r !== 0x32) wr(r, (r * 7) & 0xff);
    for (let r = 0x0e; r < 0x80; r++) if (r !== 0x32) expect(rd(r)).toBe((r * 7) & 0xff);
    const c = new CmosRtc(cmosState({ ram: b(1, 2, 3) }), { canWait: false });
    expect(c.state().bytes.slice(0x0e, 0x12)).toEqual([1, 2, 3, 0]);
    expect(() => cmosState({ ram: new Uint8Array(115) })).toThrow(RangeError);
  });

  it("masks the index to 7 bits (bit 7 is NMI disable, kept) and reads port 0x70 as all ones", () => {
    const { c, rd, wr } = rtc();
    wr(0x20, 0x5a);
    c.write(0, b(0x80 | 0x20));
    const x = b(0);
    c.read(1, x);
    expect(x[0]).toBe(0x5a);
    expect(c.state()).toMatchObject({ index: 0x20, nmiDisabled: true });
    c.read(0, x);
    expect(x[0]).toBe(0xff);
    expect(rd(0x20)).toBe(0x5a);
    expect(c.state().nmiDisabled).toBe(false);
  });

  it("a 16-bit access at 0x70 writes the index then the data; bytes beyond the two ports read ones", () => {
    const { c, rd } = rtc();
    c.write(0, b(0x40, 0x99));
    expect(rd(0x40)).toBe(0x99);
    const x = new Uint8Array(4);
    c.write(0, b(0x40));
    c.read(0, x);
    expect([...x]).toEqual([0xff, 0x99, 0xff, 0xff]);
  });

  it("sits on ports 0x70-0x71 of a bus", () => {
    const bus = new PioBus();
    bus.insert(CMOS_INDEX_PORT, CMOS_PORTS, new CmosRtc(cmosState(), { canWait: false }));
    bus.write(CMOS_INDEX_PORT, b(0x0d));
    const x = b(0);
    bus.read(CMOS_DATA_PORT, x);
    expect(x[0]).toBe(0x80);
    expect(bus.unclaimed).toBe(0);
  });

  it("the default clock is the host's UTC time, the same in every view of the state", () => {
    const s = cmosState();
    const views = [new CmosRtc(s, { canWait: false }), new CmosRtc(s, { canWait: false })];
    for (const v of views) expect(Math.abs(v.guestTime() - Date.now())).toBeLessThan(1000);
  });

  it("any byte sequence on the ports neither throws nor leaves the guest clock non-finite while it runs", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 1 }), fc.integer({ min: 0, max: 255 }), fc.boolean()), { maxLength: 200 }), (ops) => {
        const { c } = rtc();
        for (const [port, v, isWrite] of ops) {
          if (isWrite) c.write(port, b(v));
          else c.read(port, b(0));
        }
        const s = c.state();
        expect(Number.isFinite(s.offsetMs)).toBe(true);
        expect(s.bytes).toHaveLength(128);
        // Restart the clock with sane registers: it runs and reads finite.
        c.write(0, b(0x0a));
        c.write(1, b(0x26));
        c.write(0, b(0x0b));
        c.write(1, b(0x02));
        expect(Number.isFinite(c.guestTime())).toBe(true);
      }),
    );
  });

  it("nonsense time written with SET is normalised, or ignored when it is beyond the offset limit; never non-finite", () => {
    const { c, wr } = rtc(Date.UTC(2024, 0, 1));
    const before = c.guestTime();
    wr(0x0b, 0x86); // SET, binary
    for (const r of TIME) wr(r, 0xff); // year 25755 and more: beyond CMOS_OFFSET_LIMIT_MS
    wr(0x0b, 0x06);
    expect(c.guestTime()).toBe(before); // ignored: the clock goes on as it was
    wr(0x0b, 0x82); // SET, BCD
    for (const [r, v] of [[0x00, 0x00], [0x02, 0x00], [0x04, 0x00], [0x07, 0x31], [0x08, 0x13], [0x09, 0x24], [0x32, 0x20]] as const) wr(r, v);
    wr(0x0b, 0x02);
    expect(c.guestTime()).toBe(Date.UTC(2025, 0, 31)); // month 13 of 2024 is January 2025
  });

  it("state survives a JSON round trip into a fresh device: registers, RAM, index, offset, a stopped clock", () => {
    const { c, wr, rd } = rtc(Date.UTC(2024, 0, 1, 0, 0, 0));
    wr(0x0b, 0x82);
    wr(0x09, 0x42);
    wr(0x0b, 0x02);
    wr(0x50, 0xab);
    wr(0x01, 0x11);
    c.write(0, b(0x80 | 0x50));
    const saved = JSON.parse(JSON.stringify(c.state())) as CmosState;
    let now = Date.UTC(2030, 0, 1); // restored later: the guest's clock went on by the host's
    const d = new CmosRtc(cmosState(), { canWait: false, clock: () => now });
    d.restoreState(saved);
    expect(d.state()).toEqual(saved);
    const x = b(0);
    d.read(1, x);
    expect(x[0]).toBe(0xab); // the saved index
    expect(d.guestTime()).toBe(now + saved.offsetMs);
    expect(rd(0x01)).toBe(0x11);
    // stopped with SET: the registers are what it reads
    wr(0x0b, 0x82);
    const stopped = JSON.parse(JSON.stringify(c.state())) as CmosState;
    d.restoreState(stopped);
    now += 10_000;
    expect(d.guestTime()).toBe(c.guestTime());
  });

  it("a hostile saved state is refused and changes nothing", () => {
    const { c } = rtc();
    const good = c.state();
    const bad: unknown[] = [
      null, 5, { ...good, index: 0x80 }, { ...good, index: -1 }, { ...good, index: 1.5 }, { ...good, nmiDisabled: 1 },
      { ...good, bytes: good.bytes.slice(1) }, { ...good, bytes: [...good.bytes.slice(1), 256] }, { ...good, bytes: "x" },
      { ...good, offsetMs: Number.NaN }, { ...good, offsetMs: 1e15 }, { ...good, offsetMs: "0" }, { ...good, bytes: [...good.bytes.slice(1), -1] },
    ];
    c.write(0, b(0x33));
    const before = c.state();
    for (const s of bad) expect(() => c.restoreState(s as CmosState)).toThrow(RangeError);
    expect(c.state()).toEqual(before);
    expect(() => new CmosRtc(new SharedArrayBuffer(16))).toThrow(RangeError);
  });
});
