import { fstatSync, readFileSync } from "node:fs";
import type { DiscardableMemory } from "@ts-vmm/vm-memory";
import { GuestMemoryMmap } from "@ts-vmm/vm-memory/mmap";
import type { MockSplitQueue } from "@ts-vmm/virtio-queue/mock";
import { afterEach, describe, expect, it } from "vitest";
import { bringUp, rd, rigOn, wr, type Rig } from "../../test/driver.js";
import {
  BALLOON_PFNS_PER_TURN,
  INT_CONFIG_CHANGE,
  MMIO,
  MmioTransport,
  STATUS_DEVICE_NEEDS_RESET,
  VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
  VIRTIO_BALLOON_F_REPORTING,
  VIRTIO_BALLOON_F_STATS_VQ,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_VERSION_1,
  VirtioBalloon,
  VirtioDeviceError,
  queueRoles,
  type VirtioBalloonOptions,
} from "../index.js";

const MiB = 1 << 20;
const PAGE = 4096;
/** Data lives from here on (the mock rings sit below 1 MiB). */
const DATA = 32 * MiB;

const open: GuestMemoryMmap[] = [];
afterEach(() => {
  for (const m of open.splice(0)) m.close();
});

function memfd(size = 64 * MiB): GuestMemoryMmap {
  const m = GuestMemoryMmap.fromRanges([{ start: 0, size }], { name: "balloon-test" });
  open.push(m);
  return m;
}

/** Bytes the memfds hold (st_blocks). */
function allocated(mem: GuestMemoryMmap): number {
  return mem.regions.reduce((n, r) => n + fstatSync(r.fd!).blocks * 512, 0);
}

function rssShmem(): number {
  return Number(/^RssShmem:\s+(\d+) kB/m.exec(readFileSync("/proc/self/status", "latin1"))![1]) * 1024;
}

function balloon(mem: GuestMemoryMmap, opts: Omit<VirtioBalloonOptions, "memory"> = {}): { dev: VirtioBalloon; r: Rig<GuestMemoryMmap>; notes: string[] } {
  const notes: string[] = [];
  const dev = new VirtioBalloon({ memory: mem, onViolation: (n) => notes.push(n), ...opts });
  return { dev, r: rigOn(dev, mem), notes };
}

/** Writes a PFN array at `at` and returns its length in bytes. */
function pfns(mem: GuestMemoryMmap, at: number, list: readonly number[]): number {
  const b = new Uint8Array(4 * list.length);
  const dv = new DataView(b.buffer);
  list.forEach((p, i) => dv.setUint32(4 * i, p >>> 0, true));
  mem.write(at, b);
  return b.length;
}

/** 32-bit config access through the transport's window (readRegister/writeRegister stop below 0x100). */
function cfgRead(t: MmioTransport, off: number): number {
  const b = new Uint8Array(4);
  t.read(MMIO.Config + off, b);
  return new DataView(b.buffer).getUint32(0, true);
}
function cfgWrite(t: MmioTransport, off: number, v: number): void {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, true);
  t.write(MMIO.Config + off, b);
}

const range = (first: number, n: number): number[] => Array.from({ length: n }, (_, i) => first + i);
const ticks = (n = 1): Promise<void> => new Promise((res) => (n <= 1 ? setImmediate(res) : setImmediate(() => void ticks(n - 1).then(res))));

