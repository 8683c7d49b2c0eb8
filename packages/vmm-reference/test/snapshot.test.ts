import { spawn } from "node:child_process";
import { closeSync, copyFileSync, ftruncateSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Kvm } from "@ts-vmm/kvm-ioctls";
import { describeWith } from "@ts-vmm/test-utils";
import { buildMicroGuest } from "@ts-vmm/test-guests";
import { afterAll, beforeAll, expect, it, vi } from "vitest";
import { Vmm, VmmError, decodeSnapshotFile, encodeSnapshotFile, mergeDiffSnapshot, restoreVcpu, saveVcpu, msrsToSave, type SnapshotState } from "../src/index.js";
import { ticksOf, contiguous, until } from "./ticker.js";

vi.setConfig({ testTimeout: 60_000 });
const CLI = fileURLToPath(new URL("../dist/bin.js", import.meta.url));

const codeOf = (f: () => unknown): string | undefined => {
  try {
    f();
  } catch (e) {
    return e instanceof VmmError ? `${e.code}: ${e.message}` : `other: ${(e as Error).message}`;
  }
  return undefined;
};

/** Block b of the disk as the ticker's tick i writes it. */
function tickBlock(i: number, salt = 0): Buffer {
  const b = Buffer.alloc(4096);
  for (let j = 0; j < 4096; j++) b[j] = (i * 13 + j) & 0xff;
  b.writeUInt32LE(i >>> 0, 0);
  b.writeUInt32LE(salt, 4);
  return b;
}
function readBlock(path: string, b: number): Buffer {
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(4096);
    readSync(fd, buf, 0, 4096, b * 4096);
    return buf;
  } finally {
    closeSync(fd);
  }
}

