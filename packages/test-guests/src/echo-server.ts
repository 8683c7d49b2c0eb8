import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A Unix-socket server that sends back every byte it receives (the console peer) and records them (the first MiB). */
export interface EchoServer {
  /** Absolute path of the listening Unix socket. */
  readonly socketPath: string;
  /** Bytes echoed so far. */
  readonly echoed: () => number;
  /** Every byte received so far, in order (the record a console check compares with what the guest sent). */
  readonly received: () => Buffer;
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
  const chunks: Buffer[] = [];
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on("data", (b) => {
      count += b.length;
      if (count <= 1 << 20) chunks.push(Buffer.from(b));
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
    received: () => Buffer.concat(chunks),
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((res) => server.close(() => res()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
