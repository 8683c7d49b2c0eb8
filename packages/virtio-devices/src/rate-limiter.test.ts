import { describe, expect, it } from "vitest";
import { ManualClock } from "../test/manual-clock.js";
import { RateLimiter, VirtioDeviceError } from "./index.js";

describe("RateLimiter (manual clock)", () => {
  it("no buckets: never limits", () => {
    const r = new RateLimiter({}, new ManualClock());
    for (let i = 0; i < 1000; i++) expect(r.consume(1 << 20, 1)).toBe(true);
    expect(r.limits).toBe(false);
  });

  it("bandwidth: a full bucket, then refill at size per refill time; one timer for when the request fits", () => {
    const clock = new ManualClock();
    const r = new RateLimiter({ bandwidth: { size: 1000, refillTimeMs: 1000 } }, clock);
    let ready = 0;
    r.onReady = () => ready++;
    expect(r.consume(600)).toBe(true);
    expect(r.consume(400)).toBe(true);
    expect(r.consume(100)).toBe(false);
    expect(r.blocked).toBe(true);
    expect(clock.pending).toBe(1);
    expect(clock.nextAt).toBe(101); // 100 bytes at 1 byte/ms, plus the 1 ms margin
    // While blocked, nothing is taken and no second timer is armed.
    expect(r.consume(1)).toBe(false);
    expect(clock.pending).toBe(1);
    clock.advance(100);
    expect(ready).toBe(0);
    clock.advance(1);
    expect(ready).toBe(1);
    expect(r.blocked).toBe(false);
    expect(r.consume(100)).toBe(true);
    expect(r.consume(2)).toBe(false); // 1 byte left (the margin's)
    expect(r.throttled).toBe(2); // a call while blocked is refused without counting
  });

  it("refill never exceeds the bucket size", () => {
    const clock = new ManualClock();
    const r = new RateLimiter({ ops: { size: 10, refillTimeMs: 100 } }, clock);
    clock.advance(10_000);
    let n = 0;
    while (r.consume(0, 1)) n++;
    expect(n).toBe(10);
  });

  it("one-time burst: spent first, never refilled", () => {
    const clock = new ManualClock();
    const r = new RateLimiter({ bandwidth: { size: 100, refillTimeMs: 1000, oneTimeBurst: 500 } }, clock);
    expect(r.consume(600)).toBe(true); // 500 burst + 100 bucket
    expect(r.consume(1)).toBe(false);
    clock.advance(10_000);
    r.cancel();
    expect(r.consume(100)).toBe(true);
    expect(r.consume(1)).toBe(false); // the burst is gone
    expect(r.state().bandwidth?.oneTimeBurst).toBe(0);
  });

  it("both buckets: a request takes from both or from neither", () => {
    const clock = new ManualClock();
    const r = new RateLimiter({ bandwidth: { size: 1000, refillTimeMs: 1000 }, ops: { size: 2, refillTimeMs: 1000 } }, clock);
    expect(r.consume(100)).toBe(true);
    expect(r.consume(100)).toBe(true);
    expect(r.consume(100)).toBe(false); // out of ops; bandwidth must not be charged
    expect(r.state().bandwidth?.tokens).toBe(800);
    // The timer waits for the slower bucket: one op takes 500 ms.
    expect(clock.nextAt).toBe(501);
  });

  it("a request larger than the bucket passes when the bucket is full and leaves it in debt", () => {
    const clock = new ManualClock();
    const r = new RateLimiter({ bandwidth: { size: 1000, refillTimeMs: 1000 } }, clock);
    let ready = 0;
    r.onReady = () => ready++;
    expect(r.consume(3000)).toBe(true);
    expect(r.state().bandwidth?.tokens).toBe(-2000);
    expect(r.consume(3000)).toBe(false);
    // Waits until full again: 2000 of debt + 1000, at 1 byte/ms.
    expect(clock.nextAt).toBe(3001);
    clock.advance(3001);
    expect(ready).toBe(1);
    expect(r.consume(3000)).toBe(true);
  });

  it("update while blocked re-checks at once; new sizes cap the tokens; null removes a bucket", () => {
    const clock = new ManualClock();
    const r = new RateLimiter({ bandwidth: { size: 1000, refillTimeMs: 1000 } }, clock);
    let ready = 0;
    r.onReady = () => ready++;
    expect(r.consume(1000)).toBe(true);
    expect(r.consume(500)).toBe(false);
    expect(clock.nextAt).toBe(501);
    r.update({ bandwidth: { size: 10_000, refillTimeMs: 1000, oneTimeBurst: 500 } });
    clock.advance(0);
    expect(ready).toBe(1);
    expect(r.consume(500)).toBe(true); // from the new burst
    r.update({ bandwidth: { size: 10, refillTimeMs: 1000 } });
    clock.advance(100_000);
    expect(r.state().bandwidth?.tokens).toBe(10);
    r.update({ bandwidth: null, ops: { size: 1, refillTimeMs: 1000 } });
    expect(r.consume(1 << 30)).toBe(true);
    expect(r.consume(0)).toBe(false);
    expect(() => r.update({ ops: { size: 0, refillTimeMs: 1 } })).toThrow(VirtioDeviceError);
    expect(r.state().ops?.size).toBe(1);
  });

  it("cancel drops the timer without calling onReady", () => {
    const clock = new ManualClock();
    const r = new RateLimiter({ ops: { size: 1, refillTimeMs: 1000 } }, clock);
    let ready = 0;
    r.onReady = () => ready++;
    r.consume(0);
    expect(r.consume(0)).toBe(false);
    r.cancel();
    clock.advance(5000);
    expect(ready).toBe(0);
    expect(r.blocked).toBe(false);
  });

  it("refuses malformed settings", () => {
    for (const b of [
      { size: 0, refillTimeMs: 1000 },
      { size: 1.5, refillTimeMs: 1000 },
      { size: 10, refillTimeMs: 0 },
      { size: 10, refillTimeMs: 1000, oneTimeBurst: -1 },
      { size: Number.NaN, refillTimeMs: 1000 },
      { size: 2 ** 60, refillTimeMs: 1000 },
    ]) {
      let err: unknown;
      try {
        new RateLimiter({ bandwidth: b });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(VirtioDeviceError);
      expect((err as VirtioDeviceError).code).toBe("InvalidArgument");
    }
  });

  it("state round-trips, debt included; a malformed state is InvalidState", () => {
    const clock = new ManualClock();
    const r = new RateLimiter({ bandwidth: { size: 100, refillTimeMs: 1000, oneTimeBurst: 5 } }, clock);
    r.consume(305);
    const s = JSON.parse(JSON.stringify(r.state()));
    expect(s).toEqual({ bandwidth: { size: 100, refillTimeMs: 1000, oneTimeBurst: 0, tokens: -200 }, ops: null });
    const back = RateLimiter.fromState(s, clock);
    expect(back.state()).toEqual(s);
    expect(back.consume(1)).toBe(false);
    for (const bad of [null, { bandwidth: { size: 10, refillTimeMs: 1000, oneTimeBurst: 0, tokens: 11 }, ops: null }, { bandwidth: { size: -1, refillTimeMs: 1, oneTimeBurst: 0, tokens: 0 }, ops: null }]) {
      let err: unknown;
      try {
        RateLimiter.fromState(bad as never, clock);
      } catch (e) {
        err = e;
      }
      expect((err as VirtioDeviceError).code).toBe("InvalidState");
    }
  });

  it("restoreState loads tokens and burst left into a limiter built from the same settings: debt kept, capped at the size, refill from now; malformed is InvalidState and changes nothing", () => {
    const clock = new ManualClock();
    const cfg = { bandwidth: { size: 100, refillTimeMs: 1000, oneTimeBurst: 50 }, ops: { size: 10, refillTimeMs: 1000 } };
    const r = new RateLimiter(cfg, clock);
    expect(r.consume(180, 4)).toBe(true); // 50 burst + 130 from the bucket: 30 in debt; 6 ops left
    const saved = JSON.parse(JSON.stringify(r.state()));
    expect(saved).toEqual({ bandwidth: { size: 100, refillTimeMs: 1000, oneTimeBurst: 0, tokens: -30 }, ops: { size: 10, refillTimeMs: 1000, oneTimeBurst: 0, tokens: 6 } });
    const later = new ManualClock();
    later.advance(5000);
    const back = new RateLimiter(cfg, later);
    back.restoreState(saved);
    expect(back.state()).toEqual(saved); // the construction-to-restore time refilled nothing
    expect(back.consume(1)).toBe(false); // in debt: the restored VM does not get a full bucket
    later.advance(311); // 31 bytes at 0.1 byte/ms, plus the 1 ms margin
    expect(back.blocked).toBe(false);
    expect(back.consume(1)).toBe(true);
    // A smaller bucket caps the tokens; a bucket the state lacks is left alone.
    const small = new RateLimiter({ bandwidth: { size: 5, refillTimeMs: 1000 } }, clock);
    small.restoreState({ bandwidth: { size: 100, refillTimeMs: 1000, oneTimeBurst: 0, tokens: 80 }, ops: null });
    expect(small.state().bandwidth?.tokens).toBe(5);
    const before = JSON.stringify(back.state());
    for (const bad of [null, { bandwidth: { size: 1, refillTimeMs: 1, oneTimeBurst: 0, tokens: Number.NaN }, ops: null }, { bandwidth: null, ops: { size: 1, refillTimeMs: 1, oneTimeBurst: -1, tokens: 0 } }]) {
      expect(() => back.restoreState(bad as never)).toThrow(expect.objectContaining({ code: "InvalidState" }));
    }
    expect(JSON.stringify(back.state())).toBe(before);
  });

  it("a long wait is split into timers of at most 2^31 - 1 ms", () => {
    const clock = new ManualClock();
    const r = new RateLimiter({ ops: { size: 1, refillTimeMs: 2 ** 40 } }, clock);
    r.consume(0);
    expect(r.consume(0)).toBe(false);
    expect(clock.nextAt).toBe(2 ** 31 - 1);
  });
});

describe("RateLimiter (real time)", () => {
  it("100 ops/s: 30 requests after the first 10 take about 200 ms, driven by onReady alone", async () => {
    const r = new RateLimiter({ ops: { size: 10, refillTimeMs: 100 } });
    let done = 0;
    let wakeups = 0;
    const start = performance.now();
    await new Promise<void>((resolve) => {
      const pump = (): void => {
        while (done < 30 && r.consume(0, 1)) done++;
        if (done === 30) resolve();
      };
      r.onReady = () => {
        wakeups++;
        pump();
      };
      pump();
    });
    const ms = performance.now() - start;
    // 10 from the full bucket, 20 more at 10 per 100 ms: at least 200 ms, and no busy loop
    // (each wake-up lets at least one request through, so at most 20 of them).
    expect(ms).toBeGreaterThanOrEqual(195);
    expect(ms).toBeLessThan(1500);
    expect(wakeups).toBeGreaterThan(0);
    expect(wakeups).toBeLessThanOrEqual(20);
  });
});
