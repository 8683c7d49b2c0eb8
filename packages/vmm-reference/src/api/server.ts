// The API's HTTP server: Node's own node:http on a Unix socket (the socket
// file's handling is socket-file.ts's), reads each body up to a limit, and
// hands method, path and body to the router.
import { readFileSync } from "node:fs";
import { PACKAGE_ROOT } from "../package-root.js";
import type { IncomingMessage, ServerResponse } from "node:http";
import { ApiServerError, type ApiServerErrorCode } from "./server-error.js";
import { listenOnSocketFile, readBody, sendJson as send } from "./socket-file.js";
import type { ApiBackend } from "./backend.js";
import { ApiRouter, type ApiRouterOptions } from "./router.js";

/** Firecracker's limit on a request body (HTTP_MAX_PAYLOAD_SIZE), in bytes. */
export const API_MAX_BODY_BYTES = 51_200;

export { ApiServerError };
export type { ApiServerErrorCode };

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
  const router = new ApiRouter({
    backend: opts.backend,
    version: opts.version ?? packageVersion(),
    ...(opts.id !== undefined ? { id: opts.id } : {}),
    ...(opts.started !== undefined ? { started: opts.started } : {}),
  });
  const listening = await listenOnSocketFile(socketPath, (req, res) => serve(router, limit, req, res));
  return { socketPath, router, close: () => listening.close() };
}

function serve(router: ApiRouter, limit: number, req: IncomingMessage, res: ServerResponse): void {
  readBody(req, res, limit, (text) => {
    router.handle(req.method ?? "GET", req.url ?? "/", text).then(
      (r) => send(res, r.status, r.body),
      (e: unknown) => send(res, 500, { fault_message: `Internal server error: ${(e as Error).message}` }),
    );
  });
}
