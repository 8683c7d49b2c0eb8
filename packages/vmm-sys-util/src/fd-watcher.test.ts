import { spawnSync } from "node:child_process";
import { openSync, closeSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import { gcUntil } from "../test/fixtures/gc.js";
import { tsWorker } from "../test/fixtures/worker.js";
import { EventFd, FdWatcher, type WatchEvent } from "./index.js";
import { codeOf } from "../test/code-of.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("FdWatcher", () => {
  it("fires when an eventfd is written, and not before", async () => {
    const e = new EventFd();
    const events: WatchEvent[] = [];
    const w = FdWatcher.watch(e.fd, { readable: true }, (ev) => {
      events.push(ev);
      e.tryRead();
    });
    await sleep(100);
    expect(events).toEqual([]); // nothing written: no event within 100 ms
    e.write(1);
    await gcUntil(() => events.length > 0, 100);
    expect(events).toEqual([{ readable: true, writable: false }]);
    // Drained in the callback: level-triggered watch is quiet again.
    await sleep(50);
    expect(events.length).toBe(1);
    e.write(3);
    await sleep(50);
    expect(events.length).toBe(2);
    w.close();
    e.write(1);
    await sleep(50);
    expect(events.length).toBe(2); // closed: no more events
    expect(w.closed).toBe(true);
    e.close();
  });

  it("watches many fds at once and reports which one is ready", async () => {
    const fds = Array.from({ length: 16 }, () => new EventFd());
    const seen: number[] = [];
    const watchers = fds.map((e, i) =>
      FdWatcher.watch(e.fd, { readable: true }, () => {
        e.tryRead();
        seen.push(i);
      }),
    );
    fds[3]!.write();
    fds[11]!.write();
    await gcUntil(() => seen.length >= 2, 100);
    await sleep(20);
    expect(seen.sort((a, b) => a - b)).toEqual([3, 11]);
    for (const w of watchers) w.close();
    for (const e of fds) e.close();
  });

  it("reports writable", async () => {
    const e = new EventFd();
    const ev = await new Promise<WatchEvent>((resolve) => {
      const w = FdWatcher.watch(e.fd, { writable: true }, (x) => {
        w.close();
        resolve(x);
      });
    });
    expect(ev).toEqual({ readable: false, writable: true });
    e.close();
  });

  it("an active watcher is not collected while watching, even if unreferenced by JS", async () => {
    const e = new EventFd();
    let hits = 0;
    const ref = (() =>
      new WeakRef(
        FdWatcher.watch(e.fd, { readable: true }, () => {
          e.tryRead();
          hits++;
        }),
      ))();
    await gcUntil(() => false, 5);
    expect(ref.deref()).toBeInstanceOf(FdWatcher);
    e.write();
    await gcUntil(() => hits > 0, 100);
    expect(hits).toBe(1);
    // Close the watcher before its fd: the kernel reuses fd numbers.
    ref.deref()?.close();
    e.close();
  });

  it("a closed, dropped watcher is collected", async () => {
    const e = new EventFd();
    const ref = (() => {
      const w = FdWatcher.watch(e.fd, { readable: true }, () => undefined);
      w.close();
      return new WeakRef(w);
    })();
    expect(await gcUntil(() => ref.deref() === undefined)).toBe(true);
    e.close();
  });

  it("refuses a second watcher on the same fd, regular files, closed fds (typed)", () => {
    const e = new EventFd();
    const w = FdWatcher.watch(e.fd, { readable: true }, () => undefined);
    expect(codeOf(() => FdWatcher.watch(e.fd, { readable: true }, () => undefined))).toBe("EEXIST");
    w.close();
    const w2 = FdWatcher.watch(e.fd, { readable: true }, () => undefined); // free again
    w2.close();
    const file = openSync(createRequire(import.meta.url).resolve("../package.json"), "r");
    expect(codeOf(() => FdWatcher.watch(file, { readable: true }, () => undefined))).toBe("EPERM");
    closeSync(file);
    const fd = e.fd;
    e.close();
    expect(codeOf(() => FdWatcher.watch(fd, { readable: true }, () => undefined))).toBe("EBADF");
  });

  it("rejects bad arguments; closed watchers throw Closed", () => {
    const e = new EventFd();
    expect(codeOf(() => FdWatcher.watch(-1, { readable: true }, () => undefined))).toBe("InvalidArgument");
    expect(codeOf(() => FdWatcher.watch(e.fd, {}, () => undefined))).toBe("InvalidArgument");
    expect(codeOf(() => FdWatcher.watch(e.fd, null as unknown as object, () => undefined))).toBe("InvalidArgument");
    expect(codeOf(() => FdWatcher.watch(e.fd, { readable: 1 as unknown as boolean }, () => undefined))).toBe("InvalidArgument");
    expect(codeOf(() => FdWatcher.watch(e.fd, { readable: true }, "cb" as unknown as () => void))).toBe("InvalidArgument");
    const w = FdWatcher.watch(e.fd, { readable: true }, () => undefined);
    w.unref();
    w.ref();
    w.close();
    w.close();
    expect(codeOf(() => w.ref())).toBe("Closed");
    expect(codeOf(() => w.unref())).toBe("Closed");
    e.close();
  });

  it("a worker that exits with an active watcher is torn down cleanly", async () => {
    const w = tsWorker(new URL("../test/fixtures/watcher-worker.ts", import.meta.url));
    const ready = await new Promise((resolve) => w.worker.once("message", resolve));
    expect(ready).toEqual({ ready: true });
    expect(await w.request({ op: "write" })).toEqual({ fired: 1 });
    // Terminated with the watcher still active: the addon's env cleanup hook closes the
    // uv_poll_t; without it the worker's loop could not close and the process would abort.
    expect(await w.terminate()).toBe(1);
    const again = tsWorker(new URL("../test/fixtures/watcher-worker.ts", import.meta.url));
    await new Promise((resolve) => again.worker.once("message", resolve));
    expect(await again.request({ op: "write" })).toEqual({ fired: 1 });
    await again.terminate();
  });

  it("an exception in the callback is an uncaught exception, not a crash", () => {
    const script = new URL("../test/fixtures/throw-main.ts", import.meta.url).pathname;
    const r = spawnSync(process.execPath, ["--import", "tsx", script], { encoding: "utf8", timeout: 20_000 });
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe("caught: boom from the callback");
  });

  it("unref lets the process exit; ref keeps it alive", () => {
    const script = new URL("../test/fixtures/unref-main.ts", import.meta.url).pathname;
    const run = (mode: string): { out: string; ms: number; status: number | null } => {
      const t0 = Date.now();
      const r = spawnSync(process.execPath, ["--import", "tsx", script, mode], { encoding: "utf8", timeout: 20_000 });
      return { out: r.stdout, ms: Date.now() - t0, status: r.status };
    };
    const unref = run("unref");
    expect(unref.status).toBe(0);
    expect(unref.out.trim()).toBe("exit");
    const ref = run("ref");
    expect(ref.status).toBe(0);
    expect(ref.out.trim().split("\n")).toEqual(["alive", "exit"]);
    const paused = run("paused"); // ref'd but paused by update({}): not waiting for anything
    expect(paused.status).toBe(0);
    expect(paused.out.trim()).toBe("exit");
  });

  it("close releases the watcher's duplicate of the fd at once, not on a later turn of the loop", () => {
    const e = new EventFd();
    const open = (): number => readdirSync("/proc/self/fd").length;
    const before = open();
    const w = FdWatcher.watch(e.fd, { readable: true }, () => undefined);
    expect(open()).toBe(before + 1); // the duplicate libuv watches
    w.close();
    expect(open()).toBe(before); // same tick: a tap made for its fd disappears when its owner closes it
    e.close();
  });

  it("update pauses, resumes and changes the events on the same watcher", async () => {
    const e = new EventFd();
    const events: WatchEvent[] = [];
    const w = FdWatcher.watch(e.fd, { readable: true }, (ev) => {
      events.push(ev);
      if (ev.readable) e.tryRead();
    });
    w.update({ readable: false, writable: false }); // paused
    e.write(1);
    await sleep(50);
    expect(events).toEqual([]); // readable all along, but paused
    w.update({ readable: true }); // level-triggered: the counter written while paused is seen now
    await gcUntil(() => events.length > 0, 100);
    expect(events).toEqual([{ readable: true, writable: false }]);
    // The same fd, still one watcher: a second watch is refused, as before the updates.
    expect(codeOf(() => FdWatcher.watch(e.fd, { readable: true }, () => undefined))).toBe("EEXIST");
    events.length = 0;
    w.update({ writable: true }); // an eventfd is writable: fires at once, and not as readable
    await gcUntil(() => events.length > 0, 100);
    w.update({});
    await sleep(20);
    const n = events.length;
    expect(events.every((ev) => ev.writable && !ev.readable)).toBe(true);
    await sleep(30);
    expect(events.length).toBe(n); // paused again: no more
    w.close();
    expect(codeOf(() => w.update({ readable: true }))).toBe("Closed");
    e.close();
  });

  it("update rejects bad events (typed) and leaves the watcher as it was", async () => {
    const e = new EventFd();
    let hits = 0;
    const w = FdWatcher.watch(e.fd, { readable: true }, () => {
      e.tryRead();
      hits++;
    });
    expect(codeOf(() => w.update(null as unknown as object))).toBe("InvalidArgument");
    expect(codeOf(() => w.update({ readable: "yes" as unknown as boolean }))).toBe("InvalidArgument");
    e.write(1);
    await gcUntil(() => hits > 0, 100);
    expect(hits).toBe(1); // still watching readable
    w.close();
    e.close();
  });
});
