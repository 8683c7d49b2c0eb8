import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A Unix-socket server that sends back every byte it receives (the console peer). */
export interface EchoServer {
  /** Absolute path of the listening Unix socket. */
  readonly socketPath: string;
  /** Bytes echoed so far. */
  readonly echoed: () => number;
  /** Closes the server and its connections and removes the socket's directory. */
  close(): Promise<void>;
}

/**
 * Starts an echo server on a fresh socket path under the system temp
 * directory. The VMM's console backend connects to it as a client.
 *
 * @throws Node's socket errors if the socket cannot be created.
 */
export async function startEchoServer(): Promise<EchoServer> {
  const dir = mkdtempSync(join(tmpdir(), "ts-vmm-echo-"));
  const socketPath = join(dir, "console.sock");
  const sockets = new Set<Socket>();
  let count = 0;
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on("data", (b) => {
      count += b.length;
      s.write(b);
    });
    s.on("error", () => s.destroy());
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((res, rej) => {
    server.once("error", rej);
    server.listen(socketPath, () => res());
  });
  return {
    socketPath,
    echoed: () => count,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((res) => server.close(() => res()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
