// Plain HTTP over a Unix socket for the API tests (node:http with socketPath).
import { request } from "node:http";

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
