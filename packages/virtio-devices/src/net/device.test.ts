import { constants } from "node:os";
import { describeWith } from "@ts-vmm/test-utils";
import { NetNamespace, uniqueIfName } from "@ts-vmm/test-utils/node";
import { TUN_F } from "@ts-vmm/vmm-sys-util";
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import { bringUp, countingUsedStores, makeMemory, rig, rigOn, type Rig } from "../../test/driver.js";
import { GuestMemoryArrayBuffer, type GuestMemory } from "@ts-vmm/vm-memory";
import { ManualClock } from "../../test/manual-clock.js";
import { GuestNet, GUEST_MAC, arpReplyFrom, arpRequest, tcpRstAck, tcpSegment, until, vnetHeader } from "../../test/net-frames.js";
import {
  INT_CONFIG_CHANGE,
  MMIO,
  MmioTransport,
  NET_MAX_BUFFER,
  RateLimiter,
  STATUS_DEVICE_NEEDS_RESET,
  TapBackend,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_STATUS,
  VirtioNet,
  type MmioTransportState,
  type NetBackend,
  type VirtioNetOptions,
} from "../index.js";

const { EAGAIN, ECANCELED, EINVAL } = constants.errno;

const MRG = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC | VIRTIO_NET_F_MRG_RXBUF;
const PLAIN = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC;

interface NetRig extends Rig {
  readonly dev: VirtioNet;
  readonly g: GuestNet;
  readonly tap: string;
  readonly violations: string[];
}

