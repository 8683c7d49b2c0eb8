// PUT /machine-config over the Unix socket, `requests` requests per run on one
// keep-alive connection (as a control plane would send them), against the real
// router and pre-boot configuration (VmmBackend, nothing booted). Used by
// bench/api.ts and bench/vmm.ts.
import { mkdtempSync, rmSync } from "node:fs";
import { Agent, request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startApiServer, VmmBackend } from "../src/api/index.js";

function put(agent: Agent, socketPath: string, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = request({ agent, socketPath, method: "PUT", path: "/machine-config", headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode === 204 ? resolve(performance.now() - t0) : reject(new Error(`status ${res.statusCode}`))));
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** The p50 and p99 of each run, in ms. */
export async function apiLatency(runs: number, requests: number, log: (line: string) => void = () => {}): Promise<{ p50s: number[]; p99s: number[] }> {
  const dir = mkdtempSync(join(tmpdir(), "ts-vmm-bench-api-"));
  const socketPath = join(dir, "api.sock");
  const server = await startApiServer({ socketPath, backend: new VmmBackend({ run: () => Promise.reject(new Error("not booted in this bench")) }) });
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const p50s: number[] = [];
  const p99s: number[] = [];
  try {
    for (let run = 0; run < runs; run++) {
      const times: number[] = [];
      for (let i = 0; i < requests; i++) times.push(await put(agent, socketPath, JSON.stringify({ vcpu_count: 1 + (i % 4), mem_size_mib: 128 + 2 * (i % 8) })));
      times.sort((a, b) => a - b);
      p50s.push(times[Math.floor(times.length / 2)]!);
      p99s.push(times[Math.floor(times.length * 0.99)]!);
      log(`run ${run + 1}: PUT /machine-config p50 ${p50s.at(-1)!.toFixed(3)} ms, p99 ${p99s.at(-1)!.toFixed(3)} ms over ${requests} requests`);
    }
  } finally {
    agent.destroy();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return { p50s, p99s };
}
