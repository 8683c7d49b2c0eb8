import { describeWith } from "@ts-vmm/test-utils";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, expect, it, vi } from "vitest";
import { buildMicroGuest, fuzzReactions, qemuProvides, runGuest, selftestProblems, tscHz, type GuestRun } from "../src/index.js";
import { allDevices, tempDisk } from "./helpers.js";


// Each run has its own runGuest timeout (<= 60 s); vitest's must be longer so the harness,
// not vitest, ends a hung VMM (and kills its process group).
vi.setConfig({ testTimeout: 90_000 });

function explain(r: GuestRun): string {
  return `exit=${String(r.exitCode)} vmm=${JSON.stringify(r.vmmExit)} timedOut=${r.timedOut}\n--- serial\n${r.serial}\n--- vmm log\n${r.vmmLog}`;
}

describeWith({ kvm: true, tools: ["qemu-system-x86_64", "gcc", "ld"] }, "micro-guest under QEMU microvm (KVM)", () => {
  let elf = "";
  let disk: ReturnType<typeof tempDisk>;
  beforeAll(async () => {
    elf = (await buildMicroGuest()).elf;
    disk = tempDisk(64);
  });
  afterAll(() => disk?.remove());

  it("hello: boots from the PVH entry to CPL3, prints its line and exits 0 through port 0xf4", async () => {
    const r = await runGuest({ vmm: "qemu", kernel: elf, cmdline: "mode=hello", timeoutMs: 20_000 });
    expect(r.serial, explain(r)).toContain("hello from the ts-vmm micro-guest");
    expect(r.serial).toContain("cpl=3");
    expect(r.exitCode, explain(r)).toBe(0);
    expect(r.results.values["exit"]).toBe("0");
    expect(r.firstSerialByteMs).not.toBeNull();
    console.log(`[qemu] hello: process start -> first serial byte ${r.firstSerialByteMs?.toFixed(1)} ms, wall ${r.wallMs.toFixed(1)} ms`);
  });

  it("selftest: every device QEMU provides passes write/read-back, the others report absent", async () => {
    const kinds = qemuProvides();
    const r = await runGuest({ vmm: "qemu", kernel: elf, cmdline: "mode=selftest", devices: allDevices(kinds, disk.path), timeoutMs: 30_000 });
    expect(selftestProblems(r, kinds), explain(r)).toEqual([]);
    expect(r.results.passed).toContain("blk.write-read");
    expect(r.results.skipped).toContainEqual({ check: "rtc", reason: "absent" });
  });

  it("selftest without devices: reports every device kind absent and still passes the CPU checks", async () => {
    const r = await runGuest({ vmm: "qemu", kernel: elf, cmdline: "mode=selftest", timeoutMs: 20_000 });
    expect(selftestProblems(r, []), explain(r)).toEqual([]);
  });

  it("selftest reports a legacy (version 1) virtio-mmio transport as FAIL instead of driving it", async () => {
    const r = await runGuest({
      vmm: "qemu", kernel: elf, cmdline: "mode=selftest", devices: [{ kind: "rng" }], timeoutMs: 20_000,
      extraArgs: ["-global", "virtio-mmio.force-legacy=true"], // the last -global wins
    });
    expect(r.exitCode, explain(r)).toBe(1);
    expect(r.results.failed).toEqual([{ check: "rng", detail: "virtio-mmio version 1 (want 2)" }]);
  });

  it("an unknown mode fails with exit value 2", async () => {
    const r = await runGuest({ vmm: "qemu", kernel: elf, cmdline: "mode=nonsense", timeoutMs: 20_000 });
    expect(r.exitCode, explain(r)).toBe(2);
    expect(r.results.failed[0]?.check).toBe("mode");
  });

  it("bench-exits: times MMIO and PIO exits from CPL3", async () => {
    const r = await runGuest({
      vmm: "qemu", kernel: elf, cmdline: "mode=bench-exits n=500 npio=100", devices: [{ kind: "blk", path: disk.path }], timeoutMs: 30_000,
    });
    expect(r.exitCode, explain(r)).toBe(0);
    for (const k of ["exits_mmio_write", "exits_mmio_read", "exits_pio_raw", "exits_pio_gate", "exits_notify"]) {
      expect(Number(r.results.values[`${k}_cycles`]), k).toBeGreaterThan(0);
    }
    expect(r.results.values["exits_mmio_write_n"]).toBe("500");
    const hz = tscHz(r.results);
    expect(hz).not.toBeNull();
    expect(hz!).toBeGreaterThan(1e8);
  });

  it("bench-blk: random 4 KiB reads at queue depth 1 and 32 all complete", async () => {
    const r = await runGuest({
      vmm: "qemu", kernel: elf, cmdline: "mode=bench-blk qd1_ops=200 qd32_ops=1000",
      devices: [{ kind: "blk", path: disk.path }], timeoutMs: 30_000,
    });
    expect(r.exitCode, explain(r)).toBe(0);
    expect(r.results.values["blk_qd1_ops"]).toBe("200");
    expect(r.results.values["blk_qd32_ops"]).toBe("1000");
    expect(Number(r.results.values["blk_qd32_cycles"])).toBeGreaterThan(0);
  });

  it("fuzz: QEMU's reaction to every malformed chain is recorded; valid requests between them stay correct", async () => {
    const r = await runGuest({
      vmm: "qemu", kernel: elf, cmdline: "mode=fuzz", memMiB: 64, devices: [{ kind: "blk", path: disk.path }], timeoutMs: 60_000,
    });
    expect(r.exitCode, explain(r)).toBe(0);
    expect(r.results.failed, explain(r)).toEqual([]);
    expect(r.results.passed).toContain("fuzz.recovers-after-reset");
    const table: string[] = [];
    for (const f of fuzzReactions(r)) {
      expect(f.reaction, `no reaction recorded for ${f.case}`).toBeDefined();
      table.push(`${f.case.padEnd(34)} ${f.reaction ?? ""}  after=${f.after ?? "-"}`);
    }
    console.log(`[qemu] fuzz reactions:\n${table.join("\n")}\n[qemu] log:\n${r.vmmLog}`);
  });

  it("blk-durability: writes + flushes until killed; every block reported flushed is on the image", async () => {
    const d = tempDisk(4);
    try {
      const r = await runGuest({
        vmm: "qemu", kernel: elf, cmdline: "mode=blk-durability salt=77", devices: [{ kind: "blk", path: d.path }], timeoutMs: 30_000,
        stopOnSerial: /durable=(5\d)\n/,
      });
      expect(r.stoppedOnSerial, explain(r)).toBe(true);
      const last = Math.max(...[...r.serial.matchAll(/RESULT durable=(\d+)/g)].map((m) => Number(m[1])));
      expect(last).toBeGreaterThanOrEqual(50);
      const img = readFileSync(d.path);
      for (let i = 0; i <= last; i++) {
        expect(img.readUInt32LE(i * 4096), `block ${i}`).toBe(i);
        expect(img.readUInt32LE(i * 4096 + 4), `block ${i} salt`).toBe(77);
      }
    } finally {
      d.remove();
    }
  });

  it("smp: INIT-SIPI starts every AP and each counts at CPL3 (2 vCPUs)", async () => {
    const r = await runGuest({ vmm: "qemu", kernel: elf, cmdline: "mode=smp cpus=2", vcpus: 2, timeoutMs: 30_000 });
    expect(r.exitCode, explain(r)).toBe(0);
    expect(r.results.values["smp.started"]).toBe("1");
    expect(r.results.passed).toEqual(expect.arrayContaining(["smp.started", "smp.counting"]));
    expect(Number(r.results.values["smp.ap1_count_delta"])).toBeGreaterThan(0);
  });

  it("smp: reports a missing AP as FAIL (cpus=3 with 2 vCPUs)", async () => {
    const r = await runGuest({ vmm: "qemu", kernel: elf, cmdline: "mode=smp cpus=3 ap_wait=400000000", vcpus: 2, timeoutMs: 60_000 });
    expect(r.exitCode, explain(r)).toBe(1);
    expect(r.results.failed.map((f) => f.check)).toEqual(["smp.started"]);
  });
});
