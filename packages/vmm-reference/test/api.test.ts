// The API over a real Unix socket with plain HTTP, against a fake backend
// (the real VMM is in api-vmm.test.ts): every path's success, a malformed
// body, an unknown field and the wrong state, with Firecracker's statuses and
// fault messages.
import { mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  ApiFault,
  POST_BOOT_MESSAGE,
  PRE_BOOT_MESSAGE,
  startApiServer,
  type ApiBackend,
  type ApiServer,
  type ApiVmState,
} from "../src/api/index.js";
import { faultOf, http } from "./api-http.js";

/** Records every call; state as a VMM would have it. */
class FakeBackend implements ApiBackend {
  state: ApiVmState = "NotStarted";
  readonly calls: [string, unknown?][] = [];
  balloonTarget = 0;
  start(opts: unknown): Promise<void> {
    this.calls.push(["start", opts]);
    this.state = "Running";
    return Promise.resolve();
  }
  load(opts: unknown): Promise<void> {
    this.calls.push(["load", opts]);
    this.state = "Paused";
    return Promise.resolve();
  }
  pause(): Promise<void> {
    this.calls.push(["pause"]);
    this.state = "Paused";
    return Promise.resolve();
  }
  resume(): Promise<void> {
    if (this.state !== "Paused") return Promise.reject(new ApiFault("not paused"));
    this.calls.push(["resume"]);
    this.state = "Running";
    return Promise.resolve();
  }
  snapshot(opts: unknown): Promise<void> {
    this.calls.push(["snapshot", opts]);
    return Promise.resolve();
  }
  sendCtrlAltDel(): void {
    this.calls.push(["ctrlAltDel"]);
  }
  setBalloonTarget(mib: number): void {
    this.calls.push(["balloonTarget", mib]);
    this.balloonTarget = mib;
  }
  setBalloonStatsInterval(s: number): void {
    this.calls.push(["statsInterval", s]);
  }
  balloonStatus(): { targetMib: number; actualMib: number; stats: Record<string, number> } {
    return { targetMib: this.balloonTarget, actualMib: 1, stats: { freeMemory: 4096, oomKills: 2 } };
  }
  updateRateLimiters(index: number, update: unknown): void {
    this.calls.push(["rateLimiters", { index, update }]);
  }
  metrics(): unknown {
    return { exits: { IoOut: 3 } };
  }
  flushMetrics(): void {
    this.calls.push(["flush"]);
  }
  cpuFeatures(opts: unknown): unknown {
    return { asked: opts };
  }
}

