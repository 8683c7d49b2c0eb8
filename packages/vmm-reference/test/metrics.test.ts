// Vmm.metrics(), MetricsWriter and `ts-vmm run --metrics/--metrics-path` on the
// micro-guest under real KVM: exits by reason and by device, virtio-blk counters,
// KVM's binary stats, counters read while the guest runs, NDJSON lines on disk.
import { execFileSync } from "node:child_process";
import { closeSync, constants, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Cap, Kvm } from "@ts-vmm/kvm-ioctls";
import { describeWith } from "@ts-vmm/test-utils";
import { buildMicroGuest } from "@ts-vmm/test-guests";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { MetricsWriter, Vmm, runCli, type VmmMetrics } from "../src/index.js";
import { PIO_DEVICES } from "../src/metrics/index.js";

vi.setConfig({ testTimeout: 90_000 });

const hostHasStats = ((): boolean => {
  try {
    const kvm = new Kvm();
    try {
      return kvm.checkExtension(Cap.BINARY_STATS_FD) > 0;
    } finally {
      kvm.close();
    }
  } catch {
    return false;
  }
})();
if (!hostHasStats) console.warn("[skipped] KVM stats checks: the host's KVM lacks KVM_CAP_BINARY_STATS_FD");

const scalar = (v: number | number[] | undefined): number => {
  if (typeof v !== "number") throw new Error(`not a scalar KVM statistic: ${JSON.stringify(v)}`);
  return v;
};

