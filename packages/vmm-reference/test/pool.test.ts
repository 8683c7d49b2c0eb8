import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describeWith } from "@ts-vmm/test-utils";
import { buildMicroGuest } from "@ts-vmm/test-guests";
import { afterAll, beforeAll, expect, it, vi } from "vitest";
import { SnapshotPool, Vmm, VmmError, closePrestartedVcpuWorkers, type PooledVm } from "../src/index.js";
import { http, faultOf } from "./api-http.js";
import { ticksOf, contiguous, until } from "./ticker.js";

vi.setConfig({ testTimeout: 60_000 });
const CLI = fileURLToPath(new URL("../dist/bin.js", import.meta.url));

const codeOf = async (p: Promise<unknown>): Promise<string> => p.then(() => "resolved", (e: unknown) => (e instanceof VmmError ? e.code : `other: ${String(e)}`));
const openFds = (): number => readdirSync("/proc/self/fd").length;

describeWith({ kvm: true, tools: ["gcc", "ld"] }, "SnapshotPool (micro-guest, mode=ticker)", () => {
  let dir = "";
  let snap = "", mem = "";
  /**
   * What the guest printed before the snapshot. It may end mid-line ("RESULT tick="): a pooled
   * VM then starts with the rest of that line, so continuity is checked on before + its output.
   */
  let before = "";
  /** Every tick of before + a pooled VM's output, contiguous, and more than before had. */
  const continues = (outOfVm: string): boolean => {
    const t = ticksOf(before + outOfVm);
    return contiguous(t) && t.length > ticksOf(before).length;
  };
  beforeAll(async () => {
    const elf = (await buildMicroGuest()).elf;
    dir = mkdtempSync(join(tmpdir(), "ts-vmm-pool-"));
    let out = "";
    const vm = Vmm.create({ kernel: elf, cmdline: "mode=ticker ticks=1000000 spin=2000000", memMiB: 64 });
    const run = vm.run({ serial: (b) => void (out += Buffer.from(b).toString()) });
    await until(() => ticksOf(out).length > 5);
    await vm.pause();
    snap = join(dir, "vm.snap");
    mem = join(dir, "vm.mem");
    await vm.snapshot({ snapshotPath: snap, memFilePath: mem });
    // The serial ring drains on the main thread after the vCPUs parked: wait until the output
    // has not grown for 100 ms (a fixed 20 ms was too short on a loaded machine: a pooled VM then
    // seemed to skip the ticks that were still in the ring).
    for (let last = -1, t0 = Date.now(); out.length !== last && Date.now() - t0 < 3000; ) {
      last = out.length;
      await new Promise((r) => setTimeout(r, 100));
    }
    before = out;
    vm.stop();
    await run;
    vm.close();
  }, 120_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("a pool of 3 hands out 5 VMs (refilling), ids unique, each continues from the snapshot; close() closes every VM and leaks no fd", async () => {
    await closePrestartedVcpuWorkers();
    const fdsBefore = openFds();
    const outs = new Map<string, string>();
    const pool = await SnapshotPool.create({ snapshotPath: snap, memFilePath: mem, size: 3, serial: (id, b) => outs.set(id, (outs.get(id) ?? "") + Buffer.from(b).toString()) });
    expect(pool.ready).toBe(3);
    const taken: PooledVm[] = [];
    for (let i = 0; i < 5; i++) taken.push(await pool.take());
    expect(new Set(taken.map((v) => v.id)).size).toBe(5);
    expect(taken.slice(0, 3).every((v) => v.fromPool)).toBe(true);
    for (const v of taken) {
      expect(v.vmm.state).toBe("Running");
      expect(v.runningAt).toBeGreaterThanOrEqual(v.requestedAt);
    }
    // Every VM runs on its own from the snapshot's next tick.
    await until(() => taken.every((v) => ticksOf(outs.get(v.id) ?? "").length >= 3));
    for (const v of taken) {
      expect(continues(outs.get(v.id)!), `${v.id}: before ends ${JSON.stringify(before.slice(-60))}, then ${JSON.stringify(outs.get(v.id)!.slice(0, 400))}`).toBe(true);
    }
    // Refilled to its size in the background.
    await until(() => pool.ready === 3);
    const s = pool.stats();
    expect(s).toMatchObject({ running: 5, taken: 5, refillFailures: 0 });
    expect(pool.list().map((v) => v.id)).toEqual(taken.map((v) => v.id));
    // Releasing one stops and closes it; its id is gone for good.
    const r = await pool.release(taken[0]!.id);
    expect(r.reason).toBe("Stopped");
    expect(taken[0]!.vmm.state).toBe("Stopped");
    expect(() => taken[0]!.vmm.memory).toThrow(expect.objectContaining({ code: "InvalidState" }));
    expect(pool.get(taken[0]!.id)).toBeUndefined();
    expect(await codeOf(pool.release(taken[0]!.id))).toBe("UnknownVm");
    const sixth = await pool.take();
    expect(taken.map((v) => v.id)).not.toContain(sixth.id);
    taken.push(sixth);
    // Closing the pool closes every VM, running or ready.
    await pool.close();
    for (const v of taken) {
      expect((await v.result).reason).toBe("Stopped");
      expect(v.vmm.state).toBe("Stopped");
      expect(() => v.vmm.memory).toThrow(expect.objectContaining({ code: "InvalidState" }));
    }
    expect(pool.stats()).toMatchObject({ ready: 0, running: 0 });
    expect(await codeOf(pool.take())).toBe("InvalidState");
    await closePrestartedVcpuWorkers();
    // Every fd the pool's VMs had (KVM, VM, vCPU, eventfds, the memory file) is closed again
    // (worker threads' own loop fds go when they have exited, hence the wait).
    await until(() => openFds() <= fdsBefore, { ms: 10_000 }).catch(() => undefined);
    expect(openFds()).toBeLessThanOrEqual(fdsBefore);
  });

  it("a restore reuses a state it checked only for the very same bytes: a file rewritten at once (same size, same inode) is checked again", async () => {
    const path = join(dir, "rewritten.snap");
    const good = readFileSync(snap);
    const flipped = Buffer.from(good);
    flipped[good.length >> 1] = flipped[good.length >> 1]! ^ 1;
    const restore = (): string => {
      try {
        Vmm.restore({ snapshotPath: path, memFilePath: mem }).close();
        return "ok";
      } catch (e) {
        return e instanceof VmmError ? `${e.code}: ${e.message}` : String(e);
      }
    };
    for (let i = 0; i < 3; i++) {
      writeFileSync(path, good);
      expect(restore()).toBe("ok");
      expect(restore()).toBe("ok"); // from the cache
      writeFileSync(path, flipped); // within the same jiffy: file times would not tell
      expect(restore()).toMatch(/^SnapshotInvalid: .*CRC-64 mismatch/);
    }
    // whenRunning() of a VM closed before it ran rejects (nothing waits forever).
    const unrun = Vmm.restore({ snapshotPath: snap, memFilePath: mem });
    const running = unrun.whenRunning();
    unrun.close();
    await expect(running).rejects.toMatchObject({ code: "InvalidState" });
    // The memory file is checked at every restore, cached state or not.
    writeFileSync(path, good);
    expect(restore()).toBe("ok");
    const short = join(dir, "short.mem");
    writeFileSync(short, Buffer.alloc(4096));
    expect(((): string => {
      try {
        Vmm.restore({ snapshotPath: path, memFilePath: short }).close();
        return "ok";
      } catch (e) {
        return (e as VmmError).code;
      }
    })()).toBe("SnapshotInvalid");
  });

  it("is bounded: maxRunning refuses with PoolFull, bad options and a bad snapshot are refused", async () => {
    const pool = await SnapshotPool.create({ snapshotPath: snap, memFilePath: mem, size: 1, maxRunning: 2 });
    const a = await pool.take();
    const b = await pool.take();
    expect(await codeOf(pool.take())).toBe("PoolFull");
    await pool.release(a.id);
    const c = await pool.take(); // room again
    expect([a.id, b.id]).not.toContain(c.id);
    await pool.close();
    await pool.close(); // idempotent
    expect(await codeOf(SnapshotPool.create({ snapshotPath: snap, memFilePath: mem, size: 0 }))).toBe("InvalidConfig");
    expect(await codeOf(SnapshotPool.create({ snapshotPath: snap, memFilePath: mem, size: 1, maxRunning: 1.5 }))).toBe("InvalidConfig");
    const bad = join(dir, "bad.snap");
    const bytes = Buffer.from(readFileSync(snap));
    bytes[100] = bytes[100]! ^ 1;
    writeFileSync(bad, bytes);
    expect(await codeOf(SnapshotPool.create({ snapshotPath: bad, memFilePath: mem, size: 2 }))).toBe("SnapshotInvalid");
    await closePrestartedVcpuWorkers();
  });

  it("ts-vmm pool: PUT /vms answers with an id once the guest runs, its serial output goes to DIR/ID.log; GET, DELETE, errors; SIGTERM stops every VM", async () => {
    const logs = mkdtempSync(join(dir, "logs-"));
    const sock = join(dir, "pool.sock");
    const p = spawn(process.execPath, [CLI, "pool", "--snapshot", `${snap},mem=${mem}`, "--size", "2", "--api-sock", sock, "--log-dir", logs, "--max-running", "3"], { stdio: ["ignore", "pipe", "pipe"] });
    let err = "";
    p.stderr.on("data", (b: Buffer) => (err += b.toString()));
    const exited = new Promise<number | null>((r) => p.on("exit", r));
    try {
      await until(() => err.includes("pool ready") || p.exitCode !== null);
      expect(err).toContain("pool ready: 2 VMs");
      const root = await http(sock, "GET", "/");
      expect(root.status).toBe(200);
      expect(root.json).toMatchObject({ ready: 2, running: 0, taken: 0, snapshot_path: snap });
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const a = await http(sock, "PUT", "/vms", i === 0 ? undefined : {});
        expect(a.status, a.text).toBe(201);
        const body = a.json as { id: string; state: string; log_path: string; request_to_running_ms: number };
        expect(body.state).toBe("Running");
        expect(body.log_path).toBe(join(logs, `${body.id}.log`));
        expect(body.request_to_running_ms).toBeGreaterThanOrEqual(0);
        ids.push(body.id);
      }
      expect(new Set(ids).size).toBe(3);
      expect(faultOf(await http(sock, "PUT", "/vms"))).toMatch(/limit \(maxRunning 3\)/);
      for (const id of ids) {
        await until(() => ticksOf(readFileSync(join(logs, `${id}.log`), "utf8")).length >= 2);
        const log = readFileSync(join(logs, `${id}.log`), "utf8");
        expect(continues(log), `${id}: before ends ${JSON.stringify(before.slice(-60))}, then ${JSON.stringify(log.slice(0, 600))}`).toBe(true);
      }
      const list = await http(sock, "GET", "/vms");
      expect((list.json as { vms: { id: string }[] }).vms.map((v) => v.id)).toEqual(ids);
      expect((await http(sock, "GET", `/vms/${ids[1]!}`)).json).toMatchObject({ id: ids[1], state: "Running" });
      const del = await http(sock, "DELETE", `/vms/${ids[0]!}`);
      expect(del.status).toBe(200);
      expect(del.json).toMatchObject({ id: ids[0], reason: "Stopped" });
      expect((await http(sock, "DELETE", `/vms/${ids[0]!}`)).status).toBe(404);
      expect((await http(sock, "GET", `/vms/${ids[0]!}`)).status).toBe(404);
      // The stopped VM's log stops growing (its fd is closed).
      const size0 = readFileSync(join(logs, `${ids[0]!}.log`)).length;
      await new Promise((r) => setTimeout(r, 50));
      expect(readFileSync(join(logs, `${ids[0]!}.log`)).length).toBe(size0);
      const bad = await http(sock, "PUT", "/vms", { vcpus: 2 });
      expect(bad.status).toBe(400);
      expect(faultOf(bad)).toMatch(/empty JSON object/);
      expect((await http(sock, "PUT", "/vms", "{")).status).toBe(400);
      expect((await http(sock, "POST", "/vms")).status).toBe(405);
      expect((await http(sock, "GET", "/nothing")).status).toBe(404);
      expect((await http(sock, "GET", "/vms/../x")).status).toBe(404);
      expect((await http(sock, "PUT", "/vms", "x".repeat(5000))).status).toBe(400);
      p.kill("SIGTERM");
      expect(await exited).toBe(130);
      expect(err).toMatch(/pool stopped by SIGTERM: 2 running VMs stopped, 3 handed out/);
      expect(existsSync(sock)).toBe(false);
    } finally {
      if (p.exitCode === null) p.kill("SIGKILL");
    }
  });
});
