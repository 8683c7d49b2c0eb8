// Cases a real tap cannot be made to produce on demand (a full tap, read
// errors, frames of impossible sizes), with a scripted NetBackend beside the
// tap tests in device.test.ts.
import { describe, expect, it } from "vitest";
import { bringUp, rig } from "../../test/driver.js";
import { GuestNet, arpRequest, vnetHeader } from "../../test/net-frames.js";
import { ManualClock } from "../../test/manual-clock.js";
import {
  NET_MAX_BUFFER,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_MRG_RXBUF,
  RateLimiter,
  VirtioDeviceError,
  VirtioNet,
  type NetBackend,
  type NetBackendEvents,
} from "../index.js";
import { tunOffloadFlags, txHeaderProblem, txOffloadMask } from "./frame.js";
import { TUN_F } from "@ts-vmm/vmm-sys-util";

class ScriptedBackend implements NetBackend {
  readonly name = "stub";
  readonly offloads = 0;
  readonly frames: (Uint8Array | Error | number)[] = [];
  readonly written: Uint8Array[] = [];
  full = false;
  watching: NetBackendEvents = { readable: false, writable: false };
  cb: ((ev: NetBackendEvents) => void) | undefined;
  setOffload(): void {}
  read(buf: Uint8Array): number | "again" {
    const f = this.frames.shift();
    if (f === undefined) return "again";
    if (f instanceof Error) throw new VirtioDeviceError("Io", f.message);
    if (typeof f === "number") return f; // a length only (a truncated or short read)
    buf.set(f.subarray(0, buf.length));
    return f.length;
  }
  write(pieces: readonly Uint8Array[]): number | "again" {
    if (this.full) return "again";
    const total = pieces.reduce((n, p) => n + p.length, 0);
    const out = new Uint8Array(total);
    let at = 0;
    for (const p of pieces) out.set(p, (at += p.length) - p.length);
    this.written.push(out);
    return total;
  }
  watch(events: NetBackendEvents, cb: (ev: NetBackendEvents) => void): void {
    this.watching = events;
    this.cb = cb;
  }
  close(): void {}
}

function setup(features = VIRTIO_F_VERSION_1) {
  const backend = new ScriptedBackend();
  const violations: string[] = [];
  const dev = new VirtioNet({ backend, mac: "02:00:00:00:00:01", onViolation: (v) => violations.push(v) });
  const r = rig(dev);
  const [rxq, txq] = bringUp(r, features);
  return { backend, dev, r, g: new GuestNet(r, rxq!, txq!), violations };
}