describeWith({ kvm: true, tools: ["gcc", "ld"] }, "VMM metrics on the micro-guest", () => {
  let elf = "";
  let dir = "";
  const disk = (mib: number): string => {
    const p = join(dir, `disk-${Math.random().toString(36).slice(2)}.img`);
    const fd = openSync(p, "w");
    ftruncateSync(fd, mib << 20);
    closeSync(fd);
    return p;
  };
  beforeAll(async () => {
    elf = (await buildMicroGuest()).elf;
    dir = mkdtempSync(join(tmpdir(), "ts-vmm-metrics-"));
  }, 120_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("after a selftest with a disk: blk requests and bytes, MMIO exits of its window, COM1 port exits, totals that add up", async () => {
    const vmm = Vmm.create({ kernel: elf, cmdline: "mode=selftest", memMiB: 64, virtio: [{ kind: "blk", path: disk(16) }, { kind: "rng" }] });
    const before = vmm.metrics();
    expect(before.exits.total).toBe(0);
    expect(before.uptimeMs).toBe(0);
    expect(before.devices["blk0"]).toMatchObject({ kind: "blk", requests: 0, bytes: 0 });
    let serial = "";
    const r = await vmm.run({ serial: (b) => { serial += Buffer.from(b).toString("latin1"); } });
    vmm.close();
    expect(r.reason, serial).toBe("DebugExit");
    expect(serial).toContain("PASS blk.write-read");
    const m = vmm.metrics(); // after close: the final counts
    // The same counts the run result has, by kind.
    for (const [k, n] of Object.entries(r.exits)) expect(m.exits.byReason[k], k).toBe(n);
    expect(m.exits.byReason["IoOut"]).toBeGreaterThan(0);
    // COM1 carried the serial output: at least one exit per line printed.
    expect(m.exits.byDevice["com1"]).toBeGreaterThanOrEqual(serial.split("\n").length - 1);
    expect(m.exits.byDevice["debug-exit"]).toBe(1);
    // The blk window took the driver's register accesses (probe, features, queue setup).
    const blk = m.devices["blk0"]!;
    expect(m.exits.byDevice["blk0"]).toBeGreaterThan(10);
    expect(m.exits.byDevice["rng0"]).toBeGreaterThan(10);
    expect(blk.mmioBase).toBe("0xd0001000");
    expect(blk.requests).toBeGreaterThanOrEqual(2); // a write and a read back, at least
    expect(blk.bytes).toBeGreaterThanOrEqual(1024);
    expect(blk.counters["readBytes"]).toBeGreaterThan(0);
    expect(blk.counters["writeBytes"]).toBeGreaterThan(0);
    expect(blk.notifications).toBeGreaterThan(0);
    expect(blk.interrupts).toBeGreaterThan(0);
    expect(m.devices["rng0"]!.bytes).toBeGreaterThan(0);
    // Every MMIO exit is in exactly one range, every port exit too.
    const byDev = Object.values(m.exits.byDevice).reduce((a, b) => a + b, 0);
    const ioMmio = ["IoOut", "IoIn", "MmioRead", "MmioWrite"].reduce((a, k) => a + (m.exits.byReason[k] ?? 0), 0);
    expect(byDev).toBe(ioMmio);
    // ... and separately: port devices sum to the PIO exits, windows to the MMIO exits
    // (the worker counts reason and device in one call, ExitCounterWriter.io / mmioExit).
    const pioDevs = PIO_DEVICES.reduce((a, d) => a + m.exits.byDevice[d]!, 0);
    expect(pioDevs).toBe((m.exits.byReason["IoOut"] ?? 0) + (m.exits.byReason["IoIn"] ?? 0));
    expect(byDev - pioDevs).toBe((m.exits.byReason["MmioRead"] ?? 0) + (m.exits.byReason["MmioWrite"] ?? 0));
    // The virtio InterruptStatus/ACK registers the worker serves itself (through the window table).
    const irqRegs = m.exits.byReason["MmioInterruptRegister"] ?? 0;
    expect(irqRegs).toBeGreaterThan(0);
    expect(irqRegs).toBeLessThanOrEqual(m.exits.byDevice["blk0"]! + m.exits.byDevice["rng0"]!);
    expect(m.exits.total).toBe(m.exits.vcpus.reduce((a, v) => a + v.total, 0));
    expect(m.ioapic).not.toBeNull(); // the default split irqchip
    expect(m.exits.byDevice["ioapic"]).toBeGreaterThan(0);
    if (hostHasStats) {
      expect(m.kvm.available, m.kvm.reason).toBe(true);
      // KVM counts every exit, including those it handles itself: at least the user-space ones.
      expect(scalar(m.kvm.vcpus[0]!["exits"])).toBeGreaterThanOrEqual(m.exits.total);
      expect("remote_tlb_flush" in m.kvm.vm).toBe(true);
    } else {
      expect(m.kvm.available).toBe(false);
      expect(m.kvm.reason).toMatch(/BINARY_STATS_FD/);
    }
    // Plain JSON: a round trip changes nothing.
    expect(JSON.parse(JSON.stringify(m))).toEqual(m);
  });

  it("metrics() while the guest runs: the counters rise between two reads; unassigned port and MMIO exits land in pio-unknown / mmio-unknown", async () => {
    const vmm = Vmm.create({ kernel: elf, cmdline: "mode=bench-exits n=100000000", memMiB: 64 });
    const p = vmm.run({ serial: () => {} });
    const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
    await sleep(400);
    const a = vmm.metrics();
    await sleep(400);
    const b = vmm.metrics();
    vmm.stop();
    const r = await p;
    vmm.close();
    expect(r.reason).toBe("Stopped");
    expect(a.uptimeMs).toBeGreaterThan(0);
    expect(b.uptimeMs).toBeGreaterThan(a.uptimeMs);
    expect(a.exits.total).toBeGreaterThan(0);
    expect(b.exits.total).toBeGreaterThan(a.exits.total);
    // bench-exits writes 0xd0000000 in a loop first (no device there).
    expect(b.exits.byDevice["mmio-unknown"]).toBeGreaterThan(a.exits.byDevice["mmio-unknown"]!);
    expect(b.exits.byReason["MmioWrite"]).toBeGreaterThan(a.exits.byReason["MmioWrite"] ?? 0);
    if (hostHasStats) expect(scalar(b.kvm.vcpus[0]!["exits"])).toBeGreaterThan(scalar(a.kvm.vcpus[0]!["exits"]));
    const end = vmm.metrics();
    expect(end.exits.total).toBeGreaterThanOrEqual(b.exits.total);
    expect(end.uptimeMs).toBe(vmm.metrics().uptimeMs); // frozen once the run ended
  });

  it("bench-exits to the end: exact counts for the unassigned MMIO address and port", async () => {
    const vmm = Vmm.create({ kernel: elf, cmdline: "mode=bench-exits n=500 npio=50", memMiB: 64 });
    const r = await vmm.run({ serial: () => {} });
    vmm.close();
    expect(r.reason).toBe("DebugExit");
    const m = vmm.metrics();
    // 500 writes and 500 reads of 0xd0000000; 50 raw OUTs and 50 through the syscall gate to 0x510e.
    expect(m.exits.byDevice["mmio-unknown"]).toBe(1000);
    expect(m.exits.byDevice["pio-unknown"]).toBe(100);
  });

  it("MetricsWriter during a run: one valid JSON line per flush, seq in order, counters not going down", async () => {
    const path = join(dir, "metrics.ndjson");
    const vmm = Vmm.create({ kernel: elf, cmdline: "mode=bench-exits n=100000000", memMiB: 64, virtio: [{ kind: "blk", path: disk(4) }] });
    const w = MetricsWriter.open({ path, source: () => vmm.metrics(), intervalMs: 100 });
    const p = vmm.run({ serial: () => {} });
    await new Promise((r) => setTimeout(r, 550));
    expect(w.flush()).toBe(true); // on demand (FlushMetrics)
    vmm.stop();
    await p;
    vmm.close();
    w.close();
    expect(w.closed).toBe(true);
    expect(() => w.flush()).toThrow(expect.objectContaining({ code: "InvalidState" }));
    const text = readFileSync(path, "utf8");
    expect(text.endsWith("\n")).toBe(true);
    const lines = text.trimEnd().split("\n").map((l) => JSON.parse(l) as VmmMetrics & { seq: number });
    expect(lines.length).toBe(w.written);
    expect(lines.length).toBeGreaterThanOrEqual(4); // ~5 timer flushes, the on-demand one, the final one
    expect(w.missed).toBe(0);
    lines.forEach((l, i) => {
      expect(l.seq).toBe(i);
      expect(l.version).toBe(1);
      expect(l.devices["blk0"]?.kind).toBe("blk");
      if (i > 0) {
        expect(l.exits.total).toBeGreaterThanOrEqual(lines[i - 1]!.exits.total);
        expect(l.timestampMs).toBeGreaterThanOrEqual(lines[i - 1]!.timestampMs);
      }
    });
    expect(lines.at(-1)!.exits.total).toBeGreaterThan(lines[0]!.exits.total);
    // Appends: a second writer on the same file adds after what is there.
    const w2 = MetricsWriter.open({ path, source: () => vmm.metrics(), intervalMs: 0 });
    w2.close();
    expect(readFileSync(path, "utf8").trimEnd().split("\n")).toHaveLength(lines.length + 1);
  });

  it("ts-vmm run --metrics prints one JSON object on stderr at the end; --metrics-path writes a line", async () => {
    const path = join(dir, "cli-metrics.ndjson");
    let err = "";
    const code = await runCli(
      ["run", "--kernel", elf, "--mem", "64", "--cmdline", "mode=hello", "--metrics", "--metrics-path", path],
      { write: () => true },
      { write: (s: string) => { err += s; return true; } },
    );
    expect(code, err).toBe(1); // debug-exit value 0
    const jsonLines = err.split("\n").filter((l) => l.startsWith("{"));
    expect(jsonLines).toHaveLength(1);
    const m = JSON.parse(jsonLines[0]!) as VmmMetrics;
    expect(m.exits.byDevice["com1"]).toBeGreaterThan(10);
    expect(m.exits.byDevice["debug-exit"]).toBe(1);
    const file = readFileSync(path, "utf8").trimEnd().split("\n");
    expect(file).toHaveLength(1);
    const line = JSON.parse(file[0]!) as VmmMetrics & { seq: number };
    expect(line.seq).toBe(0);
    expect(line.exits.total).toBe(m.exits.total);
  });

  it("ts-vmm run --metrics-path in a missing directory: status 2 and the reason, the VM never runs", async () => {
    let err = "";
    const code = await runCli(
      ["run", "--kernel", elf, "--mem", "64", "--cmdline", "mode=hello", "--metrics-path", join(dir, "no", "such", "dir", "m.json")],
      { write: () => true },
      { write: (s: string) => { err += s; return true; } },
    );
    expect(code).toBe(2);
    expect(err).toMatch(/cannot open the metrics file .*ENOENT/);
  });
});

describe("MetricsWriter on its own", () => {
  let dir = "";
  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), "ts-vmm-mw-")); });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const fake = (): VmmMetrics => ({
    version: 1, timestampMs: Date.now(), uptimeMs: 0,
    exits: { total: 0, byReason: {}, byDevice: {}, vcpus: [] },
    devices: {}, ioapic: null, kvm: { available: false, reason: "test", vm: {}, vcpus: [] },
    // A few KiB per line, so a pipe fills after some lines.
    ...({ padding: "x".repeat(4000) } as object),
  });

  it("refuses bad options with typed errors", () => {
    expect(() => MetricsWriter.open({ path: "", source: fake })).toThrow(expect.objectContaining({ code: "InvalidConfig" }));
    expect(() => MetricsWriter.open({ path: join(dir, "a"), source: fake, intervalMs: -1 })).toThrow(expect.objectContaining({ code: "InvalidConfig" }));
    expect(() => MetricsWriter.open({ path: join(dir, "a"), source: 5 as unknown as () => VmmMetrics })).toThrow(expect.objectContaining({ code: "InvalidConfig" }));
    expect(() => MetricsWriter.open({ path: dir, source: fake })).toThrow(expect.objectContaining({ code: "FileNotWritable" }));
  });

  it("a source that throws is a missed line, not an exception", () => {
    const w = MetricsWriter.open({ path: join(dir, "b"), source: () => { throw new Error("boom"); }, intervalMs: 0 });
    expect(w.flush()).toBe(false);
    expect(w.missed).toBe(1);
    expect(w.lastError).toContain("boom");
    w.close(false);
    expect(readFileSync(join(dir, "b"), "utf8")).toBe("");
  });

  it("a named pipe nobody reads: flushes miss lines instead of blocking; a pipe with no reader at all is refused at open", () => {
    const fifo = join(dir, "fifo");
    execFileSync("mkfifo", [fifo]);
    // No reader: O_NONBLOCK write-open of a FIFO fails with ENXIO.
    expect(() => MetricsWriter.open({ path: fifo, source: fake })).toThrow(expect.objectContaining({ code: "FileNotWritable" }));
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const w = MetricsWriter.open({ path: fifo, source: fake, intervalMs: 0 });
      const t0 = performance.now();
      for (let i = 0; i < 40; i++) w.flush(); // 40 lines of ~4 KiB: more than a 64 KiB pipe holds
      expect(performance.now() - t0).toBeLessThan(5000);
      expect(w.missed).toBeGreaterThan(0);
      expect(w.written + w.missed).toBe(40);
      expect(w.lastError).toMatch(/EAGAIN|short write/);
      w.close(false);
    } finally {
      closeSync(reader);
    }
  });
});
