// The snapshot pool's HTTP API on a Unix socket (`ts-vmm pool --api-sock`):
// node:http through the API's socket-file handling, JSON bodies, errors in
// Firecracker's shape `{"fault_message": …}`.
//
//   GET    /           the pool: snapshot, size, limits, counters
//   PUT    /vms        hand out a VM; 201 {"id", …} once its guest runs
//   GET    /vms        the running VMs
//   GET    /vms/{id}   one of them (404 if none has that id)
//   DELETE /vms/{id}   stop it; 200 with its run's result once it is closed
import type { IncomingMessage, ServerResponse } from "node:http";
import { z } from "zod";
import { listenOnSocketFile, readBody, sendJson } from "../api/socket-file.js";
import { VmmError } from "../error.js";
import { absoluteNow } from "../startup-trace.js";
import type { PooledVm, SnapshotPool } from "./snapshot-pool.js";

/** Largest request body the pool's API reads, in bytes. */
export const POOL_API_MAX_BODY_BYTES = 4096;

/** A running pool API server. */
export interface PoolApiServer {
  /** The socket path it listens on. */
  readonly socketPath: string;
  /** Stops listening, closes the connections and removes the socket file (the pool stays open). Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link startPoolApiServer}. */
export interface PoolApiServerOptions {
  /** Where to listen (a Unix socket path). */
  readonly socketPath: string;
  /** The pool to serve (closing the server leaves it open). */
  readonly pool: SnapshotPool;
  /** What `GET /` reports as the snapshot. */
  readonly snapshot?: { readonly snapshotPath: string; readonly memFilePath: string };
}

/** `PUT /vms` takes no body or an empty object (room for options later; unknown fields refused). */
const PutVmsBody = z.object({}).strict();

interface Reply {
  readonly status: number;
  readonly body?: unknown;
  readonly allow?: string;
}

const fault = (status: number, message: string): Reply => ({ status, body: { fault_message: message } });

function vmInfo(pool: SnapshotPool, v: PooledVm): Record<string, unknown> {
  return {
    id: v.id,
    state: v.vmm.state,
    running_for_ms: Number((absoluteNow() - v.runningAt).toFixed(3)),
    request_to_running_ms: Number((v.runningAt - v.requestedAt).toFixed(3)),
    from_pool: v.fromPool,
    ...(v.logPath !== undefined ? { log_path: v.logPath } : {}),
    ...(pool.logError(v.id) !== undefined ? { log_error: pool.logError(v.id) } : {}),
  };
}

function errorReply(e: unknown): Reply {
  if (e instanceof VmmError) {
    if (e.code === "PoolFull" || e.code === "InvalidState") return fault(503, e.message);
    if (e.code === "UnknownVm") return fault(404, e.message);
    return fault(500, `${e.code}: ${e.message}`);
  }
  return fault(500, `Internal server error: ${(e as Error).message}`);
}

/** Answers one request. Exported for tests. @internal */
export async function handlePoolRequest(pool: SnapshotPool, snapshot: PoolApiServerOptions["snapshot"], method: string, url: string, body: string | undefined): Promise<Reply> {
  const path = url.split("?")[0]!;
  if (path === "/") {
    if (method !== "GET") return { ...fault(405, `${method} is not allowed on /`), allow: "GET" };
    const s = pool.stats();
    return {
      status: 200,
      body: {
        ...(snapshot !== undefined ? { snapshot_path: snapshot.snapshotPath, mem_file_path: snapshot.memFilePath } : {}),
        ready: s.ready, running: s.running, taken: s.taken, taken_cold: s.takenCold,
        refill_failures: s.refillFailures, ...(s.lastRefillError !== undefined ? { last_refill_error: s.lastRefillError } : {}),
      },
    };
  }
  if (path === "/vms") {
    if (method === "GET") return { status: 200, body: { vms: pool.list().map((v) => vmInfo(pool, v)) } };
    if (method !== "PUT") return { ...fault(405, `${method} is not allowed on /vms`), allow: "GET, PUT" };
    if (body !== undefined && body.trim() !== "") {
      let parsed: unknown;
      try {
        parsed = JSON.parse(body);
      } catch (e) {
        return fault(400, `The request body is not JSON: ${(e as Error).message}`);
      }
      const r = PutVmsBody.safeParse(parsed);
      if (!r.success) return fault(400, `The request body must be an empty JSON object: ${r.error.issues.map((i) => i.message).join("; ")}`);
    }
    try {
      const v = await pool.take();
      return { status: 201, body: vmInfo(pool, v) };
    } catch (e) {
      return errorReply(e);
    }
  }
  const m = /^\/vms\/([A-Za-z0-9_-]{1,64})$/.exec(path);
  if (m === null) return fault(404, `No such path: ${path.slice(0, 200)}`);
  const id = m[1]!;
  if (method === "GET") {
    const v = pool.get(id);
    return v === undefined ? fault(404, `no running VM has id ${JSON.stringify(id)}`) : { status: 200, body: vmInfo(pool, v) };
  }
  if (method !== "DELETE") return { ...fault(405, `${method} is not allowed on /vms/{id}`), allow: "GET, DELETE" };
  try {
    const r = await pool.release(id);
    return { status: 200, body: { id, reason: r.reason, guest_exit_value: r.guestExitValue, ...(r.detail !== undefined ? { detail: r.detail } : {}) } };
  } catch (e) {
    return errorReply(e);
  }
}

/**
 * Serves `pool` on the Unix socket `socketPath` (a stale socket file is
 * removed, a live one or a non-socket refused, as the VMM API's server).
 * @throws `ApiServerError` (of `@ts-vmm/vmm-reference/api`) from the socket file's handling:
 *   `PathNotSocket`, `SocketInUse`, `ListenFailed`.
 */
export async function startPoolApiServer(opts: PoolApiServerOptions): Promise<PoolApiServer> {
  const serve = (req: IncomingMessage, res: ServerResponse): void => {
    readBody(req, res, POOL_API_MAX_BODY_BYTES, (text) => {
      handlePoolRequest(opts.pool, opts.snapshot, req.method ?? "GET", req.url ?? "/", text).then(
        (r) => {
          if (r.allow !== undefined) res.setHeader("Allow", r.allow);
          sendJson(res, r.status, r.body);
        },
        (e: unknown) => sendJson(res, 500, { fault_message: `Internal server error: ${(e as Error).message}` }),
      );
    });
  };
  const listening = await listenOnSocketFile(opts.socketPath, serve);
  return { socketPath: opts.socketPath, close: () => listening.close() };
}
