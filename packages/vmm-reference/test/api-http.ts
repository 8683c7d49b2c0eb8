// Plain HTTP over a Unix socket for the API tests (node:http with socketPath), and the
// `ts-vmm` child processes those tests talk to.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { request } from "node:http";
import { fileURLToPath } from "node:url";

/** The built CLI the tests start. */
const CLI = fileURLToPath(new URL("../dist/bin.js", import.meta.url));

/** A `ts-vmm` child process with its output so far. */
export interface Child {
  readonly proc: ChildProcess;
  out: string;
  err: string;
  readonly exit: Promise<number | null>;
}

/** Starts `ts-vmm ARGS` (the built CLI), collecting stdout and stderr. */
export function start(args: string[]): Child {
  const proc = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const c: Child = { proc, out: "", err: "", exit: new Promise((r) => proc.on("exit", (code) => r(code))) };
  proc.stdout!.on("data", (b: Buffer) => { c.out += b.toString("latin1"); });
  proc.stderr!.on("data", (b: Buffer) => { c.err += b.toString(); });
  return c;
}

/** Waits until the API at `sock` answers GET / (throws if it never does or the child exits). */
export async function ready(sock: string, c: Child): Promise<void> {
  let exited = false;
  void c.exit.then(() => { exited = true; });
  for (let i = 0; i < 200 && !exited; i++) {
    if (existsSync(sock)) {
      try {
        if ((await http(sock, "GET", "/")).status === 200) return;
      } catch {
        // not listening yet
      }
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`the API socket ${sock} never answered; stderr: ${c.err}`);
}

/** An answer: status, parsed JSON body (undefined when empty) and the raw text. */
export interface HttpAnswer {
  readonly status: number;
  readonly json: unknown;
  readonly text: string;
}

/** Sends one request; `body` is sent as given (a string: raw, anything else: JSON). */
export function http(socketPath: string, method: string, path: string, body?: unknown): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
    const req = request({ socketPath, method, path, headers: payload === undefined ? {} : { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(payload) } }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => { text += c; });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text, json: text === "" ? undefined : JSON.parse(text) }));
    });
    req.on("error", reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** The fault message of a 400 answer. */
export function faultOf(a: HttpAnswer): string {
  return (a.json as { fault_message: string }).fault_message;
}
