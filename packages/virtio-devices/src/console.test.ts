import { mkdtempSync, rmSync } from "node:fs";
import { createServer, connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Writable } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { bringUp, rig } from "../test/driver.js";
import { CONSOLE_MAX_SAVED_INPUT_BYTES, CONSOLE_RX_BUFFER_BYTES, MmioTransport, STATUS_DEVICE_NEEDS_RESET, VirtioConsole, type MmioTransportState } from "./index.js";

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

  /** A Unix socket pair through a listener in `dir`: the device's end and the host program's end. */
  async function socketPair(name: string): Promise<{ device: Socket; host: Socket; close: () => Promise<void> }> {
    const path = join(dir, name);
    let host!: Socket;
    let acceptedOne!: () => void;
    const accepted = new Promise<void>((res) => (acceptedOne = res));
    const server = createServer((s: Socket) => {
      host = s;
      acceptedOne();
    });
    await new Promise<void>((res) => server.listen(path, res));
    const device = connect(path);
    await Promise.all([accepted, new Promise<void>((res) => device.once("connect", () => res()))]);
    return { device, host, close: async () => { device.destroy(); host.destroy(); await new Promise<void>((res) => server.close(() => res())); } };
  }

  it("paused: host input stays in the socket and guest output stays in the ring; resume moves both", async () => {
    const p = await socketPair("pause.sock");
    const dev = new VirtioConsole({ input: p.device, output: p.device });
    const r = rig(dev);
    const [rx, tx] = bringUp(r);
    rx!.addChain([{ addr: 0x90000, len: 256, writable: true }]);
    r.t.notify(0);
    r.t.pause();
    expect(dev.paused).toBe(true);
    p.host.write("typed while paused");
    r.mem.write(0x80000, new TextEncoder().encode("said while paused"));
    tx!.addChain([{ addr: 0x80000, len: 17 }]);
    r.t.notify(1);
    let heard = "";
    p.host.on("data", (b: Buffer) => (heard += b.toString()));
    await new Promise((res) => setTimeout(res, 100));
    expect(rx!.takeUsed()).toEqual([]);
    expect(tx!.takeUsed()).toEqual([]);
    expect(dev.pendingInputBytes).toBe(0); // not even read from the socket
    expect(heard).toBe("");
    expect(r.irq.count).toBe(0);
    r.t.resume();
    expect(tx!.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    let used: { id: number; len: number }[] = [];
    for (let i = 0; i < 100 && used.length === 0; i++) {
      await tick();
      used = rx!.takeUsed();
    }
    expect(used).toEqual([{ id: 0, len: 18 }]);
    expect(Buffer.from(r.mem.slice(0x90000, 18)).toString()).toBe("typed while paused");
    await until(() => heard === "said while paused");
    await p.close();
  });

  it("state saves buffered host input; a device restored onto a new socket delivers it first, then the new socket's input", async () => {
    const a = await socketPair("old.sock");
    const dev = new VirtioConsole({ input: a.device, output: a.device });
    const r = rig(dev);
    const [rx] = bringUp(r);
    a.host.write("buffered");
    await until(() => dev.pendingInputBytes === 8); // no receive buffer posted: held in the device
    r.t.pause();
    const saved = JSON.parse(JSON.stringify(r.t.state())) as MmioTransportState;
    expect(saved.device).toMatchObject({ deviceType: 3, pendingInput: Buffer.from("buffered").toString("base64") });
    await a.close();
    const b = await socketPair("new.sock");
    const dev2 = new VirtioConsole({ input: b.device, output: b.device });
    const t2 = MmioTransport.fromState(saved, dev2, { mem: r.mem, irq: r.irq }, { paused: true });
    b.host.write("+fresh");
    rx!.addChain([{ addr: 0x90000, len: 256, writable: true }]);
    rx!.addChain([{ addr: 0x91000, len: 256, writable: true }]);
    t2.notify(0);
    expect(rx!.takeUsed()).toEqual([]); // paused until resume
    t2.resume();
    let got = "";
    for (let i = 0; i < 100 && got !== "buffered+fresh"; i++) {
      for (const u of rx!.takeUsed()) got += Buffer.from(r.mem.slice(u.id === 0 ? 0x90000 : 0x91000, u.len)).toString();
      await tick();
    }
    expect(got).toBe("buffered+fresh");
    await b.close();
    // Hostile states are refused with the field named.
    const bad = [{ deviceType: 4 }, { ...saved.device, pendingInput: "***" }, { ...saved.device, pendingInput: "A".repeat(Math.ceil(CONSOLE_MAX_SAVED_INPUT_BYTES / 3) * 4 + 4) }, { ...saved.device, stats: { ...(saved.device.stats as object), rxBytes: -1 } }];
    for (const s of bad) expect(() => new VirtioConsole().restoreState(s), JSON.stringify(s).slice(0, 80)).toThrow(expect.objectContaining({ code: "InvalidState" }));
  });
});

async function until(pred: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}
