// The API's routes: method and path to a handler, the body parsed and checked
// (schemas.ts), the pre-boot / post-boot rule of each route, and the answer
// (204 without a body, 200 with one, 400 with {"fault_message": ...}).
// Requests are handled one at a time, in arrival order, as Firecracker's API
// thread hands them to its VMM thread: a PUT /actions InstanceStart that takes
// a while is not overtaken by a PATCH /vm.
import type { z } from "zod";
import { VmmError } from "../error.js";
import {
  ApiFault,
  NOT_SUPPORTED_PREFIX,
  POST_BOOT_MESSAGE,
  PRE_BOOT_MESSAGE,
  type ApiBackend,
  type ApiVmState,
} from "./backend.js";
import { limiterUpdateOf, PrebootConfig } from "./preboot.js";
import {
  ActionSchema,
  BalloonSchema,
  BalloonStatsUpdateSchema,
  BalloonUpdateSchema,
  BootSourceSchema,
  DriveSchema,
  EntropySchema,
  MachineConfigPatchSchema,
  MachineConfigSchema,
  MetricsSchema,
  NetworkInterfaceSchema,
  parseBody,
  PartialDriveSchema,
  PartialNetworkInterfaceSchema,
  SnapshotCreateSchema,
  SnapshotLoadSchema,
  VmStateSchema,
  VsockSchema,
} from "./schemas.js";

/** An answer: the status and, for 200 and errors, the JSON body. */
export interface ApiResponse {
  readonly status: number;
  readonly body?: unknown;
}

/** Options of {@link ApiRouter}. */
export interface ApiRouterOptions {
  /** What runs the VM. */
  readonly backend: ApiBackend;
  /** The version `GET /version` and `GET /` report. */
  readonly version: string;
  /** The instance id `GET /` reports (default "anonymous-instance", as Firecracker's). */
  readonly id?: string;
  /**
   * The VM was started without the API (`ts-vmm run --api-sock`): the
   * configuration it was started with, and the API id of each virtio device
   * by index (`drive:<id>`, `net:<id>`, ...).
   * @internal
   */
  readonly started?: { readonly config: PrebootConfig; readonly deviceIds: readonly string[] };
}

type Handler = (body: unknown, id: string | undefined) => Promise<ApiResponse> | ApiResponse;

const NO_CONTENT: ApiResponse = { status: 204 };
const ok = (body: unknown): ApiResponse => ({ status: 200, body });
const fault = (message: string, status = 400): ApiResponse => ({ status, body: { fault_message: message } });

/** Firecracker's check of an id from the path: not empty, letters, digits and `_` only. */
function checkedId(id: string | undefined): string {
  if (id === undefined || id === "") throw new ApiFault("The ID cannot be empty.");
  if (!/^[\p{L}\p{N}_]+$/u.test(id)) throw new ApiFault("API Resource IDs can only contain alphanumeric characters and underscores.");
  return id;
}

function body<T>(schema: z.ZodType<T>, raw: unknown): T {
  const r = parseBody(schema, raw);
  if (!r.ok) throw new ApiFault(`An error occurred when deserializing the json body of a request: ${r.message}.`);
  return r.value;
}

/**
 * Firecracker's statistics names for ours (`swapIn` → `swap_in`, and the
 * few it spells differently).
 */
const STAT_NAMES: Record<string, string> = {
  swapIn: "swap_in", swapOut: "swap_out", majorFaults: "major_faults", minorFaults: "minor_faults",
  freeMemory: "free_memory", totalMemory: "total_memory", availableMemory: "available_memory", diskCaches: "disk_caches",
  hugetlbAllocations: "hugetlb_allocations", hugetlbFailures: "hugetlb_failures", oomKills: "oom_kill", allocStalls: "alloc_stall",
  asyncScans: "async_scan", directScans: "direct_scan", asyncReclaims: "async_reclaim", directReclaims: "direct_reclaim",
};

/** Our statistic name in Firecracker's spelling. */
export function firecrackerStatName(name: string): string {
  return STAT_NAMES[name] ?? name;
}

/**
 * Routes API requests, keeps the pre-boot configuration, and calls the
 * backend once the VM exists.
 */
