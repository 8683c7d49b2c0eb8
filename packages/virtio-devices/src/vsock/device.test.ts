import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { bringUp, rig } from "../../test/driver.js";
import { VsockGuest } from "../../test/vsock-guest.js";
import {
  MMIO,
  MmioTransport,
  STATUS_DEVICE_NEEDS_RESET,
  VSOCK_FIRST_LOCAL_PORT,
  VSOCK_OP_CREDIT_REQUEST,
  VSOCK_OP_CREDIT_UPDATE,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RST,
  VSOCK_OP_RW,
  VSOCK_OP_SHUTDOWN,
  VSOCK_SHUTDOWN_RCV,
  VSOCK_SHUTDOWN_SEND,
  VirtioDeviceError,
  VirtioVsock,
  VsockUnixBackend,
  type VirtioVsockOptions,
} from "../index.js";

const dir = mkdtempSync(join(tmpdir(), "vsock-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const CID = 42;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

let n = 0;
function device(opts: Partial<VirtioVsockOptions> = {}, sizes?: number[]): { dev: VirtioVsock; g: VsockGuest; uds: string; r: ReturnType<typeof rig> } {
  const uds = join(dir, `v${n++}.sock`);
  const dev = VirtioVsock.open({ cid: CID, udsPath: uds, ...opts });
  cleanups.push(() => dev.close());
  const r = rig(dev);
  const [rx, tx, ev] = bringUp(r, undefined, sizes);
  const g = new VsockGuest(r, rx!, tx!, ev!, CID);
  return { dev, g, uds, r };
}

/** A Unix listener at `path`; resolves with each accepted socket through `next()`. */
async function listen(path: string): Promise<{ server: Server; next: () => Promise<Socket>; count: () => number }> {
  const waiting: ((s: Socket) => void)[] = [];
  const got: Socket[] = [];
  let accepted = 0;
  const server = createServer({ allowHalfOpen: true }, (s) => {
    accepted++;
    s.on("error", () => {}); // a reset from the device is a normal end here
    const w = waiting.shift();
    if (w) w(s);
    else got.push(s);
  });
  await new Promise<void>((res) => server.listen(path, res));
  cleanups.push(() => server.close());
  return {
    server,
    next: () => (got.length > 0 ? Promise.resolve(got.shift()!) : new Promise((res) => waiting.push(res))),
    count: () => accepted,
  };
}

/** Collects everything a socket receives. */
function collect(s: Socket): { text: () => string; bytes: () => Buffer; ended: Promise<void> } {
  const chunks: Buffer[] = [];
  s.on("data", (c: Buffer) => chunks.push(c));
  const ended = new Promise<void>((res) => s.once("end", () => res()));
  return { text: () => Buffer.concat(chunks).toString(), bytes: () => Buffer.concat(chunks), ended };
}

async function until(pred: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(5);
  }
}

/** Host connects with CONNECT <port>; the guest accepts. Returns the host socket, its received text, the assigned port. */
async function hostConnect(g: VsockGuest, uds: string, port: number): Promise<{ sock: Socket; rx: ReturnType<typeof collect>; hostPort: number }> {
  const sock = connect({ path: uds, allowHalfOpen: true });
  cleanups.push(() => sock.destroy());
  const rx = collect(sock);
  await new Promise<void>((res) => sock.once("connect", () => res()));
  sock.write(`CONNECT ${port}\n`);
  const req = await g.waitFor((p) => p.h.op === VSOCK_OP_REQUEST && p.h.dstPort === port);
  g.send({ op: VSOCK_OP_RESPONSE, srcPort: port, dstPort: req.h.srcPort });
  await until(() => rx.text().includes("\n"));
  return { sock, rx, hostPort: req.h.srcPort };
}

/** Guest connects to host port `port` (a listener at `<uds>_<port>` must exist) from `guestPort`. */
async function guestConnect(g: VsockGuest, port: number, guestPort: number, bufAlloc = 256 * 1024): Promise<void> {
  g.send({ op: VSOCK_OP_REQUEST, srcPort: guestPort, dstPort: port, bufAlloc });
  const p = await g.waitFor((q) => q.h.dstPort === guestPort && (q.h.op === VSOCK_OP_RESPONSE || q.h.op === VSOCK_OP_RST));
  expect(p.h.op).toBe(VSOCK_OP_RESPONSE);
}

describe("virtio-vsock device", () => {
  it("has device id 19, three queues, no device features, and the CID in config (le64)", () => {
    const { dev, r } = device();
    expect(dev.deviceType).toBe(19);
    expect(dev.queueMaxSizes).toHaveLength(3);
    expect(dev.deviceFeatures).toBe(0n);
    const b = new Uint8Array(8);
    r.t.read(MMIO.Config, b);
    expect(new DataView(b.buffer).getBigUint64(0, true)).toBe(42n);
    r.t.read(MMIO.Config + 4, b.subarray(0, 4));
    expect(new DataView(b.buffer).getUint32(0, true)).toBe(0);
  });

  it("refuses a reserved CID and a uds path that is not a socket", () => {
    expect(() => VirtioVsock.open({ cid: 2, udsPath: join(dir, "x.sock") })).toThrow(VirtioDeviceError);
    expect(() => VirtioVsock.open({ cid: 0xffff_ffff, udsPath: join(dir, "x.sock") })).toThrow(VirtioDeviceError);
    expect(() => VirtioVsock.open({ cid: 3, udsPath: dir })).toThrow(/not a socket/);
  });
});

describe("virtio-vsock host-initiated connections (CONNECT <port>)", () => {
  it("CONNECT → REQUEST to the guest, RESPONSE → OK <port>, then data both ways", async () => {
    const { g, uds, dev } = device();
    g.postRx(8);
    const { sock, rx, hostPort } = await hostConnect(g, uds, 1234);
    expect(hostPort).toBe(VSOCK_FIRST_LOCAL_PORT);
    expect(rx.text()).toBe(`OK ${hostPort}\n`);
    const req = g.received.find((p) => p.h.op === VSOCK_OP_REQUEST)!;
    expect(req.h).toMatchObject({ srcCid: 2, dstCid: CID, dstPort: 1234, type: 1, len: 0, bufAlloc: 256 * 1024 });
    sock.write("hello guest");
    await until(() => g.dataOn(hostPort, 1234).toString() === "hello guest" || (g.poll(), false));
    g.send({ op: VSOCK_OP_RW, srcPort: 1234, dstPort: hostPort }, new TextEncoder().encode("hello host"));
    await until(() => rx.text() === `OK ${hostPort}\nhello host`);
    expect(dev.metrics.rxBytes).toBe(11);
    expect(dev.metrics.txBytes).toBe(10);
    expect(dev.metrics.connsAdded).toBe(1);
  });

  it("bytes the host sent right after its CONNECT line are delivered once the guest accepts", async () => {
    const { g, uds } = device();
    g.postRx(8);
    const sock = connect({ path: uds });
    cleanups.push(() => sock.destroy());
    await new Promise<void>((res) => sock.once("connect", () => res()));
    sock.write("CONNECT 77\nearly bytes");
    const req = await g.waitFor((p) => p.h.op === VSOCK_OP_REQUEST);
    await sleep(30);
    expect(g.received.some((p) => p.h.op === VSOCK_OP_RW)).toBe(false); // nothing before RESPONSE
    g.send({ op: VSOCK_OP_RESPONSE, srcPort: 77, dstPort: req.h.srcPort });
    await until(() => (g.poll(), g.dataOn(req.h.srcPort, 77).toString() === "early bytes"));
  });

  it("a guest RST instead of RESPONSE closes the host socket without OK", async () => {
    const { g, uds, dev } = device();
    g.postRx(8);
    const sock = connect({ path: uds });
    cleanups.push(() => sock.destroy());
    const rx = collect(sock);
    sock.write("CONNECT 5\n");
    const req = await g.waitFor((p) => p.h.op === VSOCK_OP_REQUEST);
    g.send({ op: VSOCK_OP_RST, srcPort: 5, dstPort: req.h.srcPort });
    await rx.ended;
    expect(rx.text()).toBe("");
    await until(() => dev.metrics.connsRemoved === 1);
  });

  it("no answer from the guest in time: the host socket is closed and the guest gets RST", async () => {
    const { g, uds, dev } = device({ handshakeMs: 100 });
    g.postRx(8);
    const sock = connect({ path: uds });
    cleanups.push(() => sock.destroy());
    const closed = new Promise<void>((res) => sock.once("close", () => res()));
    sock.on("error", () => {});
    sock.write("CONNECT 5\n");
    const req = await g.waitFor((p) => p.h.op === VSOCK_OP_REQUEST);
    await closed;
    await g.waitFor((p) => p.h.op === VSOCK_OP_RST && p.h.srcPort === req.h.srcPort);
    expect(dev.metrics.hostHandshakeFailed).toBe(1);
  });

  it("a bad CONNECT line, or none, closes the host socket and is counted", async () => {
    const { g, uds, dev } = device({ handshakeMs: 150 });
    g.postRx(8);
    for (const line of ["CONNECT x\n", "CONNECT 99999999999\n", `CONNECT ${"1".repeat(40)}`, "HELLO\n", ""]) {
      const sock = connect({ path: uds });
      cleanups.push(() => sock.destroy());
      sock.on("error", () => {});
      const closed = new Promise<void>((res) => sock.once("close", () => res()));
      if (line !== "") sock.write(line);
      await closed;
    }
    expect(dev.metrics.hostHandshakeFailed).toBe(5);
    expect(g.poll().filter((p) => p.h.op === VSOCK_OP_REQUEST)).toEqual([]);
  });
});

describe("virtio-vsock guest-initiated connections (<uds>_<port>)", () => {
  it("REQUEST to port P connects to <uds>_P: RESPONSE, data both ways; an unbound port gets RST", async () => {
    const { g, uds, dev } = device();
    g.postRx(8);
    const l = await listen(`${uds}_5000`);
    await guestConnect(g, 5000, 40000);
    const peer = await l.next();
    const rx = collect(peer);
    g.send({ op: VSOCK_OP_RW, srcPort: 40000, dstPort: 5000 }, new TextEncoder().encode("ping"));
    await until(() => rx.text() === "ping");
    peer.write("pong");
    await until(() => (g.poll(), g.dataOn(5000, 40000).toString() === "pong"));
    const resp = g.received.find((p) => p.h.op === VSOCK_OP_RESPONSE)!;
    expect(resp.h).toMatchObject({ srcCid: 2, dstCid: CID, srcPort: 5000, dstPort: 40000 });

    g.send({ op: VSOCK_OP_REQUEST, srcPort: 40001, dstPort: 9 });
    const rst = await g.waitFor((p) => p.h.dstPort === 40001);
    expect(rst.h).toMatchObject({ op: VSOCK_OP_RST, srcPort: 9, srcCid: 2, dstCid: CID });
    expect(dev.metrics.hostConnectFailed).toBe(1);
  });

  it("two guest ports to the same host port are two connections", async () => {
    const { g, uds } = device();
    g.postRx(8);
    const l = await listen(`${uds}_6000`);
    await guestConnect(g, 6000, 1);
    await guestConnect(g, 6000, 2);
    const [a, b] = [await l.next(), await l.next()];
    const [ra, rb] = [collect(a), collect(b)];
    g.send({ op: VSOCK_OP_RW, srcPort: 1, dstPort: 6000 }, new TextEncoder().encode("one"));
    g.send({ op: VSOCK_OP_RW, srcPort: 2, dstPort: 6000 }, new TextEncoder().encode("two"));
    await until(() => ra.text() + rb.text() === "onetwo" || ra.text() + rb.text() === "twoone");
  });
});

describe("virtio-vsock credit flow control", () => {
  it("a guest with 0 credit gets no data and the host socket is not drained; with credit everything arrives, nothing lost", async () => {
    const { g, uds, dev } = device();
    g.postRx(64);
    const l = await listen(`${uds}_7000`);
    await guestConnect(g, 7000, 1, 0);
    const peer = await l.next();
    const total = 1 << 20;
    const data = Buffer.alloc(total);
    for (let i = 0; i < total; i++) data[i] = (i * 7 + (i >> 12)) & 0xff;
    peer.write(data);
    await sleep(200);
    g.poll();
    expect(g.received.filter((p) => p.h.op === VSOCK_OP_RW)).toEqual([]);
    // The device did not even read the socket: nothing waits in host memory.
    const backend = dev.backend as VsockUnixBackend;
    expect(backend.rxBuffered).toBe(0);
    // Now the guest reads: 16 KiB of buffer, fwd_cnt advanced as it consumes.
    let fwd = 0;
    g.send({ op: VSOCK_OP_CREDIT_UPDATE, srcPort: 1, dstPort: 7000, bufAlloc: 16384, fwdCnt: 0 });
    const deadline = Date.now() + 10_000;
    while (g.dataOn(7000, 1).length < total && Date.now() < deadline) {
      await sleep(2);
      g.poll();
      const got = g.dataOn(7000, 1).length;
      expect(got - fwd).toBeLessThanOrEqual(16384); // never more than the credit given
      expect(backend.rxBuffered).toBeLessThanOrEqual(64 * 1024); // at most one chunk read ahead of the guest
      if (got > fwd) {
        fwd = got;
        g.send({ op: VSOCK_OP_CREDIT_UPDATE, srcPort: 1, dstPort: 7000, bufAlloc: 16384, fwdCnt: fwd });
      }
    }
    expect(g.dataOn(7000, 1).equals(data)).toBe(true);
    // Credit ran out mid-chunk now and then: the device asked for more (at most once per stall).
    expect(g.received.filter((p) => p.h.op === VSOCK_OP_CREDIT_REQUEST).length).toBeGreaterThan(0);
  });

  it("guest data beyond the device's credit is answered with RST and counted", async () => {
    const { g, uds, dev } = device({ bufAlloc: 4096 });
    g.postRx(8);
    const l = await listen(`${uds}_7001`);
    await guestConnect(g, 7001, 1);
    const resp = g.received.find((p) => p.h.op === VSOCK_OP_RESPONSE)!;
    expect(resp.h.bufAlloc).toBe(4096);
    const peer = await l.next();
    const rx = collect(peer);
    // Two packets in one notification: the first fills the credit, the second is past it.
    g.send({ op: VSOCK_OP_RW, srcPort: 1, dstPort: 7001 }, new Uint8Array(4096).fill(1), { notify: false });
    g.send({ op: VSOCK_OP_RW, srcPort: 1, dstPort: 7001 }, new Uint8Array(1).fill(2));
    await g.waitFor((p) => p.h.op === VSOCK_OP_RST && p.h.dstPort === 1);
    expect(dev.metrics.malformed.credit).toBe(1);
    await rx.ended;
    expect(rx.bytes().length).toBe(4096); // what was within credit still reached the host
  });

  it("a host socket that does not read holds at most the credit; a guest honouring credit stalls there, and the rest flows once it reads", async () => {
    const bufAlloc = 64 * 1024;
    const { g, uds, dev } = device({ bufAlloc });
    g.postRx(32);
    const l = await listen(`${uds}_7002`);
    await guestConnect(g, 7002, 1);
    const peer = await l.next();
    peer.pause();
    let sent = 0;
    let peerFwd = 0;
    const total = 4 << 20; // well past the kernel's socket buffers
    const deadline = Date.now() + 1500;
    while (sent < total && Date.now() < deadline) {
      for (const p of g.poll()) if (p.h.srcPort === 7002) peerFwd = p.h.fwdCnt;
      const credit = bufAlloc - (sent - peerFwd);
      if (credit > 0) {
        const k = Math.min(credit, 32 * 1024, total - sent);
        g.send({ op: VSOCK_OP_RW, srcPort: 1, dstPort: 7002 }, new Uint8Array(k).fill(sent & 0xff));
        sent += k;
      } else await sleep(5);
      const backend = dev.backend as VsockUnixBackend;
      expect(backend.txBuffered).toBeLessThanOrEqual(bufAlloc);
    }
    expect(sent).toBeLessThan(total); // stalled on credit
    expect(dev.metrics.malformed.credit).toBe(0);
    const rx = collect(peer); // reading starts
    peer.resume();
    while (sent < total) {
      for (const p of g.poll()) if (p.h.srcPort === 7002) peerFwd = p.h.fwdCnt;
      const credit = bufAlloc - (sent - peerFwd);
      if (credit > 0) {
        const k = Math.min(credit, 32 * 1024, total - sent);
        g.send({ op: VSOCK_OP_RW, srcPort: 1, dstPort: 7002 }, new Uint8Array(k).fill(sent & 0xff));
        sent += k;
      } else await sleep(2);
    }
    await until(() => rx.bytes().length === total, 10_000);
  });

  it("a slow host socket does not block another connection", async () => {
    const { g, uds } = device({ bufAlloc: 16384 });
    g.postRx(16);
    const slow = await listen(`${uds}_8000`);
    const fast = await listen(`${uds}_8001`);
    await guestConnect(g, 8000, 1);
    await guestConnect(g, 8001, 2);
    const s = await slow.next();
    s.pause();
    const f = collect(await fast.next());
    for (let i = 0; i < 4; i++) g.send({ op: VSOCK_OP_RW, srcPort: 1, dstPort: 8000 }, new Uint8Array(4096), { notify: false });
    g.send({ op: VSOCK_OP_RW, srcPort: 2, dstPort: 8001 }, new TextEncoder().encode("still flowing"));
    await until(() => f.text() === "still flowing");
  });

  it("answers CREDIT_REQUEST with CREDIT_UPDATE", async () => {
    const { g, uds } = device();
    g.postRx(8);
    await listen(`${uds}_8100`);
    await guestConnect(g, 8100, 3);
    g.send({ op: VSOCK_OP_CREDIT_REQUEST, srcPort: 3, dstPort: 8100 });
    const u = await g.waitFor((p) => p.h.op === VSOCK_OP_CREDIT_UPDATE);
    expect(u.h).toMatchObject({ srcPort: 8100, dstPort: 3, bufAlloc: 256 * 1024, fwdCnt: 0 });
  });
});

describe("virtio-vsock malformed packets", () => {
  it("each malformed header gets RST (ports swapped) and is counted; an RST is never answered", async () => {
    const { g, dev } = device();
    g.postRx(32);
    const cases: [string, Parameters<VsockGuest["send"]>][] = [
      ["cid", [{ op: VSOCK_OP_REQUEST, srcCid: 7, srcPort: 100, dstPort: 1 }]],
      ["cid", [{ op: VSOCK_OP_REQUEST, dstCid: 3, srcPort: 101, dstPort: 1 }]],
      ["type", [{ op: VSOCK_OP_REQUEST, type: 2, srcPort: 102, dstPort: 1 }]],
      ["op", [{ op: 0, srcPort: 103, dstPort: 1 }]],
      ["op", [{ op: 99, srcPort: 104, dstPort: 1 }]],
      ["len", [{ op: VSOCK_OP_RW, len: 100, srcPort: 105, dstPort: 1 }, new Uint8Array(10)]],
      ["len", [{ op: VSOCK_OP_RW, len: 70000, srcPort: 106, dstPort: 1 }, new Uint8Array(10), { chainLen: 70044 }]],
      ["len", [{ op: VSOCK_OP_REQUEST, srcPort: 107, dstPort: 1 }, new Uint8Array(8)]],
    ];
    for (const [, args] of cases) g.send(...args);
    await until(() => (g.poll(), g.received.filter((p) => p.h.op === VSOCK_OP_RST).length === cases.length));
    const rsts = g.received.filter((p) => p.h.op === VSOCK_OP_RST);
    expect(rsts.map((p) => p.h.dstPort).sort()).toEqual([100, 101, 102, 103, 104, 105, 106, 107]);
    expect(rsts.every((p) => p.h.srcPort === 1 && p.h.dstCid === CID && p.h.srcCid === 2)).toBe(true);
    expect(dev.metrics.malformed).toMatchObject({ cid: 2, type: 1, op: 2, len: 3 });
    // A malformed RST, and a well-formed RST for nothing: no answer.
    g.send({ op: VSOCK_OP_RST, srcCid: 9, srcPort: 200, dstPort: 1 });
    g.send({ op: VSOCK_OP_RST, srcPort: 201, dstPort: 1 });
    await sleep(30);
    expect(g.poll()).toEqual([]);
  });

  it("a CID with the upper 32 bits set is not the guest's", async () => {
    const { g, dev } = device();
    g.postRx(4);
    g.send({ op: VSOCK_OP_REQUEST, srcPort: 300, dstPort: 1 }, new Uint8Array(0), { notify: false });
    g.r.mem.writeU32(0x800000 + 4, 1); // src_cid = 42 + 2^32
    g.r.t.notify(1);
    await g.waitFor((p) => p.h.op === VSOCK_OP_RST && p.h.dstPort === 300);
    expect(dev.metrics.malformed.cid).toBe(1);
  });

  it("a tx chain shorter than a header is completed and counted; an rx chain shorter than a header is returned empty", async () => {
    const { g, dev } = device();
    g.send({ op: VSOCK_OP_REQUEST, srcPort: 1, dstPort: 1 }, new Uint8Array(0), { chainLen: 20 });
    expect(g.reapTx()).toBe(1);
    expect(dev.metrics.malformed.shortHeader).toBe(1);
    g.send({ op: VSOCK_OP_RW, srcPort: 5, dstPort: 5 }, new Uint8Array(3)); // unknown connection: RST due
    g.postRx(1, 16);
    await sleep(20);
    expect(g.poll(false)).toEqual([]);
    expect(dev.metrics.rxChainTooSmall).toBe(1);
    g.postRx(1);
    const p = await g.waitFor(() => true);
    expect(p.h).toMatchObject({ op: VSOCK_OP_RST, dstPort: 5 });
  });

  it("RW, SHUTDOWN or a second REQUEST on the wrong state is RST; RESPONSE to nothing is RST", async () => {
    const { g, uds, dev } = device();
    g.postRx(16);
    await listen(`${uds}_9000`);
    await guestConnect(g, 9000, 10);
    g.send({ op: VSOCK_OP_REQUEST, srcPort: 10, dstPort: 9000 });
    await g.waitFor((p) => p.h.op === VSOCK_OP_RST && p.h.dstPort === 10);
    expect(dev.metrics.malformed.op).toBe(1);
    g.send({ op: VSOCK_OP_RESPONSE, srcPort: 11, dstPort: 9000 });
    await g.waitFor((p) => p.h.op === VSOCK_OP_RST && p.h.dstPort === 11);
  });

  it("a buffer outside guest memory sets NEEDS_RESET", () => {
    const { g, r } = device();
    g.tx.addChain([{ addr: 2 ** 40, len: 44 }]);
    r.t.notify(1);
    expect(r.t.status & STATUS_DEVICE_NEEDS_RESET).toBeTruthy();
  });

  it("work per turn is bounded: RSTs the guest does not collect pause tx (chains stay in the ring), nothing is dropped", async () => {
    const { g, dev } = device({}, [256, 256, 64]);
    for (let i = 0; i < 200; i++) g.send({ op: VSOCK_OP_RW, srcPort: 1000 + i, dstPort: 1 }, new Uint8Array(0), { notify: false });
    g.r.t.notify(1);
    await sleep(20);
    expect(g.reapTx()).toBe(64); // the RST backlog, then tx pauses
    expect(dev.metrics.txPaused).toBeGreaterThan(0);
    const deadline = Date.now() + 5000;
    while (g.received.length < 200 && Date.now() < deadline) {
      g.postRx(16);
      await sleep(5);
      g.poll(false);
    }
    g.reapTx();
    expect(g.txCompleted).toBe(200);
    expect(new Set(g.received.map((p) => p.h.dstPort)).size).toBe(200);
    expect(dev.metrics.rstSent).toBe(200);
  });
});

describe("virtio-vsock connection limit", () => {
  it("past maxConnections a guest REQUEST gets RST and a host connect is closed", async () => {
    const { g, uds, dev } = device({ maxConnections: 2 });
    g.postRx(16);
    await listen(`${uds}_9100`);
    await guestConnect(g, 9100, 1);
    await guestConnect(g, 9100, 2);
    g.send({ op: VSOCK_OP_REQUEST, srcPort: 3, dstPort: 9100 });
    await g.waitFor((p) => p.h.op === VSOCK_OP_RST && p.h.dstPort === 3);
    const sock = connect({ path: uds });
    cleanups.push(() => sock.destroy());
    sock.on("error", () => {});
    await new Promise<void>((res) => sock.once("close", () => res()));
    expect(dev.metrics.connsRefusedLimit).toBe(2);
    // Closing one frees a slot once its host socket has closed.
    g.send({ op: VSOCK_OP_RST, srcPort: 1, dstPort: 9100 });
    const backend = dev.backend as VsockUnixBackend;
    await until(() => dev.metrics.connsRemoved >= 1 && backend.lingeringCount === 0);
    await guestConnect(g, 9100, 4);
  });
});

describe("virtio-vsock shutdown and close", () => {
  it("guest SHUTDOWN SEND → host EOF; host end → guest SHUTDOWN SEND, then RST; the host socket closes", async () => {
    const { g, uds, dev } = device();
    g.postRx(16);
    const l = await listen(`${uds}_9200`);
    await guestConnect(g, 9200, 1);
    const peer = await l.next();
    const rx = collect(peer);
    const closed = new Promise<void>((res) => peer.once("close", () => res()));
    g.send({ op: VSOCK_OP_RW, srcPort: 1, dstPort: 9200 }, new TextEncoder().encode("last words"));
    g.send({ op: VSOCK_OP_SHUTDOWN, srcPort: 1, dstPort: 9200, flags: VSOCK_SHUTDOWN_SEND });
    await rx.ended;
    expect(rx.text()).toBe("last words");
    peer.end("reply");
    const sd = await g.waitFor((p) => p.h.op === VSOCK_OP_SHUTDOWN);
    expect(sd.h.flags).toBe(VSOCK_SHUTDOWN_SEND);
    expect(g.dataOn(9200, 1).toString()).toBe("reply"); // data before the shutdown
    await g.waitFor((p) => p.h.op === VSOCK_OP_RST);
    await closed;
    expect(dev.metrics.connsRemoved).toBe(1);
  });

  it("guest SHUTDOWN RCV|SEND → RST from the device; the host gets everything sent before it, then EOF", async () => {
    const { g, uds } = device();
    g.postRx(16);
    const { sock, rx, hostPort } = await hostConnect(g, uds, 33);
    g.send({ op: VSOCK_OP_RW, srcPort: 33, dstPort: hostPort }, new TextEncoder().encode("bye"), { notify: false });
    g.send({ op: VSOCK_OP_SHUTDOWN, srcPort: 33, dstPort: hostPort, flags: VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND });
    await g.waitFor((p) => p.h.op === VSOCK_OP_RST && p.h.dstPort === 33);
    await rx.ended;
    expect(rx.text()).toBe(`OK ${hostPort}\nbye`);
    sock.destroy();
  });

  it("host destroys its socket → the guest gets SHUTDOWN or RST; guest RST → the host socket closes", async () => {
    const { g, uds } = device();
    g.postRx(16);
    const a = await hostConnect(g, uds, 40);
    a.sock.destroy();
    await g.waitFor((p) => p.h.dstPort === 40 && (p.h.op === VSOCK_OP_SHUTDOWN || p.h.op === VSOCK_OP_RST));
    const b = await hostConnect(g, uds, 41);
    g.send({ op: VSOCK_OP_RST, srcPort: 41, dstPort: b.hostPort });
    await b.rx.ended;
  });
});

describe("virtio-vsock reset and persist", () => {
  it("device reset closes every host socket; the device works after the driver brings it up again", async () => {
    const { g, uds, r, dev } = device();
    g.postRx(8);
    const l = await listen(`${uds}_9300`);
    await guestConnect(g, 9300, 1);
    const peer = await l.next();
    const closed = new Promise<void>((res) => peer.once("end", () => res()));
    collect(peer);
    r.t.writeRegister(MMIO.Status, 0);
    await closed;
    expect((dev.backend as VsockUnixBackend).connectionCount).toBe(0);
    const [rx, tx, ev] = bringUp(r);
    const g2 = new VsockGuest(r, rx!, tx!, ev!, CID);
    g2.postRx(8);
    await guestConnect(g2, 9300, 2);
  });

  it("state() is the CID; a restored device sends TRANSPORT_RESET on the event queue and has no connections", async () => {
    const { g, uds, r, dev } = device();
    g.postRx(8);
    await listen(`${uds}_9400`);
    await guestConnect(g, 9400, 1);
    g.ev.addChain([{ addr: 0x700000, len: 4, writable: true }]);
    r.t.notify(2);
    expect(g.ev.takeUsed()).toEqual([]); // nothing to report before a restore
    const saved = r.t.state();
    expect(saved.device).toEqual({ deviceType: 19, cid: CID });
    dev.close(); // the old VMM process is gone
    // Restore onto a new device (another socket path), as a restored VMM process would.
    const dev2 = VirtioVsock.open({ cid: CID, udsPath: join(dir, `restored-${n++}.sock`) });
    cleanups.push(() => dev2.close());
    r.mem.writeU32(0x700000, 0xffff_ffff);
    const t2 = MmioTransport.fromState(saved, dev2, { mem: r.mem, irq: r.irq });
    expect(g.ev.takeUsed()).toEqual([{ id: 0, len: 4 }]);
    expect(r.mem.readU32(0x700000)).toBe(0); // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
    expect(dev2.metrics.eventsSent).toBe(1);
    // The old connection is unknown to the restored device: data on it gets RST.
    g.r = { ...r, t: t2 };
    const g2 = g;
    g2.send({ op: VSOCK_OP_RW, srcPort: 1, dstPort: 9400 }, new Uint8Array(4));
    await g2.waitFor((p) => p.h.op === VSOCK_OP_RST && p.h.dstPort === 1);
    expect(() => dev.restoreState({ deviceType: 19, cid: 43 })).toThrow(VirtioDeviceError);
    expect(() => dev.restoreState({ deviceType: 4 })).toThrow(VirtioDeviceError);
  });

  it("the transport-reset event waits for an event buffer; a device reset drops it", () => {
    const { r, g, dev } = device();
    const saved = r.t.state();
    dev.close();
    const dev2 = VirtioVsock.open({ cid: CID, udsPath: join(dir, `restored-${n++}.sock`) });
    cleanups.push(() => dev2.close());
    const t2 = MmioTransport.fromState(saved, dev2, { mem: r.mem, irq: r.irq });
    expect(dev2.eventPending).toBe(true); // no event buffer posted yet
    g.ev.addChain([{ addr: 0x700000, len: 4, writable: true }]);
    t2.notify(2);
    expect(g.ev.takeUsed()).toEqual([{ id: 0, len: 4 }]);
    expect(dev2.eventPending).toBe(false);
    dev2.restoreState(saved.device);
    expect(dev2.eventPending).toBe(true);
    t2.writeRegister(MMIO.Status, 0);
    expect(dev2.eventPending).toBe(false);
  });

  it("paused: host data on an open connection and guest packets wait; resume delivers both ways", async () => {
    const { g, uds, r, dev } = device();
    g.postRx(8);
    const { sock, rx, hostPort } = await hostConnect(g, uds, 9500);
    r.t.pause();
    expect(dev.paused).toBe(true);
    const irqs = r.irq.count;
    const packets = dev.metrics.rxPackets;
    g.poll();
    const txDone = g.txCompleted;
    sock.write("host while paused");
    g.send({ op: VSOCK_OP_RW, srcPort: 9500, dstPort: hostPort }, new TextEncoder().encode("guest while paused"));
    await sleep(100);
    g.poll();
    expect(dev.metrics.rxPackets).toBe(packets);
    expect(g.dataOn(hostPort, 9500).length).toBe(0);
    expect(g.txCompleted).toBe(txDone); // nothing taken from tx
    expect(rx.text()).not.toContain("guest while paused");
    expect(r.irq.count).toBe(irqs);
    r.t.resume();
    await until(() => (g.poll(), g.dataOn(hostPort, 9500).toString() === "host while paused"));
    await until(() => rx.text().includes("guest while paused"));
    expect(g.txCompleted).toBe(txDone + 1);
  });

  it("restored paused, the transport-reset event is written only on resume", () => {
    const { r, g, dev } = device();
    g.ev.addChain([{ addr: 0x700000, len: 4, writable: true }]);
    r.t.notify(2);
    r.t.pause();
    const saved = r.t.state();
    dev.close();
    const dev2 = VirtioVsock.open({ cid: CID, udsPath: join(dir, `restored-${n++}.sock`) });
    cleanups.push(() => dev2.close());
    r.mem.writeU32(0x700000, 0xffff_ffff);
    const t2 = MmioTransport.fromState(saved, dev2, { mem: r.mem, irq: r.irq }, { paused: true });
    expect(dev2.eventPending).toBe(true);
    expect(g.ev.takeUsed()).toEqual([]);
    expect(r.mem.readU32(0x700000)).toBe(0xffff_ffff);
    t2.resume();
    expect(g.ev.takeUsed()).toEqual([{ id: 0, len: 4 }]);
    expect(r.mem.readU32(0x700000)).toBe(0); // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
    expect(dev2.eventPending).toBe(false);
  });
});