describe("virtio-balloon: creation", () => {
  it("offers the features and queues asked for", () => {
    const mem = memfd();
    expect(new VirtioBalloon({ memory: mem }).deviceFeatures).toBe(0n);
    expect(new VirtioBalloon({ memory: mem }).queueMaxSizes).toEqual([256, 256]);
    const all = new VirtioBalloon({ memory: mem, statsIntervalS: 1, deflateOnOom: true, freePageReporting: true });
    expect(all.deviceFeatures).toBe(VIRTIO_BALLOON_F_STATS_VQ | VIRTIO_BALLOON_F_DEFLATE_ON_OOM | VIRTIO_BALLOON_F_REPORTING);
    expect(all.queueMaxSizes).toEqual([256, 256, 256, 256]);
    expect(all.deviceType).toBe(5);
  });

  it("refuses, in one sentence, memory that cannot discard 4 KiB pages (huge pages) or cannot discard at all", () => {
    // A stand-in for hugetlb memory (the real hugetlb refusal is tested in vm-memory and vmm-reference).
    const huge: DiscardableMemory = { discardGranularity: () => 2 * MiB, discardRange: () => {} };
    expect(() => new VirtioBalloon({ memory: huge })).toThrow(
      "virtio-balloon gives memory back in 4 KiB pages, but this guest memory can only be discarded in 2048 KiB huge pages: back guest memory with 4 KiB pages to use a balloon",
    );
    const mem = memfd(MiB);
    const borrowed = GuestMemoryMmap.fromTransferable(mem.toTransferable());
    expect(() => new VirtioBalloon({ memory: borrowed })).toThrow(/^virtio-balloon cannot give guest memory back to the host: this guest memory does not own its mappings/);
    expect(() => new VirtioBalloon({} as VirtioBalloonOptions)).toThrow(VirtioDeviceError);
    expect(() => new VirtioBalloon({ memory: mem, targetPages: -1 })).toThrow(/whole number of 4 KiB pages/);
    expect(() => new VirtioBalloon({ memory: mem, targetPages: 2 ** 32 })).toThrow(/whole number of 4 KiB pages/);
    expect(() => new VirtioBalloon({ memory: mem, statsIntervalS: Number.NaN })).toThrow(/statistics interval/);
    expect(() => new VirtioBalloon({ memory: mem, deflateOnOom: "yes" as unknown as boolean })).toThrow(/deflateOnOom must be a boolean/);
  });

  it("numbers queues over the negotiated features, as Linux does", () => {
    expect(queueRoles(0n)).toEqual(["inflate", "deflate"]);
    expect(queueRoles(VIRTIO_BALLOON_F_REPORTING)).toEqual(["inflate", "deflate", "reporting"]);
    expect(queueRoles(VIRTIO_BALLOON_F_STATS_VQ | VIRTIO_BALLOON_F_REPORTING)).toEqual(["inflate", "deflate", "stats", "reporting"]);
  });
});