// Every case runs over guest memory in an ArrayBuffer (transmit through views of it) and in a
// SharedArrayBuffer, as the reference VMM has it (transmit through the device's IovTable).
for (const shared of [false, true]) describeWith({ root: true, tools: ["ip"] }, `virtio-net on a real tap in a private network namespace (guest memory ${shared ? "shared: IovTable" : "not shared: views"})`, () => {
  let ns: NetNamespace;
  const open: VirtioNet[] = [];
  beforeAll(() => {
    ns = NetNamespace.create("vnet");
  });
  afterEach(() => {
    for (const d of open.splice(0)) d.close();
  });
  afterAll(() => ns?.close());

  /** A device on a new tap (opened here, then moved into the namespace as 10.0.2.2/24), brought up by the mock driver. */
  function net(features = PLAIN, opts: Partial<VirtioNetOptions> = {}, sizes?: number[], mem?: GuestMemory): NetRig {
    const tap = uniqueIfName("tsvn");
    const backend = TapBackend.open({ name: tap });
    ns.adopt(tap);
    const violations: string[] = [];
    const dev = new VirtioNet({ backend, mac: "52:54:00:12:34:56", onViolation: (v) => violations.push(v), ...opts });
    open.push(dev);
    const r = rigOn(dev, mem ?? GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x100_0000 }], { shared })) as Rig;
    const [rxq, txq] = bringUp(r, features, sizes);
    return { ...r, dev, g: new GuestNet(r, rxq!, txq!), tap, violations };
  }

  /** The ARP replies among the received frames (vnet header stripped). */
  const arpReplies = (got: { bytes: Uint8Array }[]) => got.map((x) => arpReplyFrom(x.bytes.subarray(12))).filter((m) => m !== undefined);

  it("config space: the MAC, LINK_UP, one queue pair; features offer MRG_RXBUF, MAC, STATUS and the tap's offloads", () => {
    const n = net();
    const cfg = new Uint8Array(10);
    for (let i = 0; i < 10; i++) n.t.read(MMIO.Config + i, cfg.subarray(i, i + 1));
    expect([...cfg.subarray(0, 6)]).toEqual(GUEST_MAC);
    expect(cfg[6]).toBe(1); // VIRTIO_NET_S_LINK_UP
    expect(cfg[8]).toBe(1);
    const f = n.t.offeredFeatures;
    for (const bit of [VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4]) expect(f & bit).toBe(bit);
    // This kernel's tap takes checksum and TSO offloads, so they are offered for receive too.
    expect(n.dev.backend.offloads).toBe(TUN_F.CSUM | TUN_F.TSO4 | TUN_F.TSO6 | TUN_F.TSO_ECN);
    expect(f & VIRTIO_NET_F_GUEST_TSO4).toBe(VIRTIO_NET_F_GUEST_TSO4);
    // Link down: status 0 and a configuration change interrupt.
    n.dev.setLinkUp(false);
    n.t.read(MMIO.Config + 6, cfg.subarray(6, 7));
    expect(cfg[6]).toBe(0);
    expect(n.t.interruptStatus & INT_CONFIG_CHANGE).toBe(INT_CONFIG_CHANGE);
  });

  it("an ARP request goes out to the namespace's kernel and its reply comes back (one chain, num_buffers 1)", async () => {
    const n = net();
    n.g.post(4);
    n.g.send(arpRequest());
    expect(n.g.txq.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    expect(n.dev.metrics.txFrames).toBe(1);
    const got: { id: number; len: number; bytes: Uint8Array }[] = [];
    await until(() => (got.push(...n.g.received()), arpReplies(got).length > 0), 3000, "the ARP reply");
    const reply = got.find((x) => arpReplyFrom(x.bytes.subarray(12)) !== undefined)!;
    expect(reply.len).toBe(12 + 42);
    expect(reply.bytes[10]! | (reply.bytes[11]! << 8)).toBe(1); // num_buffers
    expect(n.dev.metrics.rxFrames).toBeGreaterThanOrEqual(1);
    expect(n.dev.metrics.rxTable).toBe(shared ? n.dev.metrics.rxFrames : 0);
    expect(n.irq.count).toBeGreaterThan(0);
    expect(n.violations).toEqual([]);
  });

  it("MRG_RXBUF: a frame spread over 20-byte buffers, num_buffers in the first, each used length its share", async () => {
    const n = net(MRG);
    const heads: number[] = [];
    for (let i = 0; i < 8; i++) heads.push(n.g.postChain([{ addr: 0x90_0000 + i * 0x100, len: 20, writable: true }], false));
    n.t.notify(0);
    n.g.send(arpRequest());
    let used: { id: number; len: number }[] = [];
    await until(() => (used.push(...n.g.rxq.takeUsed()), used.length >= 3), 3000, "3 used buffers");
    used = used.slice(0, 3);
    expect(used.map((u) => u.len)).toEqual([20, 20, 14]);
    const bytes = new Uint8Array(54);
    used.forEach((u, i) => bytes.set(n.mem.slice(0x90_0000 + heads.indexOf(u.id) * 0x100, u.len), i * 20));
    expect(bytes[10]).toBe(3);
    expect(arpReplyFrom(bytes.subarray(12))).toBeDefined();
  });

  it("receive straight into guest memory: a chain of 4 + 20 + 2000 bytes (header split) gets the reply whole, no copy", async () => {
    const n = net();
    n.g.postChain([
      { addr: 0x90_0000, len: 4, writable: true },
      { addr: 0x90_1000, len: 20, writable: true },
      { addr: 0x90_2000, len: 2000, writable: true },
    ], false);
    for (let i = 0; i < 3; i++) n.g.postChain([{ addr: 0x91_0000 + i * 0x1000, len: 2048, writable: true }], false);
    n.t.notify(0);
    n.g.send(arpRequest());
    const used: { id: number; len: number }[] = [];
    await until(() => (used.push(...n.g.rxq.takeUsed()), used.length >= 1), 3000, "a used receive chain");
    // The first chain posted (head 0) took the first frame the kernel sent: the ARP reply.
    expect(used[0]).toEqual({ id: 0, len: 12 + 42 });
    const bytes = new Uint8Array(54);
    bytes.set(n.mem.slice(0x90_0000, 4), 0);
    bytes.set(n.mem.slice(0x90_1000, 20), 4);
    bytes.set(n.mem.slice(0x90_2000, 30), 24);
    expect(bytes[10]! | (bytes[11]! << 8)).toBe(1); // num_buffers, in the second buffer
    expect(arpReplyFrom(bytes.subarray(12))).toBeDefined();
    expect(n.dev.metrics.rxZeroCopy).toBe(n.dev.metrics.rxFrames);
    expect(n.dev.metrics.rxTable).toBe(shared ? n.dev.metrics.rxFrames : 0);
    expect(n.violations).toEqual([]);
  });

  it("receive notifications: off while buffers last (the device looks when a frame comes), on when the ring runs dry", async () => {
    const n = net();
    n.g.post(1);
    expect(n.g.rxq.usedFlags() & 1).toBe(0); // VIRTQ_USED_F_NO_NOTIFY not set before any frame
    n.g.send(arpRequest());
    const used: { id: number; len: number }[] = [];
    await until(() => (used.push(...n.g.rxq.takeUsed()), used.length >= 1), 3000, "a used receive chain");
    // The one buffer went to the reply, and the device then asked for buffers again or still
    // has them off: it ran dry on the next frame only if the kernel sent one. Post many, send again.
    for (let i = 0; i < 8; i++) n.g.postChain([{ addr: 0x92_0000 + i * 0x1000, len: 2048, writable: true }], false);
    n.t.notify(0);
    n.g.send(arpRequest());
    await until(() => (used.push(...n.g.rxq.takeUsed()), used.length >= 2), 3000, "a second used receive chain");
    expect(n.g.rxq.usedFlags() & 1).toBe(1); // buffers left: the driver need not notify
    // Use them all up with frames from the host: the ring runs dry and notifications come back on.
    for (let i = 0; i < 20; i++) n.g.send(arpRequest());
    await until(() => n.dev.metrics.rxNoBuffers > 0, 3000, "the ring running dry");
    expect(n.g.rxq.usedFlags() & 1).toBe(0);
    // Buffers again: the waiting frame is delivered and notifications go off once more.
    const delivered = n.dev.metrics.rxFrames;
    // More than the replies still queued in the tap (at most 20), so the ring does not run dry again.
    for (let i = 0; i < 30; i++) n.g.postChain([{ addr: 0x93_0000 + i * 0x1000, len: 2048, writable: true }], false);
    n.t.notify(0);
    await until(() => n.dev.metrics.rxFrames > delivered, 3000, "the waiting frame delivered");
    await new Promise((r) => setTimeout(r, 50)); // the rest of the queued replies
    expect(n.dev.metrics.rxFrames).toBeLessThanOrEqual(delivered + 30);
    expect(n.g.rxq.usedFlags() & 1).toBe(1);
  });

  it("receive straight into guest memory marks the buffers dirty (diff snapshots), num_buffers split over two buffers", async () => {
    const tap = uniqueIfName("tsvn");
    const backend = TapBackend.open({ name: tap });
    ns.adopt(tap);
    const dev = new VirtioNet({ backend, mac: "52:54:00:12:34:56" });
    open.push(dev);
    const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x100_0000 }], { shared, dirtyTracking: true });
    const r = rigOn(dev, mem);
    const [rxq, txq] = bringUp(r, PLAIN);
    const g = new GuestNet(r, rxq!, txq!);
    // Header bytes 0–10 in the first buffer, byte 11 (num_buffers' high byte) alone in the second.
    g.postChain([
      { addr: 0x90_0000, len: 11, writable: true },
      { addr: 0x91_0000, len: 1, writable: true },
      { addr: 0x92_0000, len: 200, writable: true },
    ], false);
    mem.writeU8(0x90_000a, 0xee); // stale bytes where num_buffers goes
    mem.writeU8(0x91_0000, 0xee);
    r.t.notify(0);
    mem.clearDirty();
    g.send(arpRequest());
    const used: { id: number; len: number }[] = [];
    await until(() => (used.push(...g.rxq.takeUsed()), used.length >= 1), 3000, "a used receive chain");
    expect(used[0]).toEqual({ id: 0, len: 12 + 42 });
    expect(mem.readU8(0x90_000a) | (mem.readU8(0x91_0000) << 8)).toBe(1);
    const frame = new Uint8Array(54);
    frame.set(mem.slice(0x90_0000, 11), 0);
    frame.set(mem.slice(0x91_0000, 1), 11);
    frame.set(mem.slice(0x92_0000, 42), 12);
    expect(arpReplyFrom(frame.subarray(12))).toBeDefined();
    expect(dev.metrics.rxZeroCopy).toBe(dev.metrics.rxFrames);
    expect(dev.metrics.rxTable).toBe(shared ? dev.metrics.rxFrames : 0);
    const dirty = new Set(mem.dirtyPages());
    for (const page of [0x90_0000, 0x91_0000, 0x92_0000]) expect(dirty.has(page), `page 0x${page.toString(16)} dirty`).toBe(true);
  });

  it("a backend without readv gets the same frames through the copying path", async () => {
    const tap = uniqueIfName("tsvn");
    const inner = TapBackend.open({ name: tap });
    ns.adopt(tap);
    const backend = {
      name: inner.name,
      offloads: inner.offloads,
      setOffload: (f: number) => inner.setOffload(f),
      read: (b: Uint8Array) => inner.read(b),
      write: (p: readonly Uint8Array[]) => inner.write(p),
      watch: (e: { readable: boolean; writable: boolean }, cb: (r: { readable: boolean; writable: boolean }) => void) => inner.watch(e, cb),
      close: () => inner.close(),
    };
    const dev = new VirtioNet({ backend, mac: "52:54:00:12:34:56" });
    open.push(dev);
    const r = rig(dev);
    const [rxq, txq] = bringUp(r, PLAIN);
    const g = new GuestNet(r, rxq!, txq!);
    g.post(4);
    g.send(arpRequest());
    const got: { id: number; len: number; bytes: Uint8Array }[] = [];
    await until(() => (got.push(...g.received()), arpReplies(got).length > 0), 3000, "the ARP reply");
    expect(dev.metrics.rxFrames).toBeGreaterThanOrEqual(1);
    expect(dev.metrics.rxZeroCopy).toBe(0);
  });

  it("back-pressure: 100 frames for the guest with no receive buffers; none is lost once buffers come", async () => {
    const n = net(MRG, {}, [64, 256]);
    for (let i = 0; i < 100; i++) {
      // A different sender IP each: 100 ARP requests, 100 replies.
      n.g.send(arpRequest(undefined, [10, 0, 2, 100 + (i % 100)]), vnetHeader(), false);
      if (i % 50 === 49) n.t.notify(1);
    }
    expect(n.dev.metrics.txFrames).toBe(100);
    // The device reads one frame, finds no buffer, and stops reading the tap.
    await until(() => n.dev.metrics.rxNoBuffers > 0, 3000, "the device to wait for buffers");
    await new Promise((r) => setTimeout(r, 100));
    expect(n.dev.metrics.rxFrames).toBe(0);
    const waits = n.dev.metrics.rxNoBuffers;
    // While waiting the tap is not watched: no more reads, no spinning.
    await new Promise((r) => setTimeout(r, 100));
    expect(n.dev.metrics.rxNoBuffers).toBe(waits);
    const got: { bytes: Uint8Array }[] = [];
    for (let round = 0; round < 20 && arpReplies(got).length < 100; round++) {
      n.g.post(10);
      await until(() => (got.push(...n.g.received()), got.length >= 10 * (round + 1) || arpReplies(got).length >= 100), 3000, `round ${round}`);
    }
    const replies = arpReplies(got);
    expect(replies.length).toBe(100);
    expect(n.dev.metrics.rxDroppedTooLarge + n.dev.metrics.rxDroppedBadFrame + n.dev.metrics.rxTapErrors).toBe(0);
    // The kernel dropped nothing on its side either (its tx is the guest's rx).
    expect(ns.linkStats(n.tap).txDropped).toBe(0);
  });

  it("bad transmit chains are dropped and counted, and the device goes on: short header, oversize, outside memory, writable parts, unnegotiated offloads", async () => {
    const n = net();
    const mem = n.mem;
    // Shorter than header + Ethernet header.
    mem.write(0x50_0000, new Uint8Array(20));
    n.g.txq.addChain([{ addr: 0x50_0000, len: 20 }]);
    // Larger than 12 + 64 KiB + 14.
    n.g.txq.addChain([{ addr: 0x60_0000, len: NET_MAX_BUFFER + 1 }]);
    // A buffer outside guest memory (16 MiB here).
    n.g.txq.addChain([{ addr: 0x50_0000, len: 12 }, { addr: 0x4000_0000, len: 64 }]);
    // A device-writable part.
    n.g.txq.addChain([{ addr: 0x50_0000, len: 60 }, { addr: 0x50_1000, len: 16, writable: true }]);
    n.t.notify(1);
    // NEEDS_CSUM and TSO without the features.
    n.g.send(arpRequest(), vnetHeader({ flags: 1, csumStart: 14, csumOffset: 10 }));
    n.g.send(arpRequest(), vnetHeader({ gsoType: 1, gsoSize: 1000, hdrLen: 54 }));
    n.g.send(arpRequest(), vnetHeader({ flags: 0x80 }));
    expect(n.g.txq.takeUsed().map((u) => u.len)).toEqual([0, 0, 0, 0, 0, 0, 0]);
    expect(n.dev.metrics.txOversize).toBe(1);
    expect(n.dev.metrics.txMalformed).toBe(6);
    expect(n.dev.metrics.txFrames).toBe(0);
    expect(n.t.status & STATUS_DEVICE_NEEDS_RESET).toBe(0);
    expect(n.violations.length).toBe(7);
    // Still works.
    n.g.post(4);
    n.g.send(arpRequest());
    const got: { bytes: Uint8Array }[] = [];
    await until(() => (got.push(...n.g.received()), arpReplies(got).length > 0), 3000, "the ARP reply");
  });

  it("a transmit frame split over buffers (header split too, an empty buffer) goes out whole; one running off the end of memory is dropped", async () => {
    const n = net();
    const mem = n.mem;
    const bytes = new Uint8Array(12 + 42);
    bytes.set(vnetHeader(), 0);
    bytes.set(arpRequest(), 12);
    // 5 header bytes, 7 header bytes + 3 frame bytes, nothing, the rest: the kernel answers only a whole ARP request.
    const parts = [[0x50_0000, 0, 5], [0x51_0000, 5, 15], [0x52_0000, 15, 15], [0x53_0000, 15, 54]] as const;
    for (const [addr, from, to] of parts) mem.write(addr, bytes.subarray(from, to));
    n.g.txq.addChain(parts.map(([addr, from, to]) => ({ addr, len: to - from })));
    // Starts inside guest memory (16 MiB here) and runs past its end.
    n.g.txq.addChain([{ addr: 0x50_0000, len: 12 }, { addr: 0xff_fff0, len: 64 }]);
    n.g.post(4);
    n.t.notify(1);
    expect(n.g.txq.takeUsed().map((u) => u.len)).toEqual([0, 0]);
    expect(n.dev.metrics.txFrames).toBe(1);
    expect(n.dev.metrics.txTable).toBe(shared ? 1 : 0);
    expect(n.dev.metrics.txBytes).toBe(42);
    expect(n.dev.metrics.txMalformed).toBe(1);
    expect(n.violations.length).toBe(1);
    const got: { bytes: Uint8Array }[] = [];
    await until(() => (got.push(...n.g.received()), arpReplies(got).length > 0), 3000, "the ARP reply");
  });

  it("a transmit chain of as many buffers as the queue has entries goes out in that many pieces; a longer one is dropped", () => {
    // A chain is at most the queue's size (256 here, even through an indirect table), so a
    // frame never needs more than 257 writev pieces: IOV_MAX (1024) is out of a guest's reach.
    const n = net(PLAIN | VIRTIO_F_INDIRECT_DESC, {}, [256, 256]);
    const bytes = new Uint8Array(12 + 42);
    bytes.set(vnetHeader(), 0);
    bytes.set(arpRequest(), 12);
    const chainOf = (buffers: number): { addr: number; len: number }[] => {
      // The header and the Ethernet header in the first buffer, then one byte a buffer (of the
      // ARP request, round and round: the kernel gets a longer, padded frame; fine).
      const out = [{ addr: 0x50_0000, len: 26 }];
      for (let i = 1; i < buffers; i++) out.push({ addr: 0x50_0000 + 26 + ((i - 1) % 28), len: 1 });
      return out;
    };
    n.mem.write(0x50_0000, bytes);
    n.g.txq.addChain(chainOf(257), { indirect: true });
    n.g.txq.addChain(chainOf(256), { indirect: true });
    n.t.notify(1);
    expect(n.g.txq.takeUsed().map((u) => u.len)).toEqual([0, 0]);
    expect([n.dev.metrics.txMalformed, n.dev.metrics.txFrames, n.dev.metrics.txTable, n.dev.metrics.txTapErrors]).toEqual([1, 1, shared ? 1 : 0, 0]);
    expect(n.dev.metrics.txBytes).toBe(14 + 255);
    expect(n.violations.join()).toMatch(/ChainTooLong/);
  });

  it("a transmit chain across two memory regions goes out whole (through views: a table names one region a frame)", async () => {
    // Two regions of 8 MiB, adjacent, as a VMM lays out RAM around a hole.
    const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x80_0000 }, { start: 0x80_0000, size: 0x80_0000 }], { shared });
    const n = net(PLAIN, {}, undefined, mem);
    const bytes = new Uint8Array(12 + 42);
    bytes.set(vnetHeader(), 0);
    bytes.set(arpRequest(), 12);
    // The header and 20 frame bytes at the end of region 0, the rest in region 1: two buffers,
    // then the same frame as one buffer that crosses the boundary.
    mem.write(0x7f_ffe0, bytes.subarray(0, 32));
    mem.write(0x80_0000, bytes.subarray(32));
    n.g.txq.addChain([{ addr: 0x7f_ffe0, len: 32 }, { addr: 0x80_0000, len: 22 }]);
    n.g.txq.addChain([{ addr: 0x7f_ffe0, len: 54 }]);
    n.g.post(8);
    n.t.notify(1);
    expect(n.g.txq.takeUsed().map((u) => u.len)).toEqual([0, 0]);
    expect([n.dev.metrics.txFrames, n.dev.metrics.txTable, n.dev.metrics.txMalformed, n.dev.metrics.txTapErrors]).toEqual([2, 0, 0, 0]);
    const got: { bytes: Uint8Array }[] = [];
    await until(() => (got.push(...n.g.received()), arpReplies(got).length >= 2), 3000, "two ARP replies");
    // A frame inside region 1 alone goes through the table again.
    mem.write(0x90_0000, bytes);
    n.g.txq.addChain([{ addr: 0x90_0000, len: 54 }]);
    n.t.notify(1);
    expect([n.dev.metrics.txFrames, n.dev.metrics.txTable]).toEqual([3, shared ? 1 : 0]);
  });

  it("receive chains and memory regions: buffers in two regions take a frame through the table, a buffer across the boundary through views", async () => {
    const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x80_0000 }, { start: 0x80_0000, size: 0x80_0000 }], { shared });
    const n = net(PLAIN, {}, undefined, mem);
    // Chain 0: the header and 8 bytes in region 0, 2000 bytes in region 1. Chain 1: one buffer of
    // 2048 bytes from 16 bytes before the boundary.
    const a = n.g.postChain([{ addr: 0x70_0000, len: 20, writable: true }, { addr: 0x80_1000, len: 2000, writable: true }], false);
    const b = n.g.postChain([{ addr: 0x7f_fff0, len: 2048, writable: true }], false);
    n.t.notify(0);
    n.g.send(arpRequest());
    n.g.send(arpRequest());
    const used: { id: number; len: number }[] = [];
    await until(() => (used.push(...n.g.rxq.takeUsed()), used.length >= 2), 3000, "two used receive chains");
    expect(used.slice(0, 2)).toEqual([{ id: a, len: 54 }, { id: b, len: 54 }]);
    const first = new Uint8Array(54);
    first.set(mem.slice(0x70_0000, 20), 0);
    first.set(mem.slice(0x80_1000, 34), 20);
    const second = new Uint8Array(54);
    mem.read(0x7f_fff0, second);
    for (const f of [first, second]) {
      expect(f[10]! | (f[11]! << 8)).toBe(1); // num_buffers
      expect(arpReplyFrom(f.subarray(12))).toBeDefined();
    }
    expect([n.dev.metrics.rxFrames, n.dev.metrics.rxZeroCopy, n.dev.metrics.rxTable]).toEqual([2, 2, shared ? 1 : 0]);
    expect(n.violations).toEqual([]);
  });

  it("bad receive buffers are returned unused and counted: read-only, under 12 bytes, outside memory", async () => {
    const n = net();
    const ro = n.g.postChain([{ addr: 0x90_0000, len: 2048 }], false);
    const small = n.g.postChain([{ addr: 0x90_1000, len: 8, writable: true }], false);
    const outside = n.g.postChain([{ addr: 0x4000_0000, len: 2048, writable: true }], false);
    const good = n.g.postChain([{ addr: 0x90_2000, len: 2048, writable: true }], false);
    n.t.notify(0);
    n.g.send(arpRequest());
    const used: { id: number; len: number }[] = [];
    await until(() => (used.push(...n.g.rxq.takeUsed()), used.some((u) => u.id === good)), 3000, "the good buffer");
    expect(used.slice(0, 3)).toEqual([
      { id: ro, len: 0 },
      { id: small, len: 0 },
      { id: outside, len: 0 },
    ]);
    expect(used[3]!.len).toBe(54);
    expect(arpReplyFrom(n.mem.slice(0x90_2000 + 12, 42))).toBeDefined();
    expect(n.dev.metrics.rxMalformedChains).toBe(3);
    expect(n.t.status & STATUS_DEVICE_NEEDS_RESET).toBe(0);
  });

  it("without MRG_RXBUF a frame larger than the chain is dropped and the chain kept; with it, a ring too small for the frame drops it", async () => {
    const n = net(PLAIN);
    n.g.postChain([{ addr: 0x90_0000, len: 40, writable: true }]);
    n.g.send(arpRequest());
    await until(() => n.dev.metrics.rxDroppedTooLarge > 0, 3000, "the drop");
    expect(n.g.rxq.takeUsed()).toEqual([]); // the chain went back unused, still posted
    n.dev.close();

    const m = net(MRG, {}, [4, 64]);
    for (let i = 0; i < 4; i++) m.g.postChain([{ addr: 0x90_0000 + i * 0x100, len: 12, writable: true }], false);
    m.t.notify(0);
    m.g.send(arpRequest());
    await until(() => m.dev.metrics.rxDroppedTooLarge > 0, 3000, "the drop");
    expect(m.g.rxq.takeUsed()).toEqual([]);
  });

  it("a broken receive ring (avail index too far ahead) sets NEEDS_RESET; nothing is written", async () => {
    const n = net();
    n.g.rxq.setAvailIdx(1000);
    n.g.send(arpRequest());
    await until(() => (n.t.status & STATUS_DEVICE_NEEDS_RESET) !== 0, 3000, "NEEDS_RESET");
    expect(n.dev.metrics.needsReset).toBe(1);
    expect(n.dev.metrics.rxFrames).toBe(0);
  });

  it("TSO and checksum offload on transmit: a 3000-byte GSO TCP segment with a partial checksum reaches the kernel whole", async () => {
    const f = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC | VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_MRG_RXBUF;
    const n = net(f);
    n.g.post(16);
    n.g.send(arpRequest());
    const got: { bytes: Uint8Array }[] = [];
    await until(() => (got.push(...n.g.received()), arpReplies(got).length > 0), 3000, "the ARP reply");
    const peerMac = arpReplies(got)[0]!;
    const seq = 0x1000;
    n.g.send(tcpSegment(peerMac, 3000, seq), vnetHeader({ flags: 1, gsoType: 1, hdrLen: 54, gsoSize: 1000, csumStart: 34, csumOffset: 16 }));
    expect(n.dev.metrics.txTapErrors).toBe(0);
    expect(n.dev.metrics.txBytes).toBe(42 + 54 + 3000);
    // No socket listens: the kernel answers with a RST that acknowledges all 3000 bytes.
    const later: { bytes: Uint8Array }[] = [];
    await until(() => (later.push(...n.g.received()), later.some((x) => tcpRstAck(x.bytes.subarray(12)) !== undefined)), 3000, "the RST");
    const ack = later.map((x) => tcpRstAck(x.bytes.subarray(12))).find((a) => a !== undefined);
    expect(ack).toBe(seq + 3000);
    // A GSO header the kernel refuses (gso_size 0) is counted as a tap error and dropped.
    n.g.send(tcpSegment(peerMac, 3000, seq), vnetHeader({ flags: 1, gsoType: 1, hdrLen: 54, gsoSize: 0, csumStart: 34, csumOffset: 16 }));
    expect(n.dev.metrics.txTapErrors).toBe(1);
    expect(n.g.txq.takeUsed().length).toBe(3);
  });

  it("a frame the kernel refuses among others sent at once is dropped and counted; the ones after it go out", async () => {
    const f = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC | VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4;
    const n = net(f);
    const before = ns.linkStats(n.tap).rxPackets;
    // Five chains, one notification: a batch of five with the shared memory's table. The third
    // has a GSO header the kernel refuses (gso_size 0); the ones after it were cancelled behind
    // it and go again.
    n.g.send(arpRequest(), vnetHeader(), false);
    n.g.send(arpRequest(), vnetHeader(), false);
    n.g.send(tcpSegment(GUEST_MAC, 3000, 1), vnetHeader({ flags: 1, gsoType: 1, hdrLen: 54, gsoSize: 0, csumStart: 34, csumOffset: 16 }), false);
    n.g.send(arpRequest(), vnetHeader(), false);
    n.g.send(arpRequest(), vnetHeader(), false);
    n.t.notify(1);
    expect(n.g.txq.takeUsed().length).toBe(5);
    expect([n.dev.metrics.txFrames, n.dev.metrics.txTapErrors, n.dev.metrics.txTable, n.dev.metrics.txDroppedNoRoom]).toEqual([4, 1, shared ? 4 : 0, 0]);
    expect(n.violations.length).toBe(1);
    await until(() => ns.linkStats(n.tap).rxPackets - before >= 4, 3000, "four frames at the kernel");
    expect(ns.linkStats(n.tap).rxPackets - before).toBe(4);
  });

  if (shared) {
    it("a batch the tap takes in part (no room from the third frame): the rest go back to the ring, and out once it is writable; behind a refused frame, the rest at once", async () => {
      const tap = uniqueIfName("tsvn");
      const real = TapBackend.open({ name: tap });
      ns.adopt(tap);
      let cutAt: number | undefined = 2;
      let refuseAt: number | undefined;
      const batches: number[] = [];
      const backend: NetBackend = {
        name: real.name,
        offloads: real.offloads,
        setOffload: (flags) => real.setOffload(flags),
        read: (buf) => real.read(buf),
        readv: (pieces) => real.readv(pieces),
        readTable: (table, count) => real.readTable(table, count),
        write: (pieces) => real.write(pieces),
        writeTable: (table, count) => real.writeTable(table, count),
        writeTableBatch(table, n, io) {
          batches.push(n);
          const bad = refuseAt;
          if (bad !== undefined && bad < n) {
            // Frames before `bad` go; `bad` is refused as the kernel refuses a bad header; the rest cancelled.
            refuseAt = undefined;
            if (bad > 0) real.writeTableBatch(table, bad, io);
            io[bad] = -EINVAL;
            for (let i = bad + 1; i < n; i++) io[i] = -ECANCELED;
            return;
          }
          const k = cutAt;
          if (k === undefined || k >= n) return real.writeTableBatch(table, n, io);
          cutAt = undefined;
          // The first k frames really go; the tap "has no room" for the rest.
          if (k > 0) real.writeTableBatch(table, k, io);
          io[k] = -EAGAIN;
          for (let i = k + 1; i < n; i++) io[i] = -ECANCELED;
        },
        watch: (events, cb) => real.watch(events, cb),
        close: () => real.close(),
      };
      const violations: string[] = [];
      const dev = new VirtioNet({ backend, mac: "52:54:00:12:34:56", onViolation: (v) => violations.push(v) });
      open.push(dev);
      const r = rigOn(dev, GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x100_0000 }], { shared })) as Rig;
      const [rxq, txq] = bringUp(r, PLAIN);
      const g = new GuestNet(r, rxq!, txq!);
      const before = ns.linkStats(tap).rxPackets;
      for (let i = 0; i < 6; i++) g.send(arpRequest(), vnetHeader(), false);
      r.t.notify(1);
      expect(batches).toEqual([6]);
      expect(g.txq.takeUsed().length).toBe(2);
      expect([dev.metrics.txFrames, dev.metrics.txTapFull]).toEqual([2, 1]);
      // The tap is writable at once: the watch brings the four back.
      const used: unknown[] = [];
      await until(() => (used.push(...g.txq.takeUsed()), used.length >= 4), 3000, "the other four chains");
      expect(batches).toEqual([6, 4]);
      expect([dev.metrics.txFrames, dev.metrics.txTable, dev.metrics.txTapErrors, dev.metrics.txDroppedNoRoom]).toEqual([6, 6, 0, 0]);
      await until(() => ns.linkStats(tap).rxPackets - before >= 6, 3000, "six frames at the kernel");
      expect(ns.linkStats(tap).rxPackets - before).toBe(6);
      expect(violations).toEqual([]);
      // A frame refused (EINVAL) second of five: dropped, and the three behind it written again at
      // once from the same batch (no pop again): two calls in the same turn, all five returned.
      refuseAt = 1;
      batches.length = 0;
      for (let i = 0; i < 5; i++) g.send(arpRequest(), vnetHeader(), false);
      r.t.notify(1);
      expect(batches).toEqual([5, 3]);
      expect(g.txq.takeUsed().length).toBe(5);
      expect([dev.metrics.txFrames, dev.metrics.txTapErrors, dev.metrics.txTapFull]).toEqual([10, 1, 1]);
      expect(violations.length).toBe(1);
      await until(() => ns.linkStats(tap).rxPackets - before >= 10, 3000, "ten frames at the kernel");
      expect(ns.linkStats(tap).rxPackets - before).toBe(10);
    });
  }

  it("receive offloads follow the negotiated features (TUNSETOFFLOAD at DRIVER_OK, off at reset)", () => {
    const calls: number[] = [];
    const tap = uniqueIfName("tsvn");
    const backend = TapBackend.open({ name: tap });
    ns.adopt(tap);
    const spy = new Proxy(backend, {
      get(target, prop, recv) {
        if (prop === "setOffload") return (flags: number) => (calls.push(flags), target.setOffload(flags));
        const v = Reflect.get(target, prop, recv);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    const dev = new VirtioNet({ backend: spy, mac: "52:54:00:12:34:56" });
    open.push(dev);
    const r = rig(dev);
    bringUp(r, VIRTIO_F_VERSION_1 | VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4);
    bringUp(r, VIRTIO_F_VERSION_1 | VIRTIO_NET_F_GUEST_TSO4); // TSO without GUEST_CSUM: nothing
    // Each bring-up starts with a reset (0); then the first activation's offloads, the second's none.
    expect(calls).toEqual([0, TUN_F.CSUM | TUN_F.TSO4, 0, 0]);
  });

  it("transmit rate limiter: an ops bucket lets 2 frames out, the rest wait in the ring and go when the timer fires", async () => {
    const clock = new ManualClock();
    const n = net(PLAIN, { txRateLimiter: new RateLimiter({ ops: { size: 2, refillTimeMs: 1000 } }, clock) });
    n.g.post(16);
    for (let i = 0; i < 5; i++) n.g.send(arpRequest(undefined, [10, 0, 2, 50 + i]), vnetHeader(), false);
    n.t.notify(1);
    expect(n.dev.metrics.txFrames).toBe(2);
    expect(n.g.txq.takeUsed().length).toBe(2);
    expect(n.dev.metrics.txThrottled).toBe(1);
    n.t.notify(1); // blocked: nothing is popped
    expect(n.dev.metrics.txThrottled).toBe(1);
    clock.advance(501);
    expect(n.dev.metrics.txFrames).toBe(3);
    clock.advance(5000);
    expect(n.dev.metrics.txFrames).toBe(5);
    const got: { bytes: Uint8Array }[] = [];
    await until(() => (got.push(...n.g.received()), arpReplies(got).length === 5), 3000, "5 replies");
  });

  it("receive rate limiter: a frame waits on the host for its tokens; the tap is not read meanwhile", async () => {
    const clock = new ManualClock();
    const n = net(PLAIN, { rxRateLimiter: new RateLimiter({ ops: { size: 1, refillTimeMs: 1000 } }, clock) });
    n.g.post(16);
    for (let i = 0; i < 3; i++) n.g.send(arpRequest(undefined, [10, 0, 2, 60 + i]));
    await until(() => n.dev.metrics.rxThrottled > 0, 3000, "throttling");
    expect(n.dev.metrics.rxFrames).toBe(1);
    clock.advance(1001);
    expect(n.dev.metrics.rxFrames).toBe(2);
    clock.advance(1001);
    await until(() => n.dev.metrics.rxFrames === 3 || n.dev.metrics.rxThrottled > 2, 3000, "the third frame");
    if (n.dev.metrics.rxFrames < 3) clock.advance(1001);
    await until(() => n.dev.metrics.rxFrames === 3, 3000, "the third frame");
    expect(arpReplies(n.g.received()).length).toBe(3);
  });

  it("one used-index store per turn: 40 transmit chains, then 40 frames waiting in the tap for receive buffers", async () => {
    const { mem, watch } = countingUsedStores(); // counts the used index's release stores
    const n = net(PLAIN, {}, [64, 64], mem);
    for (let i = 0; i < 40; i++) n.g.send(arpRequest(undefined, [10, 0, 2, 100 + i]), vnetHeader(), false);
    watch.addr = n.g.txq.usedRing + 2;
    n.t.notify(1); // one turn (synchronous): 40 frames out, every chain back, one index store
    expect(n.dev.metrics.txFrames).toBe(40);
    expect(watch.stores).toBe(1);
    expect(n.g.txq.takeUsed().length).toBe(40);
    // The 40 replies wait in the tap (no receive buffer yet: one is read and waits in the device).
    await until(() => n.dev.metrics.rxNoBuffers > 0, 3000, "the device to wait for buffers");
    await new Promise((r) => setTimeout(r, 100));
    watch.addr = n.g.rxq.usedRing + 2;
    watch.stores = 0;
    n.g.post(64, 2048, false);
    n.t.notify(0); // one turn: the waiting frame (copied, published with it), then the rest straight in
    const got = n.g.received();
    expect(arpReplies(got).length).toBe(40);
    expect(n.dev.metrics.rxZeroCopy).toBe(39);
    expect(watch.stores).toBeLessThanOrEqual(2);
  });

  it("work per turn is bounded: 200 transmit chains go out 64 per turn of the event loop", async () => {
    const n = net(PLAIN, {}, [64, 256]);
    for (let i = 0; i < 200; i++) n.g.send(arpRequest(undefined, [10, 0, 3, i]), vnetHeader(), false);
    n.t.notify(1);
    expect(n.dev.metrics.txFrames).toBe(64);
    await until(() => n.dev.metrics.txFrames === 200, 3000, "all 200");
    expect(n.dev.metrics.yields).toBeGreaterThanOrEqual(3);
  });

  it("persist: a frame waiting for buffers is in the saved state and is delivered after the restore", async () => {
    const n = net(MRG);
    n.g.send(arpRequest());
    await until(() => n.dev.metrics.rxNoBuffers > 0, 3000, "a waiting frame");
    const state = n.t.state();
    const dev = state.device as unknown as { pendingFrame: string | null; mac: string; linkUp: boolean };
    expect(dev.mac).toBe("52:54:00:12:34:56");
    expect(dev.linkUp).toBe(true);
    expect(dev.pendingFrame).not.toBeNull();
    const saved = JSON.parse(JSON.stringify(state)) as typeof state;
    // The old transport stops; a new device on the same tap takes over from the saved state.
    n.t.reset();
    const dev2 = new VirtioNet({ backend: n.dev.backend, mac: "52:54:00:12:34:56" });
    const t2 = MmioTransport.fromState(saved, dev2, { mem: n.mem, irq: n.irq });
    expect(t2.activated).toBe(true);
    n.g.post(2);
    t2.notify(0);
    const got = n.g.received();
    expect(arpReplies(got).length).toBe(1);
    expect(dev2.metrics.rxFrames).toBe(1);
    // A state for another MAC, or with a malformed frame, is refused.
    const other = new VirtioNet({ backend: n.dev.backend, mac: "52:54:00:00:00:01" });
    expect(() => other.restoreState(saved.device)).toThrow(/MAC/);
    expect(() => dev2.restoreState({ ...saved.device, pendingFrame: "!!" })).toThrow(/base64/);
    expect(() => dev2.restoreState({ ...saved.device, pendingFrame: "AAAA" })).toThrow(/not a frame/);
    dev2.reset();
  });

  it("EVENT_IDX: a waiting frame asks for the next buffer the driver posts, and gets it", async () => {
    const n = net(MRG | VIRTIO_F_EVENT_IDX);
    n.g.send(arpRequest());
    await until(() => n.dev.metrics.rxNoBuffers > 0, 3000, "a waiting frame");
    n.g.post(1, 2048, false);
    // The driver notifies because avail_event asked for this index.
    expect(n.g.rxq.availEvent()).toBe(0);
    n.t.notify(0);
    expect(arpReplies(n.g.received()).length).toBe(1);
  });

  it("paused: the reply the kernel sends waits in the tap (no read, no interrupt); resume delivers it", async () => {
    const n = net();
    n.g.post(4);
    n.g.send(arpRequest());
    n.t.pause(); // before the event loop turns: the device has not looked at the tap yet
    expect(n.dev.paused).toBe(true);
    const irqs = n.irq.count;
    await new Promise((r) => setTimeout(r, 150)); // the kernel has answered into the tap's queue by now
    expect(n.dev.metrics.rxFrames).toBe(0);
    expect(n.g.received()).toEqual([]);
    expect(n.irq.count).toBe(irqs);
    // A frame the guest sends while paused stays in the ring.
    n.g.send(arpRequest(undefined, [10, 0, 2, 16]));
    expect(n.g.txq.takeUsed()).toEqual([{ id: 0, len: 0 }]); // only the first, sent before the pause
    n.t.resume();
    expect(n.g.txq.takeUsed().length).toBe(1);
    const got: { bytes: Uint8Array }[] = [];
    await until(() => (got.push(...n.g.received()), arpReplies(got).length >= 1), 3000, "the reply after resume");
    expect(n.irq.count).toBeGreaterThan(irqs);
  });

  it("state (MAC, link, a frame waiting for buffers) restores onto the tap opened again by name; the frame is delivered, and traffic goes on", async () => {
    const n = net();
    n.g.send(arpRequest()); // no receive buffers: the reply is read and waits in the device
    await until(() => n.dev.metrics.rxNoBuffers > 0, 3000, "the device to hold the reply");
    n.dev.setLinkUp(false);
    n.t.pause();
    const saved = JSON.parse(JSON.stringify(n.t.state())) as MmioTransportState;
    expect(saved.device).toMatchObject({ deviceType: 1, mac: "52:54:00:12:34:56", linkUp: false });
    expect(typeof saved.device.pendingFrame).toBe("string");
    // The old process is gone (its tap with it); the new one opens the tap by the same name.
    n.dev.close();
    const backend = TapBackend.open({ name: n.tap });
    ns.adopt(n.tap);
    const dev2 = new VirtioNet({ backend, mac: "52:54:00:12:34:56" });
    open.push(dev2);
    expect(() => dev2.restoreState({ ...saved.device, mac: "52:54:00:99:99:99" })).toThrow(expect.objectContaining({ code: "InvalidState" }));
    const t2 = MmioTransport.fromState(saved, dev2, { mem: n.mem, irq: n.irq }, { paused: true });
    expect(dev2.linkUp).toBe(false);
    const g2 = new GuestNet({ ...n, t: t2 }, n.g.rxq, n.g.txq);
    g2.post(4);
    expect(g2.received()).toEqual([]); // paused until resume
    t2.resume();
    const got: { bytes: Uint8Array }[] = [];
    await until(() => (got.push(...g2.received()), arpReplies(got).length >= 1), 3000, "the saved frame");
    dev2.setLinkUp(true);
    g2.send(arpRequest(undefined, [10, 0, 2, 17]));
    await until(() => (got.push(...g2.received()), arpReplies(got).length >= 2), 3000, "a new reply through the reopened tap");
  });
});
