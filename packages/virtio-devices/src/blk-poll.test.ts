import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { MockSplitQueue } from "@ts-vmm/virtio-queue/mock";
import { bringUp, rig, type Rig } from "../test/driver.js";
import { VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1, VirtioBlock, VirtioDeviceError } from "./index.js";

const dir = mkdtempSync(join(tmpdir(), "vblk-poll-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const HDR = 0x200000;
const STATUS = 0x201000;
const DATA = 0x300000;
const VIRTQ_USED_F_NO_NOTIFY = 1;

/** A clock that moves 1 µs per read and, on each read, runs `onRead` (a driver acting while the device polls). */
class StepClock {
  t = 0;
  reads = 0;
  onRead: ((t: number) => void) | undefined;
  now = (): number => {
    this.reads++;
    this.t = Math.round((this.t + 0.001) * 1e6) / 1e6;
    this.onRead?.(this.t);
    return this.t;
  };
}

interface PollRig extends Rig {
  readonly dev: VirtioBlock;
  readonly q: MockSplitQueue;
  readonly clock: StepClock;
}

function pollRig(pollMaxUs: number, features = VIRTIO_F_VERSION_1): PollRig {
  const path = join(dir, `img-${Math.random().toString(36).slice(2)}.raw`);
  writeFileSync(path, new Uint8Array(64 * 1024).map((_, i) => i & 0xff));
  const clock = new StepClock();
  const dev = VirtioBlock.open(path, { pollMaxUs, pollClock: clock.now });
  const r = rig(dev);
  const [q] = bringUp(r, features);
  return { ...r, dev, q: q!, clock };
}

/** Posts a 512-byte read of `sector` (status byte 0xee until the device writes it). */
function post(r: PollRig, sector: number, slot = 0): void {
  r.mem.writeU32(HDR + 16 * slot, VIRTIO_BLK_T_IN);
  r.mem.writeU32(HDR + 16 * slot + 4, 0);
  r.mem.writeU64(HDR + 16 * slot + 8, BigInt(sector));
  r.mem.writeU8(STATUS + slot, 0xee);
  r.q.addChain([{ addr: HDR + 16 * slot, len: 16 }, { addr: DATA + 512 * slot, len: 512, writable: true }, { addr: STATUS + slot, len: 1, writable: true }]);
}

/** What {@link qd1} saw. */
interface Qd1Run {
  readonly done: number;
  readonly notifies: number;
  /** Per notification: requests completed and device-clock ms spent in that turn. */
  readonly turns: { readonly requests: number; readonly ms: number }[];
}

/**
 * A QD1 driver: posts its next read `gapUs` after it sees the previous one
 * completed. While the device polls, the clock hook posts it (no notification);
 * otherwise the loop below posts it and notifies. Stops after `n` requests or `maxTurns` notifications.
 */
function qd1(r: PollRig, n: number, gapUs: number, opts: { spy?: () => void; maxTurns?: number; starve?: boolean } = {}): Qd1Run {
  let done = 0;
  let notifies = 0;
  let dueAt: number | undefined;
  let outstanding = false;
  const turns: { requests: number; ms: number }[] = [];
  const postNext = (): void => {
    post(r, done % 64);
    outstanding = true;
    dueAt = undefined;
  };
  const seeCompletion = (t: number): void => {
    if (outstanding && r.mem.readU8(STATUS) !== 0xee) {
      r.q.takeUsed();
      outstanding = false;
      done++;
      if (done < n) dueAt = t + gapUs / 1000;
    }
  };
  r.clock.onRead = (t) => {
    opts.spy?.();
    seeCompletion(t);
    // starve: a vCPU on the device thread's CPU cannot post while the device spins.
    if (!opts.starve && dueAt !== undefined && t >= dueAt - 1e-9) postNext();
  };
  r.clock.t += gapUs / 1000;
  postNext();
  while (done < n && notifies < (opts.maxTurns ?? Infinity)) {
    notifies++;
    const [d0, t0] = [done, r.clock.t];
    r.t.notify(0);
    seeCompletion(r.clock.t);
    turns.push({ requests: done - d0, ms: r.clock.t - t0 });
    if (done >= n) break;
    if (!outstanding) {
      r.clock.t = opts.starve ? r.clock.t + gapUs / 1000 : Math.max(r.clock.t, dueAt ?? r.clock.t);
      postNext();
    }
  }
  r.clock.onRead = undefined;
  r.q.takeUsed();
  return { done, notifies, turns };
}

describe("virtio-blk polling (pollMaxUs)", () => {
  it("is off by default: one turn per notification, no window, no clock reads", () => {
    const r = pollRig(0);
    const run = qd1(r, 20, 10);
    expect([run.done, run.notifies]).toEqual([20, 20]);
    expect(r.dev.pollStats).toEqual({ hits: 0, misses: 0, windowUs: 0 });
    expect(r.clock.reads).toBe(0);
    expect(r.dev.stats.ok).toBe(20);
  });

  it("grows the window while the driver's next request comes within pollMaxUs, then serves it without a notification", () => {
    const r = pollRig(40);
    const run = qd1(r, 50, 25);
    expect(run.done).toBe(50);
    expect(r.dev.stats.ok).toBe(50);
    // Windows of 10 and 20 µs miss a 25 µs gap; from 40 µs on every request is found by polling.
    expect(r.dev.pollStats.windowUs).toBe(40);
    expect(r.dev.pollStats.hits).toBeGreaterThanOrEqual(40);
    expect(run.notifies).toBeLessThan(10);
    expect(r.q.usedFlags() & VIRTQ_USED_F_NO_NOTIFY).toBe(0); // on again when the turn ended
  });

  it("suppresses the driver's notifications only while it polls", () => {
    const r = pollRig(40);
    let seen = 0;
    qd1(r, 20, 25, { spy: () => (seen |= r.q.usedFlags()) });
    expect(seen & VIRTQ_USED_F_NO_NOTIFY).toBe(VIRTQ_USED_F_NO_NOTIFY);
    expect(r.q.usedFlags() & VIRTQ_USED_F_NO_NOTIFY).toBe(0);
  });

  it("stops polling when the driver's requests come later than pollMaxUs", () => {
    const r = pollRig(40);
    qd1(r, 10, 25);
    expect(r.dev.pollStats.windowUs).toBe(40);
    expect(qd1(r, 10, 200).notifies).toBe(10);
    expect(r.dev.pollStats.windowUs).toBe(0);
    // With the window at 0 a turn reads the clock a few times, it does not spin.
    const reads = r.clock.reads;
    qd1(r, 1, 200);
    expect(r.clock.reads - reads).toBeLessThanOrEqual(4);
  });

  it("one late request in a polled stream halves the window instead of stopping polling", () => {
    const r = pollRig(40);
    qd1(r, 10, 25);
    expect(r.dev.pollStats.windowUs).toBe(40);
    qd1(r, 1, 100); // late: the 40 µs window misses it
    expect(r.dev.pollStats.windowUs).toBe(20);
    const hits = r.dev.pollStats.hits;
    const run = qd1(r, 20, 25);
    expect(r.dev.pollStats.windowUs).toBe(40);
    expect(r.dev.pollStats.hits - hits).toBeGreaterThanOrEqual(15);
    expect(run.notifies).toBeLessThanOrEqual(5);
  });

  it("a driver that can never post while the device polls (vCPU on the same CPU) makes it stop polling, with rare probes", () => {
    const r = pollRig(40);
    const run = qd1(r, 2000, 5, { starve: true });
    expect(run.done).toBe(2000);
    expect(r.dev.pollStats.hits).toBe(0);
    // Without the pause after repeated misses this would be about one miss per request.
    expect(r.dev.pollStats.misses).toBeLessThan(60);
  });

  it("bounds one turn to 1 ms of polling and handling, then yields (a guest that keeps posting cannot hold the event loop)", async () => {
    const r = pollRig(40);
    const run = qd1(r, 100_000, 10, { maxTurns: 10 });
    const busy = run.turns.slice(3);
    expect(Math.max(...busy.map((t) => t.requests))).toBeGreaterThan(10);
    expect(Math.max(...busy.map((t) => t.requests))).toBeLessThan(256);
    expect(Math.max(...run.turns.map((t) => t.ms))).toBeLessThan(1.1);
    // The last turn yielded with its next turn queued and notifications still suppressed;
    // pause turns them on and stops that turn.
    expect(r.q.usedFlags() & VIRTQ_USED_F_NO_NOTIFY).toBe(VIRTQ_USED_F_NO_NOTIFY);
    r.t.pause();
    expect(r.q.usedFlags() & VIRTQ_USED_F_NO_NOTIFY).toBe(0);
    post(r, 1, 1);
    const ok = r.dev.stats.ok;
    await new Promise((res) => setImmediate(res));
    expect(r.dev.stats.ok).toBe(ok);
    // Resume: one turn takes what the driver left posted.
    r.t.resume();
    expect(r.dev.stats.ok).toBeGreaterThan(ok);
    expect(r.q.usedFlags() & VIRTQ_USED_F_NO_NOTIFY).toBe(0);
  });

  it("with EVENT_IDX: polls too and leaves avail_event asking for the next request", () => {
    const r = pollRig(40, VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX);
    const run = qd1(r, 30, 25);
    expect(run.done).toBe(30);
    expect(run.notifies).toBeLessThan(10);
    expect(r.dev.pollStats.hits).toBeGreaterThanOrEqual(20);
    expect(r.q.availEvent()).toBe(30);
  });

  it("rejects pollMaxUs outside 0..1000 and a pollClock that is not a function", () => {
    const path = join(dir, "opts.raw");
    writeFileSync(path, new Uint8Array(4096));
    for (const pollMaxUs of [-1, 1001, Number.NaN, Infinity]) {
      expect(() => VirtioBlock.open(path, { pollMaxUs })).toThrow(VirtioDeviceError);
    }
    expect(() => VirtioBlock.open(path, { pollMaxUs: 10, pollClock: 5 as unknown as () => number })).toThrow(VirtioDeviceError);
    VirtioBlock.open(path, { pollMaxUs: 1000 }).close();
  });
});