describe("virtio-balloon: inflate and deflate on memfd memory", () => {
  it("inflate gives the pages back to the host: the memfd's blocks and the RSS drop, the pages read zeros; deflate returns them", () => {
    const mem = memfd();
    const { dev, r } = balloon(mem);
    const [inf, def] = bringUp(r) as [MockSplitQueue, MockSplitQueue];
    mem.write(DATA, new Uint8Array(16 * MiB).fill(0xa5));
    // 4096 PFNs (16 MiB), in descending order as a driver may give them.
    const list = range(DATA / PAGE, 4096).reverse();
    const len = pfns(mem, 0x20_0000, list);
    const before = allocated(mem);
    const rss = rssShmem();
    inf.addChain([{ addr: 0x20_0000, len }]);
    r.t.notify(0);
    expect(inf.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    expect(before - allocated(mem)).toBe(16 * MiB);
    expect(rss - rssShmem()).toBeGreaterThan(15 * MiB);
    expect(mem.readU8(DATA)).toBe(0);
    expect(mem.readU8(DATA + 16 * MiB - 1)).toBe(0);
    expect(dev.metrics).toMatchObject({ inflatedPages: 4096, discardedBytes: 16 * MiB, invalidPfns: 0, discardFailures: 0 });
    expect(r.irq.count).toBe(1);
    def.addChain([{ addr: 0x20_0000, len }]);
    r.t.notify(1);
    expect(def.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    expect(dev.metrics.deflatedPages).toBe(4096);
    mem.writeU8(DATA, 7); // the page is usable again (refaults)
    expect(mem.readU8(DATA)).toBe(7);
  });

  it("hostile PFNs never touch memory outside the guest: skipped, counted and reported once per chain; the rest is discarded", () => {
    const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 48 * MiB }, { start: 64 * MiB, size: 16 * MiB }]);
    open.push(mem);
    const { dev, r, notes } = balloon(mem);
    const [inf] = bringUp(r) as [MockSplitQueue];
    mem.write(DATA, new Uint8Array(MiB).fill(1));
    const list = [DATA / PAGE, (48 * MiB) / PAGE, (60 * MiB) / PAGE, (80 * MiB) / PAGE, 0xffff_ffff, 0x1000_0000, DATA / PAGE + 1];
    const len = pfns(mem, 0x20_0000, list);
    const before = allocated(mem);
    // Two trailing bytes: not a whole PFN.
    inf.addChain([{ addr: 0x20_0000, len: len + 2 }]);
    r.t.notify(0);
    expect(inf.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    expect(dev.metrics).toMatchObject({ inflatedPages: 2, invalidPfns: 5, malformedBytes: 2 });
    expect(before - allocated(mem)).toBe(2 * PAGE);
    expect(mem.readU8(DATA + 2 * PAGE)).toBe(1);
    expect(notes).toEqual(["virtio-balloon: inflate chain 0: 5 of 7 PFNs are not guest memory (first 0x3000), skipped"]);
    expect(r.t.status & STATUS_DEVICE_NEEDS_RESET).toBe(0);
  });

  it("a PFN array outside guest memory sets DEVICE_NEEDS_RESET and discards nothing", () => {
    const mem = memfd();
    const { dev, r } = balloon(mem);
    const [inf] = bringUp(r) as [MockSplitQueue];
    mem.write(DATA, new Uint8Array(MiB).fill(1));
    const before = allocated(mem);
    inf.addChain([{ addr: 2 ** 40, len: 4096 }]);
    r.t.notify(0);
    expect(r.t.status & STATUS_DEVICE_NEEDS_RESET).toBeTruthy();
    expect(inf.takeUsed()).toEqual([]);
    expect(allocated(mem)).toBe(before);
    expect(dev.metrics.needsReset).toBe(1);
    // Notifications are ignored until the driver resets the device.
    r.t.notify(0);
    expect(dev.metrics.needsReset).toBe(1);
  });

  it("with EVENT_IDX, re-arms avail_event after draining so the driver keeps notifying", () => {
    const mem = memfd();
    const { r } = balloon(mem);
    const [inf] = bringUp(r, VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX) as [MockSplitQueue];
    const len = pfns(mem, 0x20_0000, [DATA / PAGE]);
    inf.addChain([{ addr: 0x20_0000, len }]);
    inf.addChain([{ addr: 0x20_0000, len }]);
    r.t.notify(0);
    expect(inf.takeUsed()).toHaveLength(2);
    expect(inf.availEvent()).toBe(2);
  });

  it("bounds the work per turn: a 40 000-PFN chain takes three turns and is returned once, at the end", async () => {
    const mem = memfd();
    const { dev, r } = balloon(mem);
    const [inf] = bringUp(r) as [MockSplitQueue];
    // 40 000 PFNs, alternate pages of the 64 MiB (most repeated): no coalescing helps.
    const list = Array.from({ length: 40_000 }, (_, i) => (DATA / PAGE + ((i * 2) % 8192)));
    const len = pfns(mem, 0x40_0000, list);
    inf.addChain([{ addr: 0x40_0000, len }]);
    r.t.notify(0);
    expect(dev.busy()).toBe(true);
    expect(dev.metrics.inflatedPages).toBe(BALLOON_PFNS_PER_TURN - 1); // the chain itself costs one unit
    expect(inf.takeUsed()).toEqual([]);
    await ticks(4);
    expect(dev.busy()).toBe(false);
    expect(inf.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    expect(dev.metrics.inflatedPages).toBe(40_000);
  });

  it("reset stops work in progress; nothing of the old activation completes; the device works again after it", async () => {
    const mem = memfd();
    const { dev, r } = balloon(mem, { targetPages: 100 });
    let [inf] = bringUp(r) as [MockSplitQueue];
    const len = pfns(mem, 0x40_0000, Array.from({ length: 40_000 }, (_, i) => DATA / PAGE + (i % 1000)));
    inf.addChain([{ addr: 0x40_0000, len }]);
    cfgWrite(r.t, 4, 50);
    r.t.notify(0);
    expect(dev.busy()).toBe(true);
    wr(r.t, MMIO.Status, 0);
    expect(dev.busy()).toBe(false);
    const done = dev.metrics.inflatedPages;
    await ticks(4);
    expect(dev.metrics.inflatedPages).toBe(done);
    expect(dev.actualPages).toBe(0);
    expect(dev.targetPages).toBe(100);
    [inf] = bringUp(r) as [MockSplitQueue];
    inf.addChain([{ addr: 0x40_0000, len: 8 }]);
    r.t.notify(0);
    expect(inf.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    expect(dev.metrics.inflatedPages).toBe(done + 2);
  });
});

describe("virtio-balloon: config space", () => {
  it("num_pages is the host's target, actual is the driver's (any width); a new target raises a config-change interrupt", () => {
    const mem = memfd();
    const { dev, r } = balloon(mem, { targetPages: 1024 });
    expect(cfgRead(r.t, 0)).toBe(1024);
    dev.setTarget(2048); // before the driver runs: no interrupt
    expect(dev.metrics.targetChanges).toBe(0);
    bringUp(r);
    expect(cfgRead(r.t, 0)).toBe(2048);
    cfgWrite(r.t, 4, 0x1234_5678);
    expect(dev.actualPages).toBe(0x1234_5678);
    r.t.write(MMIO.Config + 5, new Uint8Array([0xff]));
    expect(dev.actualPages).toBe(0x1234_ff78);
    cfgWrite(r.t, 0, 7); // num_pages is read-only for the driver
    expect(dev.targetPages).toBe(2048);
    const gen = rd(r.t, MMIO.ConfigGeneration);
    const irqs = r.irq.count;
    dev.setTarget(4096);
    expect(rd(r.t, MMIO.InterruptStatus) & INT_CONFIG_CHANGE).toBeTruthy();
    expect(rd(r.t, MMIO.ConfigGeneration)).toBe(gen + 1);
    expect(r.irq.count).toBe(irqs + 1);
    expect(cfgRead(r.t, 0)).toBe(4096);
    dev.setTarget(4096); // unchanged: no interrupt
    expect(r.irq.count).toBe(irqs + 1);
    expect(dev.metrics.targetChanges).toBe(1);
    expect(() => dev.setTarget(1.5)).toThrow(VirtioDeviceError);
    expect(() => dev.setTarget(2 ** 32)).toThrow(VirtioDeviceError);
    const b = new Uint8Array(4);
    r.t.read(MMIO.Config + 8, b); // past the config: zeros
    expect([...b]).toEqual([0, 0, 0, 0]);
  });
});

/** One statistics buffer: entries of [tag, value]. */
function statsBuffer(mem: GuestMemoryMmap, at: number, entries: readonly [number, bigint][], extra = 0): number {
  const b = new Uint8Array(10 * entries.length + extra);
  const dv = new DataView(b.buffer);
  entries.forEach(([tag, v], i) => {
    dv.setUint16(10 * i, tag, true);
    dv.setBigUint64(10 * i + 2, v, true);
  });
  mem.write(at, b);
  return b.length;
}

describe("virtio-balloon: statistics", () => {
  it("keeps the latest statistics, holds the buffer, and returns it each interval so the driver sends fresh ones", async () => {
    const mem = memfd();
    const { dev, r } = balloon(mem, { statsIntervalS: 0.03 });
    const [, , stq] = bringUp(r, VIRTIO_F_VERSION_1 | VIRTIO_BALLOON_F_STATS_VQ) as MockSplitQueue[];
    expect(dev.latestStats()).toBeUndefined();
    const len = statsBuffer(mem, 0x30_0000, [[4, 1000n], [5, 4096n], [99, 1n], [4, 2000n], [15, 0xffff_ffff_ffff_ffffn]], 3);
    stq!.addChain([{ addr: 0x30_0000, len }]);
    r.t.notify(2);
    expect(dev.latestStats()?.values).toEqual({ freeMemory: 2000n, totalMemory: 4096n, directReclaims: 0xffff_ffff_ffff_ffffn });
    expect(dev.metrics.statsIgnored).toBe(2); // tag 99, 3 trailing bytes
    expect(stq!.takeUsed()).toEqual([]); // held until the interval
    await new Promise((res) => setTimeout(res, 80));
    expect(stq!.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    // The driver answers with a new buffer.
    statsBuffer(mem, 0x30_0000, [[4, 3000n]]);
    stq!.addChain([{ addr: 0x30_0000, len: 10 }]);
    r.t.notify(2);
    expect(dev.latestStats()?.values).toEqual({ freeMemory: 3000n });
    expect(dev.metrics.statsUpdates).toBe(2);
    // requestStats: now, not at the interval; false when nothing is held.
    dev.setStatsInterval(0);
    expect(dev.requestStats()).toBe(true);
    expect(dev.requestStats()).toBe(false);
    expect(stq!.takeUsed()).toEqual([{ id: 0, len: 0 }]);
  });

  it("reads at most 4 KiB of a huge buffer, and gives an extra buffer back at once (only one may be there)", () => {
    const mem = memfd();
    const { dev, r } = balloon(mem, { statsIntervalS: 100 });
    const [, , stq] = bringUp(r, VIRTIO_F_VERSION_1 | VIRTIO_BALLOON_F_STATS_VQ) as MockSplitQueue[];
    const a = stq!.addChain([{ addr: DATA, len: 16 * MiB }]);
    r.t.notify(2);
    expect(dev.metrics.statsIgnored).toBe(2); // cut at 4 KiB, and 6 bytes after the last whole entry (zeros: tag 0 = swapIn 0)
    expect(dev.latestStats()?.values).toEqual({ swapIn: 0n });
    statsBuffer(mem, 0x30_0000, [[5, 1n]]);
    stq!.addChain([{ addr: 0x30_0000, len: 10 }]);
    r.t.notify(2);
    expect(stq!.takeUsed()).toEqual([{ id: a, len: 0 }]);
    expect(dev.latestStats()?.values).toEqual({ totalMemory: 1n });
  });

  it("a statistics buffer outside guest memory sets DEVICE_NEEDS_RESET and stops the timer", async () => {
    const mem = memfd();
    const { dev, r } = balloon(mem, { statsIntervalS: 0.01 });
    const [, , stq] = bringUp(r, VIRTIO_F_VERSION_1 | VIRTIO_BALLOON_F_STATS_VQ) as MockSplitQueue[];
    stq!.addChain([{ addr: 2 ** 40, len: 10 }]);
    r.t.notify(2);
    expect(r.t.status & STATUS_DEVICE_NEEDS_RESET).toBeTruthy();
    expect(dev.latestStats()).toBeUndefined();
    await new Promise((res) => setTimeout(res, 40));
    expect(stq!.takeUsed()).toEqual([]);
  });

  it("without the statistics feature there is no statistics queue, and the interval cannot be set", () => {
    const mem = memfd();
    const dev = new VirtioBalloon({ memory: mem });
    expect(() => dev.setStatsInterval(1)).toThrow(/created without statistics/);
    expect(dev.requestStats()).toBe(false);
  });
});

describe("virtio-balloon: free page reporting", () => {
  it("discards the whole pages of each reported range; ranges outside guest memory are skipped; reporting is queue 2 without STATS_VQ", () => {
    const mem = memfd();
    const { dev, r, notes } = balloon(mem, { statsIntervalS: 1, freePageReporting: true });
    // The driver takes reporting but not statistics: reporting is its queue 2.
    const qs = bringUp(r, VIRTIO_F_VERSION_1 | VIRTIO_BALLOON_F_REPORTING) as MockSplitQueue[];
    const rep = qs[2]!;
    mem.write(DATA, new Uint8Array(8 * MiB).fill(3));
    const before = allocated(mem);
    rep.addChain([
      { addr: DATA, len: 2 * MiB, writable: true },
      { addr: DATA + 4 * MiB + 100, len: PAGE * 3, writable: true }, // unaligned: the 2 whole pages inside
      { addr: 63 * MiB, len: 2 * MiB, writable: true }, // runs past the end of memory: skipped
      { addr: DATA + 6 * MiB, len: 0, writable: true },
    ]);
    r.t.notify(2);
    expect(rep.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    expect(before - allocated(mem)).toBe(2 * MiB + 2 * PAGE);
    expect(mem.readU8(DATA + 2 * MiB - 1)).toBe(0);
    expect(mem.readU8(DATA + 2 * MiB)).toBe(3);
    expect(mem.readU8(DATA + 4 * MiB + 100)).toBe(3); // the partial page before the range stays
    expect(mem.readU8(DATA + 4 * MiB + PAGE)).toBe(0);
    expect(mem.readU8(DATA + 4 * MiB + 3 * PAGE + 100)).toBe(3); // and the partial page after it
    expect(dev.metrics).toMatchObject({ reports: 1, reportedBytes: 2 * MiB + 2 * PAGE, invalidReports: 1 });
    expect(notes).toEqual(["virtio-balloon: free page report 0: 1 ranges are not guest memory, skipped"]);
  });

  it("cuts a report larger than a turn's budget over several turns", async () => {
    const mem = memfd(640 * MiB);
    const { dev, r } = balloon(mem, { freePageReporting: true });
    const [, , rep] = bringUp(r, VIRTIO_F_VERSION_1 | VIRTIO_BALLOON_F_REPORTING) as MockSplitQueue[];
    rep!.addChain([{ addr: DATA, len: 600 * MiB, writable: true }]);
    r.t.notify(2);
    expect(dev.busy()).toBe(true);
    expect(dev.metrics.reportedBytes).toBe(256 * MiB);
    await ticks(4);
    expect(dev.busy()).toBe(false);
    expect(dev.metrics.reportedBytes).toBe(600 * MiB);
    expect(rep!.takeUsed()).toEqual([{ id: 0, len: 0 }]);
  });
});

describe("virtio-balloon: persist", () => {
  it("state is plain JSON; restore puts back the target, actual, statistics and the held statistics buffer", () => {
    const mem = memfd();
    const { dev, r } = balloon(mem, { statsIntervalS: 100, targetPages: 512 });
    const [, , stq] = bringUp(r, VIRTIO_F_VERSION_1 | VIRTIO_BALLOON_F_STATS_VQ) as MockSplitQueue[];
    cfgWrite(r.t, 4, 256);
    statsBuffer(mem, 0x30_0000, [[4, 77n]]);
    const head = stq!.addChain([{ addr: 0x30_0000, len: 10 }]);
    r.t.notify(2);
    const saved = JSON.parse(JSON.stringify(r.t.state()));
    expect(saved.device).toMatchObject({ deviceType: 5, targetPages: 512, actualPages: 256, statsHead: head, stats: { values: { freeMemory: "77" } } });
    const dev2 = new VirtioBalloon({ memory: mem, statsIntervalS: 100 });
    const t2 = MmioTransport.fromState(saved, dev2, { mem, irq: r.irq });
    expect(dev2.targetPages).toBe(512);
    expect(dev2.actualPages).toBe(256);
    expect(dev2.latestStats()?.values).toEqual({ freeMemory: 77n });
    expect(dev2.requestStats()).toBe(true); // the restored device returns the buffer the old one held
    expect(stq!.takeUsed()).toEqual([{ id: head, len: 0 }]);
    expect(cfgRead(t2, 0)).toBe(512);
  });

  it("refuses a state that does not fit the device, naming the field", () => {
    const mem = memfd();
    const dev = new VirtioBalloon({ memory: mem });
    const good = dev.state();
    expect(() => new VirtioBalloon({ memory: mem, freePageReporting: true }).restoreState(good)).toThrow(/saved with/);
    for (const [k, v] of [["targetPages", -1], ["actualPages", 2 ** 32], ["statsIntervalS", 5], ["statsHead", 1.5], ["stats", { updatedAt: 1, values: { nope: "1" } }], ["metrics", { inflatedPages: -1 }]] as const) {
      expect(() => dev.restoreState({ ...good, [k]: v }), k).toThrow(/virtio-balloon state:/);
    }
    expect(() => dev.restoreState({ deviceType: 4 })).toThrow(/not a virtio-balloon state/);
  });

  it("pause: no statistics request, no inflate and no config interrupt until resume; then each happens once", async () => {
    const mem = memfd();
    const { dev, r } = balloon(mem, { statsIntervalS: 0.02 });
    const [inf, , stq] = bringUp(r, VIRTIO_F_VERSION_1 | VIRTIO_BALLOON_F_STATS_VQ) as MockSplitQueue[];
    statsBuffer(mem, 0x30_0000, [[4, 1n]]);
    stq!.addChain([{ addr: 0x30_0000, len: 10 }]);
    r.t.notify(2);
    r.t.pause();
    expect(dev.paused).toBe(true);
    expect(dev.requestStats()).toBe(false); // the held buffer stays held
    mem.write(DATA, new Uint8Array(PAGE).fill(0x5a));
    const len = pfns(mem, 0x20_0000, [DATA / PAGE]);
    inf!.addChain([{ addr: 0x20_0000, len }]);
    r.t.notify(0); // an inflate notification that arrives while paused is held
    dev.setTarget(64);
    const irqs = r.irq.count;
    await new Promise((res) => setTimeout(res, 80)); // four statistics intervals
    expect(stq!.takeUsed()).toEqual([]);
    expect(inf!.takeUsed()).toEqual([]);
    expect(mem.readU8(DATA)).toBe(0x5a); // not discarded
    expect(dev.metrics.inflatedPages).toBe(0);
    expect(r.irq.count).toBe(irqs);
    expect(r.t.interruptStatus & INT_CONFIG_CHANGE).toBe(INT_CONFIG_CHANGE); // set, its interrupt held
    expect(dev.busy()).toBe(false);
    r.t.resume();
    expect(inf!.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    expect(mem.readU8(DATA)).toBe(0);
    expect(r.irq.count).toBeGreaterThan(irqs);
    await new Promise((res) => setTimeout(res, 60));
    expect(stq!.takeUsed()).toEqual([{ id: 0, len: 0 }]); // the timer runs again
  });

  it("restored paused (target, actual, interval), it starts its timer only on resume", async () => {
    const mem = memfd();
    const { r } = balloon(mem, { statsIntervalS: 0.02, targetPages: 100 });
    const [, , stq] = bringUp(r, VIRTIO_F_VERSION_1 | VIRTIO_BALLOON_F_STATS_VQ) as MockSplitQueue[];
    cfgWrite(r.t, 4, 100);
    statsBuffer(mem, 0x30_0000, [[4, 5n]]);
    const head = stq!.addChain([{ addr: 0x30_0000, len: 10 }]);
    r.t.notify(2);
    r.t.pause();
    const saved = JSON.parse(JSON.stringify(r.t.state()));
    r.t.reset();
    const dev2 = new VirtioBalloon({ memory: mem, statsIntervalS: 0.02 });
    const t2 = MmioTransport.fromState(saved, dev2, { mem, irq: r.irq }, { paused: true });
    expect([dev2.targetPages, dev2.actualPages, dev2.statsIntervalS, dev2.paused]).toEqual([100, 100, 0.02, true]);
    await new Promise((res) => setTimeout(res, 60));
    expect(stq!.takeUsed()).toEqual([]);
    t2.resume();
    await new Promise((res) => setTimeout(res, 60));
    expect(stq!.takeUsed()).toEqual([{ id: head, len: 0 }]);
    t2.reset();
  });
});
