// Review of the control plane (issue 11): hostile snapshot files and API
// bodies, and racing calls, on real KVM with the micro-guest. Each test names
// what went wrong before its fix.
import { closeSync, copyFileSync, ftruncateSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeWith } from "@ts-vmm/test-utils";
import { buildMicroGuest } from "@ts-vmm/test-guests";
import { afterAll, beforeAll, expect, it, vi } from "vitest";
import { Vmm, VmmError, decodeSnapshotFile, encodeSnapshotFile, mergeDiffSnapshot, type SnapshotState } from "../src/index.js";
import { VmmBackend } from "../src/api/vmm-backend.js";
import { http, ready, start } from "./api-http.js";
import { ticksOf, until } from "./ticker.js";

vi.setConfig({ testTimeout: 60_000 });

const errorOf = (f: () => unknown): unknown => {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
};

describeWith({ kvm: true, tools: ["gcc", "ld"] }, "control plane review: hostile snapshots, racing calls", () => {
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
  const ticker = (ticks: number): string => `mode=ticker ticks=${ticks} spin=20000000`;
  /** A paused micro-guest's Full snapshot at `name`.snap / `name`.mem. */
  const takeBase = async (name: string, ticks = 200): Promise<{ snap: string; mem: string; state: SnapshotState }> => {
    let out = "";
    const vm = Vmm.create({ kernel: elf, cmdline: ticker(ticks), memMiB: 64, virtio: [{ kind: "blk", path: disk() }] });
    const run = vm.run({ serial: (b) => void (out += Buffer.from(b).toString()) });
    await until(() => ticksOf(out).length > 3);
    await vm.pause();
    const snap = join(dir, `${name}.snap`), mem = join(dir, `${name}.mem`);
    await vm.snapshot({ snapshotPath: snap, memFilePath: mem });
    vm.stop();
    await run;
    vm.close();
    return { snap, mem, state: decodeSnapshotFile(readFileSync(snap)) as SnapshotState };
  };
  beforeAll(async () => {
    elf = (await buildMicroGuest()).elf;
    dir = mkdtempSync(join(tmpdir(), "ts-vmm-review-"));
  }, 120_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  // Before: writeMemoryFile opened memFilePath with O_TRUNC. Truncating a file
  // a VM maps MAP_PRIVATE discards every page of the mapping (copied-on-write
  // ones too), so the guest's memory became zeros under it and the file was
  // written from those zeros: silent loss of the guest and of the snapshot.
  it("a snapshot into the memory file the VM was restored from leaves the running guest and the new snapshot intact", async () => {
    const base = await takeBase("own", 300);
    const mem = join(dir, "own-copy.mem");
    copyFileSync(base.mem, mem);
    let out = "";
    const vm = Vmm.restore({ snapshotPath: base.snap, memFilePath: mem });
    const run = vm.run({ serial: (b) => void (out += Buffer.from(b).toString()) });
    await until(() => ticksOf(out).length > 3);
    await vm.pause();
    const snap2 = join(dir, "own2.snap");
    await vm.snapshot({ snapshotPath: snap2, memFilePath: mem });
    const at = ticksOf(out).at(-1)!;
    vm.resume();
    const r = await run;
    vm.close();
    expect(r.guestExitValue, out).toBe(0);
    expect(out).toContain("PASS ticker");
    // The new snapshot restores from the rewritten file and continues after `at`.
    let out2 = "";
    const again = Vmm.restore({ snapshotPath: snap2, memFilePath: mem });
    const r2 = await again.run({ serial: (b) => void (out2 += Buffer.from(b).toString()) });
    again.close();
    expect(r2.guestExitValue, out2).toBe(0);
    expect(ticksOf(out2)[0]).toBe(at + 1);
    expect(out2).toContain("PASS ticker");
  });

  // Before: the memory file was written, then the state file renamed over it: the snapshot's memory was gone.
  it("a snapshot whose state and memory paths are the same file is refused", async () => {
    let out = "";
    const vm = Vmm.create({ kernel: elf, cmdline: ticker(200), memMiB: 64 });
    const run = vm.run({ serial: (b) => void (out += Buffer.from(b).toString()) });
    await until(() => ticksOf(out).length > 1);
    await vm.pause();
    const p = join(dir, "same.file");
    await expect(vm.snapshot({ snapshotPath: p, memFilePath: p })).rejects.toMatchObject({ code: "InvalidConfig" });
    await expect(vm.snapshot({ snapshotPath: p, memFilePath: join(dir, ".", "same.file") })).rejects.toMatchObject({ code: "InvalidConfig" });
    vm.stop();
    await run;
    vm.close();
  });

  // Before: config.virtio was checked for a `kind` string only, so a crafted
  // state built any device (a console connected to any Unix socket) before the
  // device states were found not to match. Now a device list that does not match
  // the saved device states is refused before any device is built.
  it("a crafted state whose device list does not match its device states is refused before a device touches the host", async () => {
    const base = await takeBase("kinds");
    const sockPath = join(dir, "victim.sock");
    let connections = 0;
    const server = createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((r) => server.listen(sockPath, r));
    try {
      const crafted = structuredClone(base.state) as unknown as { config: { virtio: unknown[] } };
      crafted.config.virtio = [{ kind: "console", socketPath: sockPath }];
      const bad = join(dir, "kinds-bad.snap");
      const { writeFileSync } = await import("node:fs");
      writeFileSync(bad, encodeSnapshotFile(crafted));
      const e = errorOf(() => Vmm.restore({ snapshotPath: bad, memFilePath: base.mem }).close());
      expect(e).toBeInstanceOf(VmmError);
      expect((e as VmmError).code).toBe("SnapshotInvalid");
      await new Promise((r) => setTimeout(r, 100));
      expect(connections).toBe(0);
      // An unknown kind, and a blk entry without a path, are refused by the state check too (not by the disk's open).
      crafted.config.virtio = [{ kind: "gpu" }];
      writeFileSync(bad, encodeSnapshotFile(crafted));
      expect(errorOf(() => Vmm.restore({ snapshotPath: bad, memFilePath: base.mem }).close())).toMatchObject({ code: "SnapshotInvalid" });
      crafted.config.virtio = [{ kind: "blk" }];
      writeFileSync(bad, encodeSnapshotFile(crafted));
      expect(errorOf(() => Vmm.restore({ snapshotPath: bad, memFilePath: base.mem }).close())).toMatchObject({ code: "SnapshotInvalid" });
    } finally {
      server.close();
    }
  });

  // Before: memory.pages was not checked by the state check, and mergeDiffSnapshot
  // iterated it as given: a TypeError (not a VmmError) for a non-array, and a
  // raw ENOENT for a missing base file.
  it("mergeDiffSnapshot refuses a crafted Diff run list and a missing base with VmmErrors", async () => {
    const base = await takeBase("merge");
    const { writeFileSync } = await import("node:fs");
    const diffSnap = join(dir, "merge-diff.snap");
    for (const pages of [5, {}, [5], [[0]], [["0", 4096]]]) {
      const crafted = { ...base.state, memory: { ...base.state.memory, type: "Diff", pages } };
      writeFileSync(diffSnap, encodeSnapshotFile(crafted));
      const target = join(dir, "merge-target.mem");
      copyFileSync(base.mem, target);
      const e = errorOf(() => mergeDiffSnapshot(diffSnap, base.mem, target));
      expect(e, JSON.stringify(pages)).toBeInstanceOf(VmmError);
      expect((e as VmmError).code).toBe("SnapshotInvalid");
    }
    const ok = { ...base.state, memory: { ...base.state.memory, type: "Diff", pages: [[0, 4096]] } };
    writeFileSync(diffSnap, encodeSnapshotFile(ok));
    expect(errorOf(() => mergeDiffSnapshot(diffSnap, base.mem, join(dir, "no-such.mem")))).toMatchObject({ code: "FileNotReadable" });
  });

  // Before: VmmBackend.load restored the VM, then a failing metrics sink threw
  // and the restored VM (KVM fds, memory mapping, disk fd) was never closed.
  it("a snapshot load whose metrics file cannot be opened releases the restored VM", async () => {
    const base = await takeBase("leak");
    const backend = new VmmBackend({
      run: () => Promise.resolve(),
      metricsSink: () => {
        throw new VmmError("FileNotWritable", "cannot open the metrics file");
      },
    });
    const { readlinkSync } = await import("node:fs");
    // Descriptors of a VM: /dev/kvm, kvm-vm and kvm-vcpu inodes, the disk images of this test directory.
    const vmFds = (): number => readdirSync("/proc/self/fd").filter((f) => {
      try {
        const l = readlinkSync(`/proc/self/fd/${f}`);
        return l.includes("kvm") || l.startsWith(dir);
      } catch {
        return false;
      }
    }).length;
    // (load throws synchronously for a refused restore or sink; the router awaits it either way)
    const load = async (): Promise<void> => backend.load({ snapshotPath: base.snap, memFilePath: base.mem, enableDiffSnapshots: false, resumeVm: false, metricsPath: "/nonexistent/m" });
    await expect(load()).rejects.toMatchObject({ code: "FileNotWritable" });
    const before = vmFds();
    for (let i = 0; i < 5; i++) await expect(load()).rejects.toMatchObject({ code: "FileNotWritable" });
    expect(vmFds()).toBeLessThanOrEqual(before);
    expect(backend.vmm).toBeUndefined();
  });

  // Before: the --snapshot-on-signal handler resumed any VM it found paused,
  // one the API had paused too (the API's pause was lost), and, while an API
  // snapshot was being written, its resume() threw inside a finally of a
  // floating promise: an unhandled rejection that killed the VMM.
  it("run --api-sock --snapshot-on-signal: a signal snapshot keeps an API pause, and one during an API snapshot does not kill the VMM", async () => {
    const sdir = mkdtempSync(join(dir, "sig-"));
    const sock = join(dir, "sig.sock");
    const a = start(["run", "--kernel", elf, "--mem", "256", "--cmdline", ticker(100000), "--api-sock", sock, "--snapshot-on-signal", `SIGUSR1:${sdir}`, "--timeout", "60"]);
    try {
      await ready(sock, a);
      await until(() => ticksOf(a.out).length > 2);
      expect((await http(sock, "PATCH", "/vm", { state: "Paused" })).status).toBe(204);
      a.proc.kill("SIGUSR1");
      await until(() => /snapshot (written|failed)/.test(a.err));
      expect(a.err).toContain("snapshot written");
      expect(((await http(sock, "GET", "/")).json as { state: string }).state).toBe("Paused");
      // A signal while the API writes a snapshot: that one fails ("already being written"), the VMM lives on.
      const api = http(sock, "PUT", "/snapshot/create", { snapshot_path: join(dir, "sig-api.snap"), mem_file_path: join(dir, "sig-api.mem") });
      await new Promise((r) => setTimeout(r, 15));
      const errBefore = a.err.length;
      a.proc.kill("SIGUSR1");
      expect((await api).status).toBe(204);
      await until(() => /snapshot (written|failed)/.test(a.err.slice(errBefore)));
      await new Promise((r) => setTimeout(r, 200));
      expect(a.proc.exitCode, a.err).toBeNull();
      expect(((await http(sock, "GET", "/")).json as { state: string }).state).toBe("Paused");
      expect((await http(sock, "PATCH", "/vm", { state: "Resumed" })).status).toBe(204);
    } finally {
      a.proc.kill("SIGKILL");
      await a.exit;
    }
  }, 90_000);
});
