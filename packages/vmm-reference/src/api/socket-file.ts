// A node:http server on a Unix socket file, with the file's lifecycle: a
// stale socket (left by a process that died) is removed first, a live one or a
// path that is not a socket is refused, and ours is removed on close and at
// process exit (only while it is still our inode). The API server and the
// snapshot pool's server both listen through this.
import { connect } from "node:net";
import { lstatSync, unlinkSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { ApiServerError } from "./server-error.js";

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

/** An HTTP server listening on a socket file. */
export interface SocketFileServer {
  readonly server: Server;
  /** Stops listening, closes the connections and removes the socket file (if still ours). Idempotent. */
  close(): Promise<void>;
}

/**
 * Listens on the Unix socket `socketPath` with `handler`; `flag` names the
 * option in messages (`--api-sock`).
 * @throws {@link ApiServerError} `PathNotSocket`, `SocketInUse`, `ListenFailed`.
 */
export async function listenOnSocketFile(socketPath: string, handler: (req: IncomingMessage, res: ServerResponse) => void, flag = "--api-sock"): Promise<SocketFileServer> {
  let st;
  try {
    st = lstatSync(socketPath);
  } catch {
    st = undefined;
  }
  if (st !== undefined) {
    if (!st.isSocket()) throw new ApiServerError("PathNotSocket", `${flag} ${socketPath}: the path exists and is not a socket; not removing it`);
    if (await isLive(socketPath)) throw new ApiServerError("SocketInUse", `${flag} ${socketPath}: another process is listening on it`);
    try {
      unlinkSync(socketPath);
    } catch (e) {
      throw new ApiServerError("ListenFailed", `${flag} ${socketPath}: cannot remove the stale socket: ${(e as Error).message}`, { cause: e });
    }
  }
  const server: Server = createServer(handler);
  // A slow or stuck client must not hold a connection forever.
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e) => reject(new ApiServerError("ListenFailed", `${flag} ${socketPath}: ${e.message}`, { cause: e })));
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
    server,
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

/** Sends `body` as JSON (bigints as numbers when exact, else strings), or an empty response. */
export function sendJson(res: ServerResponse, status: number, body?: unknown): void {
  if (body === undefined) {
    res.writeHead(status);
    res.end();
    return;
  }
  const text = JSON.stringify(body, (_k, v: unknown) => (typeof v === "bigint" ? (v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString()) : v));
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

/**
 * Reads a request body of at most `limit` bytes and calls `onBody` with it as
 * UTF-8 text (undefined when empty). A larger one (declared or sent) is
 * answered 400 in Firecracker's words and `onBody` is not called; the rest of
 * it is read and dropped up to 16 times the limit, then the connection is cut.
 */
export function readBody(req: IncomingMessage, res: ServerResponse, limit: number, onBody: (text: string | undefined) => void): void {
  const declared = Number(req.headers["content-length"] ?? "0");
  const chunks: Buffer[] = [];
  let size = 0;
  let over = false;
  const tooLarge = (n: number): void => {
    over = true;
    chunks.length = 0;
    res.setHeader("Connection", "close");
    sendJson(res, 400, { fault_message: `Request payload with size ${n} is larger than the limit of ${limit} allowed by server.` });
  };
  if (Number.isFinite(declared) && declared > limit) tooLarge(declared);
  req.on("data", (c: Buffer) => {
    size += c.byteLength;
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
    onBody(size === 0 ? undefined : Buffer.concat(chunks).toString("utf8"));
  });
}