describe("virtio-net with a scripted backend", () => {
  it("a full backend: the chain goes back to the ring, the device watches for writable and sends it then", () => {
    const s = setup();
    s.backend.full = true;
    s.g.send(arpRequest());
    expect(s.g.txq.takeUsed()).toEqual([]);
    expect(s.dev.metrics.txTapFull).toBe(1);
    expect(s.backend.watching.writable).toBe(true);
    s.backend.full = false;
    s.backend.cb!({ readable: false, writable: true });
    expect(s.g.txq.takeUsed().length).toBe(1);
    expect(s.backend.written.length).toBe(1);
    expect(s.backend.written[0]!.subarray(12)).toEqual(arpRequest());
    expect(s.backend.watching.writable).toBe(false);
  });

  it("the header written is the device's checked copy, num_buffers cleared", () => {
    const s = setup(VIRTIO_F_VERSION_1 | VIRTIO_NET_F_CSUM);
    const h = vnetHeader({ flags: 1, csumStart: 14, csumOffset: 6 });
    h[10] = 7;
    s.g.send(arpRequest(), h);
    const w = s.backend.written[0]!;
    expect([...w.subarray(0, 10)]).toEqual([...h.subarray(0, 10)]);
    expect([w[10], w[11]]).toEqual([0, 0]);
  });

  it("backend read errors and frames of impossible sizes are counted and skipped; the next good frame is delivered on the next readable event", () => {
    const s = setup();
    s.g.post(4, 2048, false);
    const good = new Uint8Array(12 + 42);
    good.set(arpRequest(), 12);
    s.backend.frames.push(new Error("EIO"), 5, NET_MAX_BUFFER + 1, good);
    s.r.t.notify(0);
    // An error ends the turn (a backend failing every read must not spin); the watch brings the device back.
    expect(s.dev.metrics.rxTapErrors).toBe(1);
    expect(s.dev.metrics.rxFrames).toBe(0);
    expect(s.backend.watching.readable).toBe(true);
    s.backend.cb!({ readable: true, writable: false });
    expect(s.dev.metrics.rxDroppedBadFrame).toBe(2);
    expect(s.dev.metrics.rxFrames).toBe(1);
    expect(s.g.received().map((x) => x.len)).toEqual([54]);
    expect(s.violations.length).toBe(3);
  });

  it("the tap is watched for reads only while a frame could be delivered", () => {
    const s = setup(VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF);
    expect(s.backend.watching.readable).toBe(true);
    const f = new Uint8Array(54);
    s.backend.frames.push(f, f);
    s.backend.cb!({ readable: true, writable: false });
    // No buffers: one frame read and held, the watch off.
    expect(s.dev.metrics.rxNoBuffers).toBe(1);
    expect(s.backend.watching.readable).toBe(false);
    expect(s.backend.frames.length).toBe(1);
    s.g.post(1);
    // The held frame went in; the next one was read and waits: still not watching.
    expect(s.dev.metrics.rxFrames).toBe(1);
    expect(s.backend.frames.length).toBe(0);
    expect(s.backend.watching.readable).toBe(false);
    s.g.post(1);
    expect(s.dev.metrics.rxFrames).toBe(2);
    expect(s.backend.watching.readable).toBe(true);
  });

  it("a reset drops a held frame (counted) and stops watching", () => {
    const s = setup();
    s.backend.frames.push(new Uint8Array(54));
    s.backend.cb!({ readable: true, writable: false });
    s.r.t.reset();
    expect(s.dev.metrics.rxDroppedReset).toBe(1);
    expect(s.backend.watching).toEqual({ readable: false, writable: false });
  });

  it("a malformed chain after valid ones while gathering a merged frame: those become final and come back empty; the frame waits", () => {
    const s = setup(VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF);
    const a = s.g.postChain([{ addr: 0x90_0000, len: 16, writable: true }], false);
    const bad = s.g.postChain([{ addr: 0x90_1000, len: 16 }], false); // read-only
    s.backend.frames.push(new Uint8Array(54));
    s.r.t.notify(0);
    expect(s.g.rxq.takeUsed()).toEqual([
      { id: bad, len: 0 },
      { id: a, len: 0 },
    ]);
    expect(s.dev.metrics.rxMalformedChains).toBe(1);
    expect(s.dev.metrics.rxReturnedEmpty).toBe(1);
    s.g.post(1);
    expect(s.dev.metrics.rxFrames).toBe(1);
  });

  it("a merged frame over three reused chains: too few posted, all given back; then delivered whole, twice", () => {
    const s = setup(VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF);
    const frame = (seed: number) => Uint8Array.from({ length: 12 + 200 }, (_, i) => (i < 12 ? 0 : (i * 7 + seed) & 0xff));
    for (const seed of [1, 2]) {
      const heads = [0, 1].map((k) => s.g.postChain([{ addr: 0x90_0000 + k * 0x1000 + seed * 0x10_000, len: 80, writable: true }], false));
      s.backend.frames.push(frame(seed));
      s.r.t.notify(0);
      expect(s.g.rxq.takeUsed()).toEqual([]); // 160 bytes posted for 212: both chains went back
      heads.push(s.g.postChain([{ addr: 0x92_0000 + seed * 0x10_000, len: 80, writable: true }], false));
      s.r.t.notify(0);
      const got = s.g.received();
      expect(got.map((u) => [u.id, u.len])).toEqual([
        [heads[0], 80],
        [heads[1], 80],
        [heads[2], 52],
      ]);
      const bytes = new Uint8Array(212);
      let off = 0;
      for (const u of got) bytes.set(u.bytes.subarray(0, u.len), (off += u.len) - u.len);
      const want = frame(seed);
      want[10] = 3; // num_buffers
      expect(bytes).toEqual(want);
    }
    expect(s.dev.metrics.rxFrames).toBe(2);
    expect(s.violations).toEqual([]);
  });

  it("refuses a bad MAC or no backend", () => {
    const backend = new ScriptedBackend();
    for (const mac of ["01:00:00:00:00:01", "52:54:00:12:34", "zz:54:00:12:34:56"]) {
      expect(() => new VirtioNet({ backend, mac })).toThrow(VirtioDeviceError);
    }
    expect(() => new VirtioNet({} as never)).toThrow(VirtioDeviceError);
    const shared = new RateLimiter({ ops: { size: 1, refillTimeMs: 1 } });
    expect(() => new VirtioNet({ backend, rxRateLimiter: shared, txRateLimiter: shared })).toThrow(/different/);
    const random = new VirtioNet({ backend });
    expect(random.mac).toMatch(/^[0-9a-f][26ae](:[0-9a-f]{2}){5}$/);
  });
});