export class ApiRouter {
  readonly #backend: ApiBackend;
  readonly #version: string;
  readonly #id: string;
  readonly #config: PrebootConfig;
  #started: boolean;
  #deviceIds: readonly string[] = [];
  #queue: Promise<unknown> = Promise.resolve();
  readonly #routes: ReadonlyMap<string, Handler>;

  constructor(opts: ApiRouterOptions) {
    this.#backend = opts.backend;
    this.#version = opts.version;
    this.#id = opts.id ?? "anonymous-instance";
    this.#config = opts.started?.config ?? new PrebootConfig();
    this.#started = opts.started !== undefined;
    this.#deviceIds = opts.started?.deviceIds ?? [];
    this.#routes = this.#table();
  }

  /** The state GET / reports. */
  get state(): ApiVmState {
    return this.#started ? this.#backend.state : "NotStarted";
  }

  /**
   * Answers one request. `rawBody` is the request body as received
   * (undefined or empty: none). Never throws; requests are answered one at a
   * time in the order they arrive.
   */
  handle(method: string, url: string, rawBody: string | undefined): Promise<ApiResponse> {
    const next = this.#queue.then(() => this.#handle(method, url, rawBody));
    this.#queue = next.catch(() => undefined);
    return next;
  }

  async #handle(method: string, url: string, rawBody: string | undefined): Promise<ApiResponse> {
    try {
      const path = pathOf(url);
      const segments = path.split("/").filter((s, i) => i > 0 || s !== "");
      const [first = "", ...rest] = segments;
      // Routes are "METHOD /first[/second]" with an id for /drives/{id} and /network-interfaces/{id}.
      let key = `${method} /${first}`;
      let id: string | undefined;
      if (first === "drives" || first === "network-interfaces") {
        if (rest.length > 1) return fault(`Invalid request method and/or path: ${method} ${path}.`);
        id = rest[0] ?? "";
      } else if (rest.length > 0) {
        key += `/${rest.join("/")}`;
      }
      const handler = this.#routes.get(key);
      if (handler === undefined) return fault(`Invalid request method and/or path: ${method} ${path}.`);
      const hasBody = rawBody !== undefined && rawBody.trim() !== "";
      if (method === "GET" && hasBody) return fault("GET request cannot have a body.");
      if (method === "PUT" && !hasBody) return fault("Empty PUT request.");
      if (method === "PATCH" && !hasBody) return fault("Empty PATCH request.");
      let parsed: unknown;
      if (hasBody) {
        try {
          parsed = JSON.parse(rawBody);
        } catch (e) {
          return fault(`An error occurred when deserializing the json body of a request: ${(e as Error).message}.`);
        }
      }
      return await handler(parsed, id);
    } catch (e) {
      if (e instanceof ApiFault) return fault(e.message, e.status);
      if (e instanceof VmmError) return fault(e.message);
      return fault(`Internal server error: ${e instanceof Error ? e.message : String(e)}`, 500);
    }
  }

  #preBoot(): void {
    if (this.#started) throw new ApiFault(POST_BOOT_MESSAGE);
  }

  #postBoot(): void {
    if (!this.#started) throw new ApiFault(PRE_BOOT_MESSAGE);
  }

  #deviceIndex(kind: "drive" | "net", id: string): number {
    const i = this.#deviceIds.indexOf(`${kind}:${id}`);
    if (i < 0) throw new ApiFault(kind === "drive" ? `Invalid block device ID: ${id}.` : `Invalid network interface ID: ${id}.`);
    return i;
  }

  #table(): Map<string, Handler> {
    const c = this.#config;
    const b = this.#backend;
    const r = new Map<string, Handler>();
    r.set("GET /", () => ok({
      id: this.#id,
      state: ({ NotStarted: "Not started", Running: "Running", Paused: "Paused", Stopped: "Not started" } as const)[this.state],
      vmm_version: this.#version,
      app_name: "ts-vmm",
    }));
    r.set("GET /version", () => ok({ firecracker_version: this.#version }));
    r.set("GET /machine-config", () => ok(c.machineConfigBody()));
    r.set("PUT /machine-config", (raw) => {
      const m = body(MachineConfigSchema, raw);
      this.#preBoot();
      c.setMachineConfig(m, false);
      return NO_CONTENT;
    });
    r.set("PATCH /machine-config", (raw) => {
      const m = body(MachineConfigPatchSchema, raw);
      this.#preBoot();
      c.setMachineConfig(m, true);
      return NO_CONTENT;
    });
    r.set("PUT /boot-source", (raw) => {
      const s = body(BootSourceSchema, raw);
      this.#preBoot();
      c.setBootSource(s);
      return NO_CONTENT;
    });
    r.set("PUT /drives", (raw, pathId) => {
      const id = checkedId(pathId);
      const d = body(DriveSchema, raw);
      if (d.drive_id !== id) throw new ApiFault("The id from the path does not match the id from the body!");
      this.#preBoot();
      c.putDrive(d);
      return NO_CONTENT;
    });
    r.set("PATCH /drives", (raw, pathId) => {
      const id = checkedId(pathId);
      const d = body(PartialDriveSchema, raw);
      if (d.drive_id !== id) throw new ApiFault("The id from the path does not match the id from the body!");
      this.#postBoot();
      const index = this.#deviceIndex("drive", id);
      if (d.path_on_host !== undefined) throw new ApiFault(NOT_SUPPORTED_PREFIX + "changing path_on_host of a running drive is not available on this VMM.");
      if (d.rate_limiter !== undefined) b.updateRateLimiters(index, { kind: "blk", rateLimiter: limiterUpdateOf(d.rate_limiter) });
      return NO_CONTENT;
    });
    r.set("PUT /network-interfaces", (raw, pathId) => {
      const id = checkedId(pathId);
      const n = body(NetworkInterfaceSchema, raw);
      if (n.iface_id !== id) throw new ApiFault("The id from the path does not match the id from the body!");
      this.#preBoot();
      c.putNet(n);
      return NO_CONTENT;
    });
    r.set("PATCH /network-interfaces", (raw, pathId) => {
      const id = checkedId(pathId);
      const n = body(PartialNetworkInterfaceSchema, raw);
      if (n.iface_id !== id) throw new ApiFault("The id from the path does not match the id from the body!");
      this.#postBoot();
      const index = this.#deviceIndex("net", id);
      if (n.rx_rate_limiter !== undefined || n.tx_rate_limiter !== undefined) {
        b.updateRateLimiters(index, {
          kind: "net",
          ...(n.rx_rate_limiter !== undefined ? { rx: limiterUpdateOf(n.rx_rate_limiter) } : {}),
          ...(n.tx_rate_limiter !== undefined ? { tx: limiterUpdateOf(n.tx_rate_limiter) } : {}),
        });
      }
      return NO_CONTENT;
    });
    r.set("PUT /vsock", (raw) => {
      const v = body(VsockSchema, raw);
      this.#preBoot();
      c.setVsock(v);
      return NO_CONTENT;
    });
    r.set("PUT /entropy", (raw) => {
      const e = body(EntropySchema, raw);
      this.#preBoot();
      c.setEntropy(e);
      return NO_CONTENT;
    });
    r.set("GET /balloon", () => {
      const cfg = c.balloon;
      if (cfg === undefined) throw new ApiFault("No balloon device found.");
      if (!this.#started) return ok(cfg);
      const s = b.balloonStatus();
      return ok({ ...cfg, ...(s !== undefined ? { amount_mib: s.targetMib } : {}) });
    });
    r.set("PUT /balloon", (raw) => {
      const v = body(BalloonSchema, raw);
      this.#preBoot();
      c.setBalloon(v);
      return NO_CONTENT;
    });
    r.set("PATCH /balloon", (raw) => {
      const v = body(BalloonUpdateSchema, raw);
      this.#postBoot();
      if (c.balloon === undefined) throw new ApiFault("No balloon device found.");
      b.setBalloonTarget(v.amount_mib);
      c.setBalloon({ ...c.balloon, amount_mib: v.amount_mib });
      return NO_CONTENT;
    });
    r.set("GET /balloon/statistics", () => {
      this.#postBoot();
      const cfg = c.balloon;
      if (cfg === undefined) throw new ApiFault("No balloon device found.");
      if ((cfg.stats_polling_interval_s ?? 0) === 0) throw new ApiFault("Statistics for the balloon device are not enabled");
      const s = b.balloonStatus();
      if (s === undefined) throw new ApiFault("No balloon device found.");
      const stats = Object.fromEntries(Object.entries(s.stats ?? {}).map(([k, v]) => [firecrackerStatName(k), v]));
      return ok({ target_pages: s.targetMib * 256, actual_pages: s.actualMib * 256, target_mib: s.targetMib, actual_mib: s.actualMib, ...stats });
    });
    r.set("PATCH /balloon/statistics", (raw) => {
      const v = body(BalloonStatsUpdateSchema, raw);
      this.#postBoot();
      const cfg = c.balloon;
      if (cfg === undefined) throw new ApiFault("No balloon device found.");
      if (((cfg.stats_polling_interval_s ?? 0) === 0) !== (v.stats_polling_interval_s === 0)) throw new ApiFault("Cannot enable/disable the statistics after boot.");
      b.setBalloonStatsInterval(v.stats_polling_interval_s);
      c.setBalloon({ ...cfg, stats_polling_interval_s: v.stats_polling_interval_s });
      return NO_CONTENT;
    });
    r.set("PUT /actions", async (raw) => {
      const { action_type } = body(ActionSchema, raw);
      if (action_type === "InstanceStart") {
        this.#preBoot();
        const built = c.build();
        await b.start({ config: built.config, trackDirtyPages: c.trackDirtyPages, metricsPath: c.metricsPath });
        this.#started = true;
        this.#deviceIds = built.deviceIds;
        return NO_CONTENT;
      }
      this.#postBoot();
      if (action_type === "SendCtrlAltDel") b.sendCtrlAltDel();
      else b.flushMetrics();
      return NO_CONTENT;
    });
    r.set("PATCH /vm", async (raw) => {
      const { state } = body(VmStateSchema, raw);
      this.#postBoot();
      if (state === "Paused") await b.pause();
      else await b.resume();
      return NO_CONTENT;
    });
    r.set("PUT /snapshot/create", async (raw) => {
      const s = body(SnapshotCreateSchema, raw);
      this.#postBoot();
      if (b.state !== "Paused") throw new ApiFault("Cannot create a snapshot: the microVM must be Paused first (PATCH /vm {\"state\": \"Paused\"}).");
      await b.snapshot({ snapshotPath: s.snapshot_path, memFilePath: s.mem_file_path, type: s.snapshot_type ?? "Full" });
      return NO_CONTENT;
    });
    r.set("PUT /snapshot/load", async (raw) => {
      const s = body(SnapshotLoadSchema, raw);
      this.#preBoot();
      if (c.bootPathConfigured) throw new ApiFault("Load microVM snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.");
      if ((s.mem_file_path === undefined) === (s.mem_backend === undefined)) {
        throw new ApiFault("An error occurred when deserializing the json body of a request: exactly one of `mem_file_path` and `mem_backend` must be given.");
      }
      if (s.mem_backend?.backend_type === "Uffd") throw new ApiFault(NOT_SUPPORTED_PREFIX + "the Uffd memory backend is not available on this VMM (use File).");
      if ((s.network_overrides?.length ?? 0) > 0 || s.vsock_override !== undefined) throw new ApiFault(NOT_SUPPORTED_PREFIX + "network_overrides and vsock_override are not available on this VMM.");
      if (s.clock_realtime === true) throw new ApiFault(NOT_SUPPORTED_PREFIX + "clock_realtime is not available on this VMM.");
      await b.load({
        snapshotPath: s.snapshot_path,
        memFilePath: s.mem_file_path ?? s.mem_backend!.backend_path,
        enableDiffSnapshots: s.enable_diff_snapshots === true || s.track_dirty_pages === true,
        resumeVm: s.resume_vm === true,
        metricsPath: c.metricsPath,
      });
      this.#started = true;
      return NO_CONTENT;
    });
    r.set("PUT /metrics", (raw) => {
      const m = body(MetricsSchema, raw);
      this.#preBoot();
      c.setMetrics(m.metrics_path);
      return NO_CONTENT;
    });
    r.set("GET /metrics", () => {
      this.#postBoot();
      return ok(b.metrics());
    });
    r.set("GET /vm/config", () => ok(c.fullConfig()));
    r.set("GET /cpu-features", () => {
      const cpu = c.cpu;
      return ok(b.cpuFeatures({ template: cpu.template, vcpus: cpu.vcpus }));
    });
    return r;
  }
}

/** The path of a request target (no query, no fragment), with repeated slashes kept as sent. */
function pathOf(url: string): string {
  const q = url.search(/[?#]/);
  const p = q < 0 ? url : url.slice(0, q);
  return p === "" ? "/" : p;
}
