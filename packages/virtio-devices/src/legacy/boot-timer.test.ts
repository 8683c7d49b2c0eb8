import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { BOOT_TIMER_PORT, BOOT_TIMER_PORTS, BootTimer, bootTimerState, monotonicMicros } from "./boot-timer.js";
import { PioBus } from "./pio-bus.js";

const b = (...v: number[]): Uint8Array => Uint8Array.from(v);

/** A timer on a fake clock that the test advances. */
function timer(capacity?: number): { t: BootTimer; tick: (us: number) => void } {
  let now = 1_000_000;
  const clock = (): number => now;
  const t = new BootTimer(bootTimerState({ originMicros: now, ...(capacity !== undefined ? { capacity } : {}) }), { clock });
  return { t, tick: (us) => void (now += us) };
}

describe("BootTimer", () => {
  it("records 8-, 16- and 32-bit writes with their little-endian value and the time since the origin", () => {
    const { t, tick } = timer();
    tick(10);
    t.write(0, b(0x7b));
    tick(5);
    t.write(0, b(0x34, 0x12));
    tick(1);
    t.write(0, b(0x78, 0x56, 0x34, 0xf2));
    expect(t.report()).toEqual({
      milestones: [
        { value: 0x7b, width: 1, micros: 10 },
        { value: 0x1234, width: 2, micros: 15 },
        { value: 0xf2345678, width: 4, micros: 16 },
      ],
      dropped: 0,
      ignored: 0,
    });
  });

  it("keeps at most `capacity` milestones and counts the rest as dropped", () => {
    const { t } = timer(4);
    for (let i = 0; i < 1000; i++) t.write(0, b(i & 0xff));
    const r = t.report();
    expect(r.milestones.map((m) => m.value)).toEqual([0, 1, 2, 3]);
    expect(r.dropped).toBe(996);
    expect(t.capacity).toBe(4);
  });

  it("ignores (and counts) writes at other offsets or of other widths, reads all ones", () => {
    const { t } = timer();
    t.write(1, b(1));
    t.write(2, b(1, 2));
    t.write(0, new Uint8Array(0));
    t.write(0, new Uint8Array(3));
    t.write(0, new Uint8Array(8));
    const d = b(0, 0, 0, 0);
    t.read(0, d);
    expect([...d]).toEqual([0xff, 0xff, 0xff, 0xff]);
    expect(t.report()).toEqual({ milestones: [], dropped: 0, ignored: 5 });
  });

  it("is one list seen from two views, and restart clears it and moves the origin", () => {
    let now = 500;
    const state = bootTimerState({ originMicros: 0 });
    const vcpu = new BootTimer(state, { clock: () => now });
    const main = new BootTimer(state, { canWait: false, clock: () => now });
    vcpu.write(0, b(1));
    expect(main.report().milestones).toEqual([{ value: 1, width: 1, micros: 500 }]);
    main.restart();
    now = 700;
    vcpu.write(0, b(2));
    expect(main.report()).toEqual({ milestones: [{ value: 2, width: 1, micros: 200 }], dropped: 0, ignored: 0 });
  });

  it("never reports a negative time (a clock behind the origin) ", () => {
    const t = new BootTimer(bootTimerState({ originMicros: 100 }), { clock: () => 50 });
    t.write(0, b(9));
    expect(t.report().milestones[0]!.micros).toBe(0);
  });

  it("uses the monotonic clock by default", () => {
    const before = monotonicMicros();
    const t = new BootTimer(bootTimerState());
    t.write(0, b(1));
    const after = monotonicMicros();
    const m = t.report().milestones[0]!;
    expect(m.micros).toBeGreaterThanOrEqual(0);
    expect(m.micros).toBeLessThanOrEqual(after - before + 1);
  });

  it("refuses bad capacities and states not made by bootTimerState", () => {
    for (const capacity of [0, -1, 1.5, 4097, Number.NaN]) expect(() => bootTimerState({ capacity })).toThrow(RangeError);
    expect(() => bootTimerState({ originMicros: Number.POSITIVE_INFINITY })).toThrow(RangeError);
    expect(() => new BootTimer(new SharedArrayBuffer(8))).toThrow(RangeError);
    expect(() => new BootTimer(new SharedArrayBuffer(64))).toThrow(RangeError); // capacity cell 0
    const s = bootTimerState({ capacity: 4 });
    expect(() => new BootTimer(s.slice(0, 40))).toThrow(RangeError);
  });

  it("never throws and never grows past its capacity, whatever the guest writes (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ offset: fc.integer({ min: -8, max: 8 }), data: fc.uint8Array({ maxLength: 9 }) }), { maxLength: 200 }),
        (writes) => {
          const { t } = timer(16);
          for (const w of writes) t.write(w.offset, w.data);
          const r = t.report();
          const good = writes.filter((w) => w.offset === 0 && [1, 2, 4].includes(w.data.length)).length;
          expect(r.milestones.length).toBe(Math.min(good, 16));
          expect(r.dropped).toBe(Math.max(0, good - 16));
          expect(r.ignored).toBe(writes.length - good);
        },
      ),
    );
  });

  it("sits on a PioBus at its port next to the other legacy devices", () => {
    const { t } = timer();
    const bus = new PioBus();
    bus.insert(BOOT_TIMER_PORT, BOOT_TIMER_PORTS, t);
    bus.write(0x440, b(0x2a, 0, 0, 0));
    bus.write(0x443, b(1));
    expect(t.report().milestones.map((m) => m.value)).toEqual([0x2a]);
    expect(bus.unclaimed).toBe(0);
  });
});
