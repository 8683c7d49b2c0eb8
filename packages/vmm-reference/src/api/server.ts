// The API's HTTP server: Node's own node:http on a Unix socket. Owns the
// socket file (a stale one is removed, a live one refused, ours removed on
// close and at process exit), reads each body up to a limit, and hands
// method, path and body to the router.
import { connect } from "node:net";
import { lstatSync, readFileSync, unlinkSync } from "node:fs";
import { PACKAGE_ROOT } from "../package-root.js";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { ApiBackend } from "./backend.js";
import { ApiRouter, type ApiRouterOptions } from "./router.js";

/** Firecracker's limit on a request body (HTTP_MAX_PAYLOAD_SIZE), in bytes. */
export const API_MAX_BODY_BYTES = 51_200;

/** Why {@link startApiServer} failed. */
export type ApiServerErrorCode =
  /** Another process is listening on the socket path. */
  | "SocketInUse"
  /** The path exists and is not a socket (a file we will not delete). */
  | "PathNotSocket"
  /** listen(2) or unlink(2) failed; see `cause`. */
  | "ListenFailed";

/** An error of {@link startApiServer}. */
export class ApiServerError extends Error {
  override readonly name = "ApiServerError";
  readonly code: ApiServerErrorCode;

  constructor(code: ApiServerErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** Options of {@link startApiServer}. */
export interface ApiServerOptions {
  /** Where to listen. */
  readonly socketPath: string;
  /** What runs the VM. */
  readonly backend: ApiBackend;
  /** The version the API reports (default: this package's). */
  readonly version?: string;
  /** The instance id `GET /` reports. */
  readonly id?: string;
  /** The VM was started without the API (see ApiRouterOptions.started). @internal */
  readonly started?: ApiRouterOptions["started"];
  /** Largest request body accepted, in bytes (default {@link API_MAX_BODY_BYTES}). */
  readonly maxBodyBytes?: number;
}

/** A running API server. */
export interface ApiServer {
  /** The socket path it listens on. */
  readonly socketPath: string;
  /** The router (its state, for the CLI). */
  readonly router: ApiRouter;
  /** Stops listening, closes the connections and removes the socket file. Idempotent. */
  close(): Promise<void>;
}

/** Whether something accepts connections on the Unix socket at `path`. */
function isLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** This package's version (package.json at the package root). */
function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL("package.json", PACKAGE_ROOT), "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
}

/**
 * Listens on `socketPath` and serves the API. A socket file nobody listens on
 * (left by a VMM that died) is removed first; a live one, or a path that is
 * not a socket, is refused.
 * @throws {@link ApiServerError}
 */
export async function startApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  const { socketPath } = opts;
  const limit = opts.maxBodyBytes ?? API_MAX_BODY_BYTES;
  let st;
  try {
    st = lstatSync(socketPath);
  } catch {
    st = undefined;
  }
  if (st !== undefined) {
    if (!st.isSocket()) throw new ApiServerError("PathNotSocket", `--api-sock ${socketPath}: the path exists and is not a socket; not removing it`);
    if (await isLive(socketPath)) throw new ApiServerError("SocketInUse", `--api-sock ${socketPath}: another process is listening on it`);
    try {
      unlinkSync(socketPath);
    } catch (e) {
      throw new ApiServerError("ListenFailed", `--api-sock ${socketPath}: cannot remove the stale socket: ${(e as Error).message}`, { cause: e });
    }
  }
  const router = new ApiRouter({
    backend: opts.backend,
    version: opts.version ?? packageVersion(),
    ...(opts.id !== undefined ? { id: opts.id } : {}),
    ...(opts.started !== undefined ? { started: opts.started } : {}),
  });
  const server: Server = createServer((req, res) => serve(router, limit, req, res));
  // A slow or stuck client must not hold a connection forever.
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e) => reject(new ApiServerError("ListenFailed", `--api-sock ${socketPath}: ${e.message}`, { cause: e })));
    server.listen(socketPath, () => resolve());
  });
  server.on("error", () => undefined);
  // Our socket's inode: remove the file only if it is still ours.
  const ino = lstatSync(socketPath).ino;
  const unlinkOurs = (): void => {
    try {
      if (lstatSync(socketPath).ino === ino) unlinkSync(socketPath);
    } catch {
      // already gone
    }
  };
  process.on("exit", unlinkOurs);
  let closing: Promise<void> | undefined;
  return {
    socketPath,
    router,
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }).finally(() => {
        unlinkOurs();
        process.off("exit", unlinkOurs);
      });
      return closing;
    },
  };
}

function send(res: ServerResponse, status: number, body?: unknown): void {
  if (body === undefined) {
    res.writeHead(status);
    res.end();
    return;
  }
  const text = JSON.stringify(body, (_k, v: unknown) => (typeof v === "bigint" ? (v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString()) : v));
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

function serve(router: ApiRouter, limit: number, req: IncomingMessage, res: ServerResponse): void {
  const declared = Number(req.headers["content-length"] ?? "0");
  const chunks: Buffer[] = [];
  let size = 0;
  let over = false;
  const tooLarge = (n: number): void => {
    over = true;
    chunks.length = 0;
    res.setHeader("Connection", "close");
    send(res, 400, { fault_message: `Request payload with size ${n} is larger than the limit of ${limit} allowed by server.` });
  };
  if (Number.isFinite(declared) && declared > limit) tooLarge(declared);
  req.on("data", (c: Buffer) => {
    size += c.byteLength;
    // The rest of an oversized body is read and dropped (the client may still be writing it),
    // up to 16 times the limit; then the connection is cut.
    if (over) {
      if (size > limit * 16) req.destroy();
      return;
    }
    if (size > limit) {
      tooLarge(size);
      return;
    }
    chunks.push(c);
  });
  req.on("error", () => undefined);
  req.on("end", () => {
    if (over) return;
    const text = size === 0 ? undefined : Buffer.concat(chunks).toString("utf8");
    router.handle(req.method ?? "GET", req.url ?? "/", text).then(
      (r) => send(res, r.status, r.body),
      (e: unknown) => send(res, 500, { fault_message: `Internal server error: ${(e as Error).message}` }),
    );
  });
}