describeWith({ kvm: true, tools: ["gcc", "ld"] }, "pause, resume, snapshot and restore (micro-guest, mode=ticker)", () => {
  let elf = "";
  let dir = "";
  let n = 0;
  const disk = (): string => {
    const p = join(dir, `disk-${n++}.img`);
    const fd = openSync(p, "w");
    ftruncateSync(fd, 8 << 20);
    closeSync(fd);
    return p;
  };
  const ticker = (ticks: number, extra = ""): string => `mode=ticker ticks=${ticks} spin=20000000 ${extra}`;
  beforeAll(async () => {
    elf = (await buildMicroGuest()).elf;
    dir = mkdtempSync(join(tmpdir(), "ts-vmm-snap-"));
  }, 120_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("pause parks every vCPU (no ticks while paused), resume continues: the guest's checks pass", async () => {
    let out = "";
    const vm = Vmm.create({ kernel: elf, cmdline: ticker(60), memMiB: 64, vcpus: 2, virtio: [{ kind: "blk", path: disk() }] });
    await expect(vm.pause()).rejects.toMatchObject({ code: "InvalidState" }); // before run
    expect(vm.state).toBe("NotStarted");
    const run = vm.run({ serial: (b) => void (out += Buffer.from(b).toString()) });
    expect(vm.state).toBe("Running");
    expect(() => vm.resume()).toThrow(expect.objectContaining({ code: "InvalidState" }));
    await expect(vm.snapshot({ snapshotPath: join(dir, "x.snap"), memFilePath: join(dir, "x.mem") })).rejects.toMatchObject({ code: "InvalidState" });
    for (const at of [5, 20, 40]) {
      await until(() => ticksOf(out).length > at);
      await vm.pause();
      await vm.pause(); // idempotent
      expect(vm.state).toBe("Paused");
      const seen = ticksOf(out).length;
      await new Promise((r) => setTimeout(r, 150));
      expect(ticksOf(out).length).toBe(seen);
      vm.resume();
      expect(vm.state).toBe("Running");
    }
    const r = await run;
    expect(vm.state).toBe("Stopped");
    expect(r.reason, out).toBe("DebugExit");
    expect(r.guestExitValue, out).toBe(0);
    expect(out).toContain("PASS ticker");
    const t = ticksOf(out);
    expect(t.length).toBe(60);
    expect(contiguous(t)).toBe(true);
    expect(r.vcpus?.[1]?.mpState).toBe(1); // the AP never got INIT-SIPI, and parked all the same
    vm.close();
  });

  it("stop() while paused ends the run with Stopped; a pause racing the guest's end is refused", async () => {
    const vm = Vmm.create({ kernel: elf, cmdline: ticker(1000), memMiB: 64 });
    let out = "";
    const run = vm.run({ serial: (b) => void (out += Buffer.from(b).toString()) });
    await until(() => ticksOf(out).length > 2);
    await vm.pause();
    vm.stop();
    expect((await run).reason).toBe("Stopped");
    await expect(vm.pause()).rejects.toMatchObject({ code: "InvalidState" });
    vm.close();
    // A guest that ends at once: a pause asked as it ends rejects, or resolves if it came first.
    const quick = Vmm.create({ kernel: elf, cmdline: "mode=hello", memMiB: 64 });
    const qrun = quick.run({ serial: () => {} });
    const p = quick.pause().then(() => "paused", (e: VmmError) => e.code);
    const got = await p;
    if (got === "paused") quick.resume();
    else expect(got).toBe("InvalidState");
    expect((await qrun).reason).toBe("DebugExit");
    quick.close();
  });

  it("snapshot in one process, SIGKILL it, restore in a new process: ticks continue, blk requests after the restore complete, checks pass", async () => {
    const img = disk();
    const sdir = mkdtempSync(join(dir, "sig-"));
    const a = spawn(process.execPath, [CLI, "run", "--kernel", elf, "--cmdline", ticker(400), "--mem", "64", "--disk", img, "--snapshot-on-signal", `SIGUSR1:${sdir}`], { stdio: ["ignore", "pipe", "pipe"] });
    let out1 = "", err1 = "";
    a.stdout.on("data", (b: Buffer) => (out1 += b.toString()));
    a.stderr.on("data", (b: Buffer) => (err1 += b.toString()));
    const gone = new Promise((r) => a.on("exit", r));
    await until(() => ticksOf(out1).length > 20);
    a.kill("SIGUSR1");
    await until(() => /snapshot (written|failed)/.test(err1));
    expect(err1).toContain("snapshot written");
    a.kill("SIGKILL");
    await gone;
    const state = decodeSnapshotFile(readFileSync(join(sdir, "vm.snap"))) as SnapshotState;
    expect(state.memory.type).toBe("Full");
    const b = spawn(process.execPath, [CLI, "run", "--restore", `${join(sdir, "vm.snap")},mem=${join(sdir, "vm.mem")}`], { stdio: ["ignore", "pipe", "pipe"] });
    let out2 = "", err2 = "";
    b.stdout.on("data", (x: Buffer) => (out2 += x.toString()));
    b.stderr.on("data", (x: Buffer) => (err2 += x.toString()));
    const code = await new Promise<number | null>((r) => b.on("exit", r));
    expect(code, `${out2}\n${err2}`).toBe(1); // the guest's debug-exit value 0, as (0 << 1) | 1
    const t2 = ticksOf(out2);
    expect(t2[0]).toBeGreaterThan(20);
    expect(t2.at(-1)).toBe(399);
    expect(contiguous(t2)).toBe(true);
    expect(out2).toContain("PASS ticker");
    expect(out2).toMatch(/RESULT ticker.irq=count:\d+,used:\d+,missing:0/);
    // The blocks the restored guest wrote are on the disk (block i % 1024 = tick i).
    for (const i of [t2[0]!, 399]) expect(readBlock(img, i % 1024).equals(tickBlock(i)), `block of tick ${i}`).toBe(true);
  });

  it("a Diff snapshot after a few ticks is small, merges onto the Full one and restores", async () => {
    const img = disk();
    let out = "";
    const vm = Vmm.create({ kernel: elf, cmdline: ticker(300), memMiB: 64, virtio: [{ kind: "blk", path: img }], enableDiffSnapshots: true });
    const run = vm.run({ serial: (b) => void (out += Buffer.from(b).toString()) });
    await until(() => ticksOf(out).length > 10);
    await vm.pause();
    const full = await vm.snapshot({ snapshotPath: join(dir, "base.snap"), memFilePath: join(dir, "base.mem") });
    expect(full.memoryBytesWritten).toBe(64 << 20);
    vm.resume();
    const k = ticksOf(out).length;
    await until(() => ticksOf(out).length > k + 3);
    await vm.pause();
    const diff = await vm.snapshot({ snapshotPath: join(dir, "diff.snap"), memFilePath: join(dir, "diff.mem"), type: "Diff" });
    const last = ticksOf(out).at(-1)!;
    vm.stop();
    await run;
    vm.close();
    expect(diff.memoryBytesWritten).toBeGreaterThan(0);
    expect(diff.memoryBytesWritten).toBeLessThan(2 << 20);
    const st = statSync(join(dir, "diff.mem"));
    expect(st.size).toBe(64 << 20);
    expect(st.blocks * 512).toBeLessThan(4 << 20); // holes where nothing was written
    console.log(`[snapshot] diff after ${last - k + 1} ticks: ${diff.memoryBytesWritten} bytes written, ${st.blocks * 512} allocated; full took ${full.durationMs.toFixed(1)} ms`);
    copyFileSync(join(dir, "base.mem"), join(dir, "merged.mem"));
    mergeDiffSnapshot(join(dir, "diff.snap"), join(dir, "diff.mem"), join(dir, "merged.mem"));
    let out2 = "";
    const restored = Vmm.restore({ snapshotPath: join(dir, "diff.snap"), memFilePath: join(dir, "merged.mem") });
    const r = await restored.run({ serial: (b) => void (out2 += Buffer.from(b).toString()) });
    restored.close();
    expect(r.guestExitValue, out2).toBe(0);
    expect(ticksOf(out2)[0]).toBe(last + 1);
    expect(out2).toContain("PASS ticker");
  });

  it("refuses corrupted, truncated, wrong-version, wrong-CPU and wrong-memory snapshots before anything runs", async () => {
    let out = "";
    const vm = Vmm.create({ kernel: elf, cmdline: ticker(200), memMiB: 64, virtio: [{ kind: "blk", path: disk() }] });
    const run = vm.run({ serial: (b) => void (out += Buffer.from(b).toString()) });
    await until(() => ticksOf(out).length > 3);
    await vm.pause();
    const snap = join(dir, "c.snap"), mem = join(dir, "c.mem");
    await vm.snapshot({ snapshotPath: snap, memFilePath: mem });
    vm.stop();
    await run;
    vm.close();
    const good = readFileSync(snap);
    const bad = join(dir, "bad.snap");
    const tryRestore = (bytes: Uint8Array, memPath = mem): string | undefined => {
      writeFileSync(bad, bytes);
      return codeOf(() => Vmm.restore({ snapshotPath: bad, memFilePath: memPath }).close());
    };
    expect(tryRestore(good)).toBeUndefined();
    const flipped = Buffer.from(good);
    const mid = Math.floor(good.length / 2);
    flipped[mid] = flipped[mid]! ^ 1;
    expect(tryRestore(flipped)).toMatch(/^SnapshotInvalid: .*CRC-64 mismatch/);
    expect(tryRestore(good.subarray(0, good.length - 100))).toMatch(/^SnapshotInvalid: .*truncated/);
    const state = decodeSnapshotFile(good) as SnapshotState;
    expect(tryRestore(encodeSnapshotFile(state, 2))).toMatch(/^SnapshotInvalid: .*format version 2/);
    expect(tryRestore(encodeSnapshotFile({ ...state, stateVersion: 7 }))).toMatch(/^SnapshotInvalid: .*state version 7/);
    // Another vendor.
    const vendor = structuredClone(state) as unknown as { vcpus: { cpuid: { function: number; ebx: number; ecx: number; edx: number }[] }[] };
    const leaf0 = vendor.vcpus[0]!.cpuid.find((e) => e.function === 0)!;
    const isAmd = leaf0.ebx === 0x68747541;
    Object.assign(leaf0, isAmd ? { ebx: 0x756e6547, edx: 0x49656e69, ecx: 0x6c65746e } : { ebx: 0x68747541, edx: 0x69746e65, ecx: 0x444d4163 });
    expect(tryRestore(encodeSnapshotFile(vendor))).toMatch(/^SnapshotInvalid: .*cannot run on this host: it was taken on a "(GenuineIntel|AuthenticAMD)" CPU/);
    // A feature this host's KVM cannot give a vCPU: a CPUID.7.0:EBX bit neither listed nor read back.
    const kvm = new Kvm();
    const scratch = kvm.createVm().createVcpu(0);
    const supported = kvm.getSupportedCpuid();
    scratch.setCpuid2(supported);
    const given = (supported.find((e) => e.function === 7 && e.index === 0)?.ebx ?? 0) | (scratch.getCpuid2().find((e) => e.function === 7 && e.index === 0)?.ebx ?? 0);
    const missingBit = [...Array(32).keys()].find((b) => (given & (1 << b)) === 0); // bit 22 is reserved on every CPU
    scratch.close();
    kvm.close();
    expect(missingBit).toBeDefined();
    {
      const feat = structuredClone(state) as unknown as { vcpus: { cpuid: { function: number; index: number; ebx: number }[] }[] };
      const l7 = feat.vcpus[0]!.cpuid.find((e) => e.function === 7 && e.index === 0)!;
      l7.ebx = (l7.ebx | (1 << (missingBit ?? 22))) >>> 0;
      expect(tryRestore(encodeSnapshotFile(feat))).toMatch(new RegExp(`^SnapshotInvalid: .*CPUID.7.0:EBX bit ${String(missingBit)}`));
    }
    // A memory file of another size.
    const shortMem = join(dir, "short.mem");
    copyFileSync(mem, shortMem);
    const fd = openSync(shortMem, "r+");
    ftruncateSync(fd, 32 << 20);
    closeSync(fd);
    expect(tryRestore(good, shortMem)).toMatch(/^SnapshotInvalid: .*memory file .* has 33554432 bytes/);
    // A well-formed state with a hostile field.
    const hostile = structuredClone(state) as unknown as { vcpus: { lapic: Uint8Array }[] };
    hostile.vcpus[0]!.lapic = new Uint8Array(7);
    expect(tryRestore(encodeSnapshotFile(hostile))).toMatch(/^SnapshotInvalid: .*lapic is not 1024 bytes/);
  });

  it("a VM with a device that runs host timers (virtio-rtc) is snapshotted; a Diff without dirty logging is refused", async () => {
    const vm = Vmm.create({ kernel: elf, cmdline: ticker(500), memMiB: 64, virtio: [{ kind: "rtc" }] });
    let out = "";
    const run = vm.run({ serial: (b) => void (out += Buffer.from(b).toString()) });
    await until(() => ticksOf(out).length > 1);
    await vm.pause();
    const info = await vm.snapshot({ snapshotPath: join(dir, "r.snap"), memFilePath: join(dir, "r.mem") });
    expect(info.memoryBytesWritten).toBe(64 << 20);
    expect((decodeSnapshotFile(readFileSync(join(dir, "r.snap"))) as SnapshotState).devices.virtio[0]!.device.deviceType).toBe(17);
    await expect(vm.snapshot({ snapshotPath: join(dir, "r.snap"), memFilePath: join(dir, "r.mem"), type: "Diff" })).rejects.toMatchObject({ code: "InvalidState" });
    vm.stop();
    await run;
    vm.close();
  });
});

// CET state on the real ioctls: only where this host's KVM gives a vCPU shadow stacks.
const hostShstk = ((): boolean => {
  try {
    const kvm = new Kvm();
    const l7 = kvm.getSupportedCpuid().find((e) => e.function === 7 && e.index === 0);
    kvm.close();
    return ((l7?.ecx ?? 0) >>> 7 & 1) === 1;
  } catch {
    return false;
  }
})();
describeWith({ kvm: true }, "CET state on the real ioctls", () => {
  it.skipIf(!hostShstk)(`round-trips the CET MSRs and GUEST_SSP between two vCPUs${hostShstk ? "" : " (skipped: this host's KVM_GET_SUPPORTED_CPUID has no SHSTK)"}`, () => {
    const kvm = new Kvm();
    const vm = kvm.createVm();
    vm.createIrqchip();
    const supported = kvm.getSupportedCpuid();
    const a = vm.createVcpu(0), b = vm.createVcpu(1);
    a.setCpuid2(supported);
    b.setCpuid2(supported);
    a.setMsrs([{ index: 0x6a7, data: 0x7ffd_0000_1000n }, { index: 0x6a0, data: 1n }]);
    const { indices, refusedRequired } = msrsToSave(a, kvm.getMsrIndexList(), supported);
    expect(refusedRequired).toEqual([]);
    const saved = saveVcpu(a, 0, indices, false);
    expect(saved.guestSsp).toBeDefined();
    restoreVcpu(b, { ...saved, id: 1 }, b.getTscKhz());
    expect(b.getMsrs([0x6a7, 0x6a0])).toEqual([{ index: 0x6a7, data: 0x7ffd_0000_1000n }, { index: 0x6a0, data: 1n }]);
    a.close(); b.close(); vm.close(); kvm.close();
  });
});
