import { createConnection } from "node:net";

/**
 * Sends QMP commands to a QEMU started with `-qmp unix:<path>,server=on,wait=off`
 * (qmp_capabilities first) and resolves with the replies, one per command.
 */
export async function qmp(socketPath: string, commands: readonly object[], timeoutMs = 5000): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const s = createConnection(socketPath);
    const replies: unknown[] = [];
    let buf = "";
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`QMP timed out after ${timeoutMs} ms (${replies.length} replies)`));
    }, timeoutMs);
    s.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on("connect", () => {
      for (const c of [{ execute: "qmp_capabilities" }, ...commands]) s.write(`${JSON.stringify(c)}\n`);
    });
    s.on("data", (b) => {
      buf += b.toString("utf8");
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as Record<string, unknown>;
        if ("return" in msg || "error" in msg) replies.push(msg);
        if (replies.length === commands.length + 1) {
          clearTimeout(timer);
          s.end();
          resolve(replies.slice(1));
        }
      }
    });
  });
}