describe("virtio-net header and offload rules", () => {
  it("tunOffloadFlags honours the feature dependencies", () => {
    expect(tunOffloadFlags(VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_ECN)).toBe(0);
    expect(tunOffloadFlags(VIRTIO_NET_F_GUEST_CSUM)).toBe(TUN_F.CSUM);
    expect(tunOffloadFlags(VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_ECN)).toBe(TUN_F.CSUM);
    expect(tunOffloadFlags(VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO6 | VIRTIO_NET_F_GUEST_ECN)).toBe(TUN_F.CSUM | TUN_F.TSO6 | TUN_F.TSO_ECN);
  });

  it("txHeaderProblem refuses flags and GSO types that were not negotiated", () => {
    const h = (flags: number, gso: number) => Uint8Array.from([flags, gso, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    expect(txHeaderProblem(h(0, 0), txOffloadMask(0n))).toBeUndefined();
    expect(txHeaderProblem(h(1, 0), txOffloadMask(0n))).toMatch(/NEEDS_CSUM/);
    expect(txHeaderProblem(h(1, 0), txOffloadMask(VIRTIO_NET_F_CSUM))).toBeUndefined();
    expect(txHeaderProblem(h(2, 0), txOffloadMask(VIRTIO_NET_F_CSUM))).toMatch(/flags/);
    expect(txHeaderProblem(h(1, 1), txOffloadMask(VIRTIO_NET_F_CSUM))).toMatch(/gso_type/);
    expect(txHeaderProblem(h(1, 1), txOffloadMask(VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4))).toBeUndefined();
    expect(txHeaderProblem(h(1, 0x81), txOffloadMask(VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4))).toMatch(/ECN/);
    expect(txHeaderProblem(h(1, 0x81), txOffloadMask(VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4 | VIRTIO_NET_F_HOST_ECN))).toBeUndefined();
    expect(txHeaderProblem(h(0, 0x80), txOffloadMask(VIRTIO_NET_F_HOST_ECN))).toMatch(/ECN/);
    expect(txHeaderProblem(h(1, 3), txOffloadMask(~0n))).toMatch(/gso_type/); // UDP fragmentation: not offered
    expect(txHeaderProblem(h(1, 4), txOffloadMask(VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4))).toMatch(/gso_type/);
  });
});

describe("virtio-net persist of the rate limiters (scripted backend)", () => {
  it("persist: the rx and tx rate limiters' buckets are in the saved state and load into the restored device's limiters (checked before anything changes)", () => {
    const clock = new ManualClock();
    const rx = new RateLimiter({ bandwidth: { size: 10_000, refillTimeMs: 1000 } }, clock);
    const tx = new RateLimiter({ ops: { size: 4, refillTimeMs: 1000 } }, clock);
    const dev = new VirtioNet({ backend: new ScriptedBackend(), mac: "52:54:00:12:34:56", rxRateLimiter: rx, txRateLimiter: tx });
    expect(rx.consume(2500)).toBe(true);
    expect(tx.consume(0, 3)).toBe(true);
    const saved = JSON.parse(JSON.stringify(dev.state()));
    expect([saved.rxRateLimiter.bandwidth.tokens, saved.txRateLimiter.ops.tokens]).toEqual([7500, 1]);
    const dev2 = new VirtioNet({ backend: new ScriptedBackend(), mac: "52:54:00:12:34:56", rxRateLimiter: { bandwidth: { size: 10_000, refillTimeMs: 1000 } }, txRateLimiter: { ops: { size: 4, refillTimeMs: 1000 } } });
    dev2.restoreState(saved);
    // dev2's limiters run on the real clock: a few ms of refill since the restore at most.
    const [rxTokens, txTokens] = [dev2.rxRateLimiter!.state().bandwidth!.tokens, dev2.txRateLimiter!.state().ops!.tokens];
    expect(rxTokens >= 7500 && rxTokens < 8000 && txTokens >= 1 && txTokens < 1.2, `${rxTokens} ${txTokens}`).toBe(true);
    const dev3 = new VirtioNet({ backend: new ScriptedBackend(), mac: "52:54:00:12:34:56", rxRateLimiter: { bandwidth: { size: 10_000, refillTimeMs: 1000 } } });
    expect(() => dev3.restoreState({ ...saved, linkUp: false, txRateLimiter: { bandwidth: null, ops: { tokens: "x" } } })).toThrow(expect.objectContaining({ code: "InvalidState" }));
    expect(dev3.rxRateLimiter!.state().bandwidth!.tokens).toBe(10_000);
    expect(dev3.state().linkUp).toBe(true);
    // A state from before the limiters were saved restores as it did.
    const { rxRateLimiter: _r, txRateLimiter: _t, ...old } = saved;
    dev3.restoreState(old);
    expect(dev3.rxRateLimiter!.state().bandwidth!.tokens).toBe(10_000);
  });
});
