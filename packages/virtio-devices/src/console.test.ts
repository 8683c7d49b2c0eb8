import { mkdtempSync, rmSync } from "node:fs";
import { createServer, connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Writable } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { bringUp, rig } from "../test/driver.js";
import { CONSOLE_RX_BUFFER_BYTES, STATUS_DEVICE_NEEDS_RESET, VirtioConsole } from "./index.js";

const dir = mkdtempSync(join(tmpdir(), "vcon-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 10));

describe("virtio-console port 0", () => {
  it("transmits guest output to the stream and delivers host input into posted buffers", async () => {
    const input = new PassThrough();
    const out: Buffer[] = [];
    const output = new Writable({ write: (c: Buffer, _e, cb) => (out.push(c), cb()) });
    const dev = new VirtioConsole({ input, output });
    const r = rig(dev);
    const [rx, tx] = bringUp(r);
    r.mem.write(0x80000, new TextEncoder().encode("hello host"));
    tx!.addChain([{ addr: 0x80000, len: 10 }]);
    r.t.notify(1);
    expect(tx!.takeUsed().map((u) => u.len)).toEqual([0]);
    await tick();
    expect(Buffer.concat(out).toString()).toBe("hello host");
    input.write("hi guest, this is longer than eight");
    await tick();
    rx!.addChain([{ addr: 0x90000, len: 8, writable: true }]);
    rx!.addChain([{ addr: 0x91000, len: 64, writable: true }]);
    r.t.notify(0);
    const used = rx!.takeUsed();
    expect(used.map((u) => u.len)).toEqual([8, 27]);
    const a = new Uint8Array(8);
    const b = new Uint8Array(27);
    r.mem.read(0x90000, a);
    r.mem.read(0x91000, b);
    expect(Buffer.from([...a, ...b]).toString()).toBe("hi guest, this is longer than eight");
    expect(dev.stats).toEqual({ txBytes: 10, rxBytes: 35, txDropped: 0, txChains: 1, rxChains: 2 });
  });

  it("echoes through a real Unix socket (the test harness's setup)", async () => {
    const path = join(dir, "echo.sock");
    const server = createServer((s: Socket) => s.pipe(s));
    await new Promise<void>((res) => server.listen(path, res));
    const sock = connect(path);
    await new Promise<void>((res) => sock.once("connect", () => res()));
    const r = rig(new VirtioConsole({ input: sock, output: sock }));
    const [rx, tx] = bringUp(r);
    rx!.addChain([{ addr: 0x90000, len: 256, writable: true }]);
    r.t.notify(0);
    r.mem.write(0x80000, new TextEncoder().encode("ping over unix"));
    tx!.addChain([{ addr: 0x80000, len: 14 }]);
    r.t.notify(1);
    let got: { len: number }[] = [];
    for (let i = 0; i < 100 && got.length === 0; i++) {
      await tick();
      got = rx!.takeUsed();
    }
    expect(got.map((u) => u.len)).toEqual([14]);
    const b = new Uint8Array(14);
    r.mem.read(0x90000, b);
    expect(Buffer.from(b).toString()).toBe("ping over unix");
    expect(r.irq.count).toBeGreaterThan(0);
    sock.destroy();
    await new Promise<void>((res) => server.close(() => res()));
  });

  it("pauses host input past its buffer and resumes when the guest takes it", async () => {
    const input = new PassThrough();
    const r = rig(new VirtioConsole({ input }));
    const [rx] = bringUp(r);
    input.write(Buffer.alloc(CONSOLE_RX_BUFFER_BYTES + 10, 0x41));
    await tick();
    expect(input.isPaused()).toBe(true);
    for (let i = 0; i < 40; i++) rx!.addChain([{ addr: 0x100000 + i * 4096, len: 4096, writable: true }]);
    r.t.notify(0);
    expect(input.isPaused()).toBe(false);
  });

  it("a transmit buffer outside guest memory sets NEEDS_RESET", () => {
    const r = rig(new VirtioConsole({}));
    const [, tx] = bringUp(r);
    tx!.addChain([{ addr: 2 ** 40, len: 10 }]);
    r.t.notify(1);
    expect(r.t.status & STATUS_DEVICE_NEEDS_RESET).toBeTruthy();
  });

  it("waits for drain when the output stream is full", async () => {
    let pending: (() => void) | undefined;
    const chunks: Buffer[] = [];
    const output = new Writable({ highWaterMark: 4, write: (c: Buffer, _e, cb) => (chunks.push(c), (pending = cb)) });
    const r = rig(new VirtioConsole({ output }));
    const [, tx] = bringUp(r);
    r.mem.write(0x80000, new TextEncoder().encode("0123456789"));
    tx!.addChain([{ addr: 0x80000, len: 10 }]);
    tx!.addChain([{ addr: 0x80000, len: 5 }]);
    r.t.notify(1);
    expect(tx!.takeUsed()).toHaveLength(1);
    pending?.();
    await tick();
    pending?.();
    await tick();
    expect(tx!.takeUsed()).toHaveLength(1);
    expect(Buffer.concat(chunks).toString()).toBe("012345678901234");
  });
});