let dir = "";
let sock = "";
let kernel = "";
let disk = "";
let backend: FakeBackend;
let server: ApiServer;
const req = (method: string, path: string, body?: unknown) => http(sock, method, path, body);

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "ts-vmm-api-"));
  sock = join(dir, "api.sock");
  kernel = join(dir, "vmlinux");
  disk = join(dir, "disk.img");
  writeFileSync(kernel, "not really a kernel");
  writeFileSync(disk, Buffer.alloc(4096));
  backend = new FakeBackend();
  server = await startApiServer({ socketPath: sock, backend, version: "1.2.3" });
});
afterEach(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The valid body of every pre-boot PUT/PATCH, by "METHOD path". */
const preBoot = (): [string, string, unknown][] => [
  ["PUT", "/machine-config", { vcpu_count: 2, mem_size_mib: 256, huge_pages: "None", track_dirty_pages: false }],
  ["PATCH", "/machine-config", { mem_size_mib: 128 }],
  ["PUT", "/boot-source", { kernel_image_path: kernel, boot_args: "console=ttyS0" }],
  ["PUT", "/drives/rootfs", { drive_id: "rootfs", path_on_host: disk, is_root_device: true, is_read_only: false, rate_limiter: { ops: { size: 100, refill_time: 1000 } } }],
  ["PUT", "/network-interfaces/eth0", { iface_id: "eth0", host_dev_name: "tap7", guest_mac: "06:00:ac:10:00:02", tx_rate_limiter: { bandwidth: { size: 1000, refill_time: 100, one_time_burst: 10 } } }],
  ["PUT", "/vsock", { guest_cid: 3, uds_path: join(dir, "v.sock") }],
  ["PUT", "/entropy", {}],
  ["PUT", "/balloon", { amount_mib: 16, deflate_on_oom: true, stats_polling_interval_s: 1 }],
  ["PUT", "/metrics", { metrics_path: join(dir, "metrics.json") }],
];

describe("API pre-boot configuration over the socket", () => {
  it("GET / and GET /version before the start", async () => {
    expect(await req("GET", "/")).toMatchObject({ status: 200, json: { id: "anonymous-instance", state: "Not started", vmm_version: "1.2.3", app_name: "ts-vmm" } });
    expect(await req("GET", "/version")).toMatchObject({ status: 200, json: { firecracker_version: "1.2.3" } });
  });

  it("GET /machine-config has Firecracker's defaults before a PUT", async () => {
    expect(await req("GET", "/machine-config")).toMatchObject({ status: 200, json: { vcpu_count: 1, mem_size_mib: 128, smt: false, track_dirty_pages: false, huge_pages: "None" } });
  });

  it("every pre-boot path answers 204 without a body, and InstanceStart hands the backend the VmConfig they describe", async () => {
    for (const [m, p, b] of preBoot()) {
      const a = await req(m, p, b);
      expect(a, `${m} ${p}: ${a.text}`).toMatchObject({ status: 204, text: "" });
    }
    const cfg = (await req("GET", "/vm/config")).json as Record<string, unknown>;
    expect(cfg["machine-config"]).toMatchObject({ vcpu_count: 2, mem_size_mib: 128 });
    expect(cfg["boot-source"]).toEqual({ kernel_image_path: kernel, boot_args: "console=ttyS0" });
    expect(cfg["drives"]).toHaveLength(1);
    expect(cfg["network-interfaces"]).toHaveLength(1);
    expect(cfg["metrics"]).toEqual({ metrics_path: join(dir, "metrics.json") });
    expect(await req("GET", "/balloon")).toMatchObject({ status: 200, json: { amount_mib: 16, deflate_on_oom: true, stats_polling_interval_s: 1 } });
    expect(await req("PUT", "/actions", { action_type: "InstanceStart" })).toMatchObject({ status: 204 });
    const [name, opts] = backend.calls[0]!;
    expect(name).toBe("start");
    expect(opts).toEqual({
      trackDirtyPages: false,
      metricsPath: join(dir, "metrics.json"),
      config: {
        kernel,
        cmdline: "console=ttyS0 root=/dev/vda rw",
        memMiB: 128,
        memory: { hugePages: "none" },
        vcpus: 2,
        cpuTemplate: "host",
        virtio: [
          { kind: "blk", path: disk, readOnly: false, engine: "sync", rateLimiter: { ops: { size: 100, refillTimeMs: 1000 } } },
          { kind: "net", tap: "tap7", mac: "06:00:ac:10:00:02", txRateLimiter: { bandwidth: { size: 1000, refillTimeMs: 100, oneTimeBurst: 10 } } },
          { kind: "vsock", cid: 3, udsPath: join(dir, "v.sock") },
          { kind: "rng" },
          { kind: "balloon", amountMib: 16, deflateOnOom: true, statsIntervalS: 1, freePageReporting: false },
        ],
      },
    });
    expect((await req("GET", "/")).json).toMatchObject({ state: "Running" });
  });

  it("a malformed body is 400 with serde's shape of message, on every body-taking path", async () => {
    const paths = [...preBoot().map(([m, p]) => [m, p]), ["PUT", "/actions"], ["PATCH", "/vm"], ["PUT", "/snapshot/create"], ["PUT", "/snapshot/load"], ["PATCH", "/balloon"], ["PATCH", "/balloon/statistics"], ["PATCH", "/drives/rootfs"], ["PATCH", "/network-interfaces/eth0"]];
    for (const [m, p] of paths) {
      const a = await req(m!, p!, '{"vcpu_count": ');
      expect(a.status, `${m} ${p}`).toBe(400);
      expect(faultOf(a), `${m} ${p}`).toMatch(/^An error occurred when deserializing the json body of a request: .+\.$/);
    }
  });

  it("an unknown field is refused on every body-taking path, naming it and the known ones", async () => {
    for (const [m, p, b] of preBoot()) {
      const a = await req(m, p, { ...(b as object), bogus: 1 });
      expect(a.status, `${m} ${p}`).toBe(400);
      expect(faultOf(a), `${m} ${p}`).toMatch(/^An error occurred when deserializing the json body of a request: unknown field `bogus`, expected one of `/);
    }
    for (const [m, p, b] of [["PUT", "/actions", { action_type: "InstanceStart" }], ["PATCH", "/vm", { state: "Paused" }], ["PATCH", "/balloon", { amount_mib: 1 }]] as const) {
      expect(faultOf(await req(m, p, { ...b, extra: true }))).toContain("unknown field `extra`");
    }
    // Nested objects are strict too.
    const nested = await req("PUT", "/drives/d", { drive_id: "d", path_on_host: disk, is_root_device: false, is_read_only: true, rate_limiter: { ops: { size: 1, refill_time: 1, rate: 3 } } });
    expect(faultOf(nested)).toBe("An error occurred when deserializing the json body of a request: unknown field `rate`, expected one of `size`, `one_time_burst`, `refill_time` at `rate_limiter.ops`.");
  });

  it("missing fields, wrong types and unknown enum values are refused with the field named", async () => {
    expect(faultOf(await req("PUT", "/machine-config", { vcpu_count: 1 }))).toBe("An error occurred when deserializing the json body of a request: missing field `mem_size_mib`.");
    expect(faultOf(await req("PUT", "/machine-config", { vcpu_count: "1", mem_size_mib: 64 }))).toContain("invalid type: string \"1\", expected number at `vcpu_count`");
    expect(faultOf(await req("PUT", "/actions", { action_type: "Reboot" }))).toContain("unknown variant \"Reboot\", expected one of `FlushMetrics`, `InstanceStart`, `SendCtrlAltDel`");
    expect(faultOf(await req("PUT", "/machine-config", { vcpu_count: 1.5, mem_size_mib: 64 }))).toContain("vcpu_count");
    expect(faultOf(await req("PUT", "/machine-config", [1, 2]))).toContain("invalid type: sequence");
  });

  it("runtime calls before the start are refused with Firecracker's pre-boot message", async () => {
    const runtime: [string, string, unknown?][] = [
      ["PATCH", "/vm", { state: "Paused" }],
      ["PATCH", "/vm", { state: "Resumed" }],
      ["PUT", "/actions", { action_type: "SendCtrlAltDel" }],
      ["PUT", "/actions", { action_type: "FlushMetrics" }],
      ["PUT", "/snapshot/create", { snapshot_path: "/tmp/s", mem_file_path: "/tmp/m" }],
      ["PATCH", "/balloon", { amount_mib: 1 }],
      ["GET", "/balloon/statistics"],
      ["PATCH", "/balloon/statistics", { stats_polling_interval_s: 2 }],
      ["PATCH", "/drives/rootfs", { drive_id: "rootfs", rate_limiter: {} }],
      ["PATCH", "/network-interfaces/eth0", { iface_id: "eth0" }],
      ["GET", "/metrics"],
    ];
    for (const [m, p, b] of runtime) {
      const a = await req(m, p, b);
      expect(a, `${m} ${p}`).toMatchObject({ status: 400, json: { fault_message: PRE_BOOT_MESSAGE } });
    }
    expect(backend.calls).toEqual([]);
  });

  it("InstanceStart without a boot source, a second root drive, odd vCPUs with SMT, an oversized balloon: 400", async () => {
    expect(faultOf(await req("PUT", "/actions", { action_type: "InstanceStart" }))).toBe("Cannot start microvm without kernel configuration.");
    await req("PUT", "/drives/a", { drive_id: "a", path_on_host: disk, is_root_device: true, is_read_only: true });
    expect(faultOf(await req("PUT", "/drives/b", { drive_id: "b", path_on_host: disk, is_root_device: true, is_read_only: true }))).toBe("A root block device already exists!");
    expect(faultOf(await req("PUT", "/machine-config", { vcpu_count: 3, mem_size_mib: 64, smt: true }))).toBe("The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.");
    expect((await req("PUT", "/machine-config", { vcpu_count: 1, mem_size_mib: 64, smt: true })).status).toBe(204);
    expect(faultOf(await req("PUT", "/machine-config", { vcpu_count: 1, mem_size_mib: 63, huge_pages: "2M" }))).toContain("multiple of 2 MiB");
    expect(faultOf(await req("PUT", "/machine-config", { vcpu_count: 1, mem_size_mib: 64, cpu_template: "T2" }))).toBe("The requested operation is not supported: the CPU template T2 is not available on this VMM (use None, host or baseline).");
    expect(faultOf(await req("PUT", "/boot-source", { kernel_image_path: join(dir, "missing") }))).toMatch(/^The kernel file .*missing cannot be opened: ENOENT/);
    await req("PUT", "/boot-source", { kernel_image_path: kernel });
    await req("PUT", "/balloon", { amount_mib: 65, deflate_on_oom: false });
    expect(faultOf(await req("PUT", "/actions", { action_type: "InstanceStart" }))).toBe("Amount of pages requested is too large.");
    expect(backend.calls).toEqual([]);
  });

  it("path ids: empty, non-alphanumeric, or different from the body's are refused", async () => {
    const d = { drive_id: "x", path_on_host: disk, is_root_device: false, is_read_only: true };
    expect(faultOf(await req("PUT", "/drives/", d))).toBe("The ID cannot be empty.");
    expect(faultOf(await req("PUT", "/drives/a-b", { ...d, drive_id: "a-b" }))).toBe("API Resource IDs can only contain alphanumeric characters and underscores.");
    expect(faultOf(await req("PUT", "/drives/y", d))).toBe("The id from the path does not match the id from the body!");
    expect(faultOf(await req("PUT", "/network-interfaces/y", { iface_id: "x", host_dev_name: "tap0" }))).toBe("The id from the path does not match the id from the body!");
  });

  it("unknown paths and methods, a GET with a body, an empty PUT or PATCH, an oversized body: 400", async () => {
    expect(faultOf(await req("GET", "/nope"))).toBe("Invalid request method and/or path: GET /nope.");
    expect(faultOf(await req("DELETE", "/machine-config"))).toBe("Invalid request method and/or path: DELETE /machine-config.");
    expect(faultOf(await req("POST", "/actions", { action_type: "InstanceStart" }))).toBe("Invalid request method and/or path: POST /actions.");
    expect(faultOf(await req("GET", "/machine-config", "{}"))).toBe("GET request cannot have a body.");
    expect(faultOf(await req("PUT", "/machine-config"))).toBe("Empty PUT request.");
    expect(faultOf(await req("PATCH", "/vm"))).toBe("Empty PATCH request.");
    const big = await req("PUT", "/boot-source", JSON.stringify({ kernel_image_path: kernel, boot_args: "x".repeat(60_000) }));
    expect(big.status).toBe(400);
    expect(faultOf(big)).toMatch(/^Request payload with size \d+ is larger than the limit of 51200 allowed by server\.$/);
    // The server still answers after it.
    expect((await req("GET", "/")).status).toBe(200);
  });

  it("snapshot/load: pre-boot only, refused after boot-specific configuration, exactly one memory source", async () => {
    expect(faultOf(await req("PUT", "/snapshot/load", { snapshot_path: "/s" }))).toContain("exactly one of `mem_file_path` and `mem_backend`");
    expect(faultOf(await req("PUT", "/snapshot/load", { snapshot_path: "/s", mem_backend: { backend_type: "Uffd", backend_path: "/u" } }))).toContain("Uffd");
    expect(await req("PUT", "/snapshot/load", { snapshot_path: "/s", mem_backend: { backend_type: "File", backend_path: "/m" }, resume_vm: true })).toMatchObject({ status: 204 });
    expect(backend.calls).toEqual([["load", { snapshotPath: "/s", memFilePath: "/m", enableDiffSnapshots: false, resumeVm: true, metricsPath: undefined }]]);
    expect(faultOf(await req("PUT", "/snapshot/load", { snapshot_path: "/s", mem_file_path: "/m" }))).toBe(POST_BOOT_MESSAGE);
  });

  it("snapshot/load after PUT /machine-config is refused as Firecracker refuses it", async () => {
    await req("PUT", "/machine-config", { vcpu_count: 1, mem_size_mib: 64 });
    expect(faultOf(await req("PUT", "/snapshot/load", { snapshot_path: "/s", mem_file_path: "/m" }))).toBe("Load microVM snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.");
  });

  it("GET /cpu-features reports for the configured vCPUs and template", async () => {
    await req("PUT", "/machine-config", { vcpu_count: 4, mem_size_mib: 64, cpu_template: "baseline" });
    expect(await req("GET", "/cpu-features")).toMatchObject({ status: 200, json: { asked: { template: "baseline", vcpus: 4 } } });
  });
});

describe("API after InstanceStart", () => {
  beforeEach(async () => {
    for (const [m, p, b] of preBoot()) expect((await req(m, p, b)).status).toBe(204);
    expect((await req("PUT", "/actions", { action_type: "InstanceStart" })).status).toBe(204);
    backend.calls.length = 0;
  });

  it("every pre-boot-only call is refused with Firecracker's post-boot message, and nothing reaches the backend", async () => {
    for (const [m, p, b] of [...preBoot(), ["PUT", "/actions", { action_type: "InstanceStart" }] as [string, string, unknown], ["PUT", "/snapshot/load", { snapshot_path: "/s", mem_file_path: "/m" }] as [string, string, unknown]]) {
      const a = await req(m, p, b);
      expect(a, `${m} ${p}`).toMatchObject({ status: 400, json: { fault_message: POST_BOOT_MESSAGE } });
    }
    expect(backend.calls).toEqual([]);
  });

  it("PATCH /vm pauses and resumes; snapshot/create only while paused", async () => {
    expect(faultOf(await req("PUT", "/snapshot/create", { snapshot_path: "/s", mem_file_path: "/m" }))).toContain("must be Paused first");
    expect((await req("PATCH", "/vm", { state: "Paused" })).status).toBe(204);
    expect((await req("GET", "/")).json).toMatchObject({ state: "Paused" });
    expect((await req("PUT", "/snapshot/create", { snapshot_path: "/s", mem_file_path: "/m", snapshot_type: "Diff" })).status).toBe(204);
    expect((await req("PATCH", "/vm", { state: "Resumed" })).status).toBe(204);
    expect(faultOf(await req("PATCH", "/vm", { state: "Resumed" }))).toBe("not paused");
    expect(faultOf(await req("PATCH", "/vm", { state: "Stopped" }))).toContain("unknown variant \"Stopped\"");
    expect(backend.calls).toEqual([["pause"], ["snapshot", { snapshotPath: "/s", memFilePath: "/m", type: "Diff" }], ["resume"]]);
  });

  it("actions SendCtrlAltDel and FlushMetrics reach the backend", async () => {
    expect((await req("PUT", "/actions", { action_type: "SendCtrlAltDel" })).status).toBe(204);
    expect((await req("PUT", "/actions", { action_type: "FlushMetrics" })).status).toBe(204);
    expect(backend.calls).toEqual([["ctrlAltDel"], ["flush"]]);
  });

  it("balloon: PATCH the target, GET the config and the statistics in Firecracker's names, PATCH the interval", async () => {
    expect((await req("PATCH", "/balloon", { amount_mib: 32 })).status).toBe(204);
    expect((await req("GET", "/balloon")).json).toMatchObject({ amount_mib: 32, deflate_on_oom: true });
    expect(await req("GET", "/balloon/statistics")).toMatchObject({ status: 200, json: { target_pages: 32 * 256, actual_pages: 256, target_mib: 32, actual_mib: 1, free_memory: 4096, oom_kill: 2 } });
    expect((await req("PATCH", "/balloon/statistics", { stats_polling_interval_s: 5 })).status).toBe(204);
    expect(faultOf(await req("PATCH", "/balloon/statistics", { stats_polling_interval_s: 0 }))).toBe("Cannot enable/disable the statistics after boot.");
    expect(faultOf(await req("PATCH", "/balloon", { amount_mib: -1 }))).toContain("amount_mib");
    expect(backend.calls).toEqual([["balloonTarget", 32], ["statsInterval", 5]]);
  });

  it("PATCH drives and network interfaces update rate limiters (size 0 removes a bucket); unknown ids are refused", async () => {
    expect((await req("PATCH", "/drives/rootfs", { drive_id: "rootfs", rate_limiter: { ops: { size: 0, refill_time: 0 }, bandwidth: { size: 10, refill_time: 5 } } })).status).toBe(204);
    expect((await req("PATCH", "/network-interfaces/eth0", { iface_id: "eth0", rx_rate_limiter: { ops: { size: 7, refill_time: 9 } } })).status).toBe(204);
    expect(backend.calls).toEqual([
      ["rateLimiters", { index: 0, update: { kind: "blk", rateLimiter: { bandwidth: { size: 10, refillTimeMs: 5 }, ops: null } } }],
      ["rateLimiters", { index: 1, update: { kind: "net", rx: { ops: { size: 7, refillTimeMs: 9 } } } }],
    ]);
    expect(faultOf(await req("PATCH", "/drives/other", { drive_id: "other" }))).toBe("Invalid block device ID: other.");
    expect(faultOf(await req("PATCH", "/drives/rootfs", { drive_id: "rootfs", path_on_host: "/x" }))).toContain("path_on_host");
    expect(faultOf(await req("PATCH", "/drives/rootfs", { drive_id: "rootfs", is_read_only: true }))).toContain("unknown field `is_read_only`");
  });

  it("GET /metrics and GET /vm/config after the start", async () => {
    expect(await req("GET", "/metrics")).toMatchObject({ status: 200, json: { exits: { IoOut: 3 } } });
    expect((await req("GET", "/vm/config")).json).toMatchObject({ "machine-config": { vcpu_count: 2 }, entropy: {} });
  });
});

describe("API socket file", () => {
  it("a stale socket file is replaced; a live one or a regular file is refused; close removes ours", async () => {
    const path = join(dir, "other.sock");
    // Live: another listener on the path.
    const live = createServer();
    await new Promise<void>((r) => live.listen(path, r));
    await expect(startApiServer({ socketPath: path, backend: new FakeBackend() })).rejects.toMatchObject({ code: "SocketInUse" });
    await new Promise<void>((r) => live.close(() => r()));
    const { spawnSync } = await import("node:child_process");
    // A process that binds the socket and dies without cleaning up.
    spawnSync(process.execPath, ["-e", `require("net").createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, "SIGKILL"))`]);
    expect(existsSync(path)).toBe(true);
    const s = await startApiServer({ socketPath: path, backend: new FakeBackend() });
    expect((await http(path, "GET", "/")).status).toBe(200);
    await s.close();
    expect(existsSync(path)).toBe(false);
    const file = join(dir, "regular");
    writeFileSync(file, "mine");
    await expect(startApiServer({ socketPath: file, backend: new FakeBackend() })).rejects.toMatchObject({ code: "PathNotSocket" });
    expect(existsSync(file)).toBe(true);
  });
});
