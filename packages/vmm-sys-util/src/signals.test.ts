import { describe, expect, it } from "vitest";
import { tsWorker } from "../test/fixtures/worker.js";
import { EventFd, gettid, installKickSignal, sigrtmax, sigrtmin, tgkill } from "./index.js";
import { codeOf } from "../test/code-of.js";

/** Sends the kick every 20 ms until `done` settles (the signal may land before the block). */
async function kickUntil<T>(tid: number, signo: number, done: Promise<T>): Promise<T> {
  let settled = false;
  void done.finally(() => {
    settled = true;
  });
  while (!settled) {
    tgkill(tid, signo);
    await new Promise((r) => setTimeout(r, 20));
  }
  return done;
}

describe("threads and kick signals", () => {
  it("gettid: the main thread's tid is the pid; a worker has its own", async () => {
    expect(gettid()).toBe(process.pid);
    const w = tsWorker(new URL("../test/fixtures/kick-worker.ts", import.meta.url));
    try {
      const { tid } = await w.request<{ tid: number }>({ op: "tid" });
      expect(tid).toBeGreaterThan(0);
      expect(tid).not.toBe(process.pid);
    } finally {
      await w.terminate();
    }
  });

  it("sigrtmin/sigrtmax are glibc's real-time range; the default kick is SIGRTMIN+2", () => {
    expect(sigrtmin()).toBe(34);
    expect(sigrtmax()).toBe(64);
    const s = installKickSignal();
    expect(s).toBe(sigrtmin() + 2);
    expect(installKickSignal()).toBe(s); // idempotent
    expect(installKickSignal(s)).toBe(s);
  });

  it("a kicked thread that is not blocked survives (the handler is a no-op)", () => {
    const s = installKickSignal();
    tgkill(gettid(), s);
    tgkill(gettid(), 0);
    expect(gettid()).toBe(process.pid);
  });

  it("interrupts a worker blocked in poll(2) and in read(2) on an empty eventfd with EINTR", async () => {
    const signo = installKickSignal();
    const w = tsWorker(new URL("../test/fixtures/kick-worker.ts", import.meta.url));
    try {
      const { tid } = await w.request<{ tid: number }>({ op: "tid" });
      for (const op of ["poll", "read"]) {
        const started = await w.request<{ started: boolean }>({ op });
        expect(started.started).toBe(true);
        const result = new Promise<{ ok: boolean; code?: string; errno?: number }>((resolve) => w.worker.once("message", resolve));
        const t0 = Date.now();
        const r = await kickUntil(tid, signo, result);
        expect(r).toMatchObject({ ok: false, code: "EINTR", errno: 4 });
        expect(Date.now() - t0).toBeLessThan(5_000);
      }
    } finally {
      await w.terminate();
    }
  });

  it("rejects signals outside the real-time range and bad tids; ESRCH for a missing thread", () => {
    expect(codeOf(() => installKickSignal(15))).toBe("InvalidArgument");
    expect(codeOf(() => installKickSignal(sigrtmax() + 1))).toBe("InvalidArgument");
    expect(codeOf(() => installKickSignal("34" as unknown as number))).toBe("InvalidArgument");
    expect(codeOf(() => tgkill(gettid(), 9))).toBe("InvalidArgument");
    expect(codeOf(() => tgkill(gettid(), 15))).toBe("InvalidArgument");
    expect(codeOf(() => tgkill(0, sigrtmin()))).toBe("InvalidArgument");
    expect(codeOf(() => tgkill(-5, sigrtmin()))).toBe("InvalidArgument");
    expect(codeOf(() => tgkill(1.5, sigrtmin()))).toBe("InvalidArgument");
    // tgkill checks the thread group too: pid 1's tid is not a thread of this process.
    expect(codeOf(() => tgkill(1, 0))).toBe("ESRCH");
  });

  it("the addon refuses non-real-time signals even when called directly", async () => {
    const { native } = await import("./native.js");
    expect(() => native().tgkill(gettid(), 9)).toThrow(RangeError);
    expect(() => native().installNoopHandler(11)).toThrow(RangeError);
    expect(() => native().tgkill("x" as unknown as number, 34)).toThrow(TypeError);
  });

  it("blocking EventFd reads in this thread are not disturbed by a kick when data is there", () => {
    const s = installKickSignal();
    const e = new EventFd({ nonBlocking: false, initval: 3 });
    tgkill(gettid(), s);
    expect(e.read()).toBe(3n);
    e.close();
  });
});
