// Crash paths found by the 2026-11-22 audit. Each experiment runs in a child
// process (the built dist/ or the raw addon) so that a SIGABRT/SIGBUS/signal
// death shows up as a failed assertion instead of a lost test runner.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const dist = new URL("../dist/index.js", import.meta.url).href;
const addon = fileURLToPath(new URL("../build/Release/vmm_sys_util.node", import.meta.url));

function child(body: string): { status: number | null; signal: NodeJS.Signals | null; out: string[]; stderr: string } {
  const src = `import { createRequire } from "node:module";
const n = createRequire(import.meta.url)(${JSON.stringify(addon)});
const m = await import(${JSON.stringify(dist)});
const codeOf = (f) => { try { f(); return "ok"; } catch (e) { return e.code ?? e.name; } };
${body}`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", src], { encoding: "utf8", timeout: 30_000 });
  return { status: r.status, signal: r.signal, out: r.stdout.trim().split("\n"), stderr: r.stderr };
}

describe("audit: no input crashes the process", () => {
  it("tgkill with a real-time signal that has no handler is refused (it killed the process)", () => {
    const r = child(`
const s = m.sigrtmin() + 7; // nobody installs a handler for this one
console.log(codeOf(() => m.tgkill(m.gettid(), s)));
console.log(n.tgkill(n.gettid(), s));
console.log(codeOf(() => m.tgkill(m.gettid(), 0)));
const k = m.installKickSignal(m.sigrtmin() + 6);
console.log(codeOf(() => m.tgkill(m.gettid(), k)));
console.log("alive");`);
    expect({ status: r.status, signal: r.signal, out: r.out }).toEqual({ status: 0, signal: null, out: ["InvalidArgument", "-22", "ok", "ok", "alive"] });
  });

  it("the raw mmap refuses a regular file shorter than offset + length (touching it was SIGBUS)", () => {
    const r = child(`
const fd = n.memfdCreate("short", 0);
n.ftruncate(fd, 4096);
for (const [len, off] of [[8192, 0], [4096, 4096], [1, 4096]]) {
  try { const [b] = n.mmap(fd, len, 3, 1, off, false); new Uint8Array(b)[len - 1] = 1; console.log("mapped"); }
  catch (e) { console.log(e.name); }
}
const [ok] = n.mmap(fd, 4096, 3, 1, 0, false); new Uint8Array(ok)[4095] = 1;
console.log("alive");`);
    expect({ status: r.status, signal: r.signal, out: r.out }).toEqual({ status: 0, signal: null, out: ["RangeError", "RangeError", "RangeError", "alive"] });
  });

  it("closing a watched fd right after FdWatcher.watch does not abort libuv", () => {
    const r = child(`
const e = new m.EventFd();
const w = m.FdWatcher.watch(e.fd, { readable: true }, () => console.log("event"));
e.close(); // before the loop registers the fd with epoll: libuv's epoll_ctl got EBADF and aborted
const h = n.pollCreate(n.eventfd(0, 0), () => {});
setTimeout(() => { w.close(); h.close(); console.log("alive"); }, 50);`);
    expect({ status: r.status, signal: r.signal, out: r.out }).toEqual({ status: 0, signal: null, out: ["alive"] });
  });

  it("a watcher keeps working after its fd number is closed and reused", () => {
    const r = child(`
const a = new m.EventFd();
const fd = a.fd;
let events = 0;
const w = m.FdWatcher.watch(fd, { readable: true }, () => { events++; });
a.close();
const b = new m.EventFd(); // likely reuses the number
b.write(1n);
setTimeout(() => { console.log(b.fd === fd ? "reused" : "not reused", events); w.close(); b.close(); }, 50);`);
    expect({ status: r.status, signal: r.signal }).toEqual({ status: 0, signal: null });
    // The watcher watches the file it was given (a's eventfd), not whatever gets its number later.
    expect(r.out[0]).toMatch(/ 0$/);
  });

  it("a memfd region's own fd cannot be shrunk under the mapping (touching it was SIGBUS)", () => {
    const r = child(`
const region = m.MmapRegion.memfd(8192);
console.log(codeOf(() => m.ftruncate(region.fd, 0)));
console.log(codeOf(() => m.ftruncate(region.fd, 4096)));
console.log(codeOf(() => m.ftruncate(region.fd, 16384))); // growing stays allowed
new Uint8Array(region.buffer)[8191] = 1;
region.close();
console.log("alive");`);
    expect({ status: r.status, signal: r.signal, out: r.out }).toEqual({ status: 0, signal: null, out: ["EPERM", "EPERM", "ok", "alive"] });
  });
});
