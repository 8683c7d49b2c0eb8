import { describe, expect, it } from "vitest";
import { tsWorker } from "../test/fixtures/worker.js";
import { codeOf } from "../test/code-of.js";
import { EventFd, ThreadTimer, installKickSignal, pollFd, sigrtmax, sigrtmin } from "./index.js";

/** How a blocking poll of an empty eventfd on this thread ended, and after how many ms. */
function pollOnce(efd: EventFd, timeoutMs: number): { how: string; ms: number } {
  const t0 = performance.now();
  let how: string;
  try {
    how = pollFd(efd.fd, { readable: true }, timeoutMs).timedOut ? "timeout" : "ready";
  } catch (e) {
    how = codeOf(() => { throw e; }) ?? "no code";
  }
  return { how, ms: performance.now() - t0 };
}

describe("ThreadTimer", () => {
  it("a one-shot timer interrupts a blocking poll of its own thread (the main thread) with EINTR, once", () => {
    const signo = installKickSignal();
    const efd = new EventFd({ nonBlocking: false });
    const t = ThreadTimer.create(signo);
    try {
      t.arm(30);
      const r = pollOnce(efd, 5_000);
      expect(r.how).toBe("EINTR");
      expect(r.ms).toBeGreaterThanOrEqual(25);
      expect(r.ms).toBeLessThan(4_000);
      // One shot: the next poll runs to its own timeout.
      expect(pollOnce(efd, 150).how).toBe("timeout");
    } finally {
      t.close();
      efd.close();
    }
  });

  it("an interval keeps interrupting; disarm stops it; it can be armed again", () => {
    const signo = installKickSignal();
    const efd = new EventFd({ nonBlocking: false });
    const t = ThreadTimer.create(signo);
    try {
      t.arm(10, 10);
      for (let i = 0; i < 3; i++) expect(pollOnce(efd, 5_000).how).toBe("EINTR");
      t.disarm();
      expect(pollOnce(efd, 150).how).toBe("timeout");
      t.arm(20);
      expect(pollOnce(efd, 5_000).how).toBe("EINTR");
    } finally {
      t.close();
      efd.close();
    }
  });

  it("signals the thread that created it: a worker's timer interrupts the worker, not the main thread", async () => {
    const w = tsWorker(new URL("../test/fixtures/kick-worker.ts", import.meta.url));
    try {
      const r = await w.request<{ ok: boolean; code?: string; ms?: number }>({ op: "timer-poll" });
      expect(r).toMatchObject({ ok: false, code: "EINTR" });
      expect(r.ms).toBeLessThan(4_000);
    } finally {
      await w.terminate();
    }
  });

  it("refuses bad signals and times, and every use after close (Closed); close is idempotent", () => {
    const signo = installKickSignal();
    expect(codeOf(() => ThreadTimer.create(sigrtmin() - 1))).toBe("InvalidArgument");
    expect(codeOf(() => ThreadTimer.create(sigrtmax() + 1))).toBe("InvalidArgument");
    expect(codeOf(() => ThreadTimer.create(1.5))).toBe("InvalidArgument");
    // A real-time signal nobody handles would end the process when the timer fires.
    expect(codeOf(() => ThreadTimer.create(sigrtmax() - 1))).toBe("InvalidArgument");
    const t = ThreadTimer.create(signo);
    for (const [a, b] of [[0, 0], [-1, 0], [Number.NaN, 0], [1, -1], [1, Infinity], [86_400_001, 0]] as const) {
      expect(codeOf(() => t.arm(a, b)), `${a}, ${b}`).toBe("InvalidArgument");
    }
    t.close();
    expect(t.closed).toBe(true);
    t.close();
    expect(codeOf(() => t.arm(10))).toBe("Closed");
    expect(codeOf(() => t.disarm())).toBe("Closed");
  });

  it("the addon arms and deletes only timers it created (EBADF otherwise)", async () => {
    const { native } = await import("./native.js");
    const n = native();
    expect(n.threadTimerSet(0x7fff_0000, 1_000_000, 0)).toBe(-9);
    expect(n.threadTimerDelete(0x7fff_0000)).toBe(-9);
    const id = n.threadTimerCreate(installKickSignal());
    expect(id).toBeGreaterThanOrEqual(0);
    expect(n.threadTimerSet(id, 0, 0)).toBe(0);
    expect(n.threadTimerDelete(id)).toBe(0);
    // A deleted id is forgotten: neither armed nor deleted again.
    expect(n.threadTimerSet(id, 1_000_000, 0)).toBe(-9);
    expect(n.threadTimerDelete(id)).toBe(-9);
  });
});
