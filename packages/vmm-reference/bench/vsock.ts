/**
 * pnpm bench:vsock — vsock round trips per second: the micro-guest on our
 * VMM against a Unix-socket echo on the host, measured in the same run.
 *
 * Ours: the micro-guest's selftest with `vsock_port=P vsock_rtts=N` opens a
 * stream to host port P (our VMM connects it to `<uds>_P`, a Unix socket this
 * process listens on and echoes), then sends 64 bytes and waits for them to
 * come back, N times. Baseline: a child Node process does the same 64-byte
 * ping-pong against the same echo server over a plain Unix socket. Both are
 * timed by the echo server on the host clock, from the first 64-byte message
 * to the last. Median of BENCH_RUNS (default 3) alternating runs each.
 * Appends a line to BENCHMARKS.md and ends with
 * `{"bench":"vsock-rtt","ours_rtt_per_s":…,"host_rtt_per_s":…,"ratio":…}`.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { cpus, loadavg, release, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildMicroGuest, runGuest } from "@ts-vmm/test-guests";
import { oursLauncher } from "../test/ours-launcher.js";

const RUNS = Number(process.env["BENCH_RUNS"] ?? 3);
const RTTS = Number(process.env["BENCH_RTTS"] ?? 20_000);
const MSG = 64;
/** The selftest's echo check sends this many bytes before the round trips. */
const GREETING = "ts-vmm vsock ping 0123456789".length;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** An echo server that times the 64-byte messages after `skip` greeting bytes of each connection. */
function echoServer(path: string): Promise<{ server: Server; last: () => { msgs: number; ms: number } }> {
  let result = { msgs: 0, ms: 0 };
  const server = createServer((s) => {
    result = { msgs: 0, ms: 0 }; // a new run
    let seen = 0;
    let first = 0;
    let skip = -1;
    s.setNoDelay?.(true);
    s.on("data", (b: Buffer) => {
      s.write(b);
      if (skip < 0) skip = b[0] === 0x52 /* "R": the baseline sends no greeting */ ? 0 : GREETING;
      const before = seen;
      seen += b.length;
      const msgsBefore = Math.max(0, Math.floor((before - skip) / MSG));
      const msgs = Math.max(0, Math.floor((seen - skip) / MSG));
      if (msgsBefore === 0 && msgs >= 1) first = performance.now();
      if (msgs > msgsBefore) result = { msgs, ms: performance.now() - first };
    });
    s.on("error", () => {});
  });
  return new Promise((res) => server.listen(path, () => res({ server, last: () => result })));
}

const CLIENT = `
const net = require("node:net");
const [path, n] = [process.argv[1], Number(process.argv[2])];
const s = net.connect(path, () => {
  const ping = Buffer.alloc(${MSG}, 0x52);
  let left = n, got = 0;
  s.on("data", (b) => {
    got += b.length;
    while (got >= ${MSG}) { got -= ${MSG}; if (--left === 0) { s.end(); return; } s.write(ping); }
  });
  s.write(ping);
});
`;

async function hostRun(path: string): Promise<void> {
  const child = spawn(process.execPath, ["-e", CLIENT, path, String(RTTS)], { stdio: "inherit" });
  await new Promise<void>((res, rej) => child.once("exit", (c) => (c === 0 ? res() : rej(new Error(`client exited ${c}`)))));
}

function appendToBenchmarks(text: string): void {
  const file = fileURLToPath(new URL("../../../BENCHMARKS.md", import.meta.url));
  const begin = "<!-- vmm-reference-vsock:begin -->";
  const end = "<!-- vmm-reference-vsock:end -->";
  let doc = existsSync(file) ? readFileSync(file, "utf8") : "# Benchmarks\n";
  if (!doc.includes(begin)) {
    doc = `${doc.trimEnd()}\n\n## vmm-reference: vsock round trips (\`pnpm --filter @ts-vmm/vmm-reference bench:vsock\`)\n\n` +
      "64-byte ping-pong, one message in flight. Ours: the micro-guest (selftest `vsock_rtts=`) on our VMM, stream to a\n" +
      "host Unix socket `<uds>_<port>` (Firecracker convention) that echoes; host: a Node client against the same echo\n" +
      "server over a Unix socket. Both timed by the echo server. Ratio = ours / host.\n\n" +
      `${begin}\n${end}\n`;
  }
  doc = doc.replace(end, `${text.trimEnd()}\n\n${end}`);
  writeFileSync(file, doc);
}

async function main(): Promise<void> {
  const elf = (await buildMicroGuest()).elf;
  const dir = mkdtempSync(join(tmpdir(), "ts-vmm-bench-vsock-"));
  const ours: number[] = [];
  const host: number[] = [];
  try {
    const uds = join(dir, "v.sock");
    const port = 5555;
    const echo = await echoServer(`${uds}_${port}`);
    const plain = await echoServer(join(dir, "plain.sock"));
    for (let i = 0; i < RUNS; i++) {
      const r = await runGuest({
        vmm: oursLauncher, kernel: elf, cmdline: `mode=selftest irq=${process.env["BENCH_IRQ"] ?? 1} vsock_port=${port} vsock_rtts=${RTTS}`, memMiB: 64,
        timeoutMs: 120_000, devices: [{ kind: "vsock", cid: 3, udsPath: uds }],
      });
      const got = echo.last();
      if (r.results.values["vsock.rtts"] !== String(RTTS) || got.msgs !== RTTS) {
        throw new Error(`ours: ${got.msgs} of ${RTTS} round trips (guest says ${r.results.values["vsock.rtts"] ?? "nothing"})\n${r.serial}\n${r.vmmLog}`);
      }
      ours.push(((RTTS - 1) * 1000) / got.ms);
      await hostRun(join(dir, "plain.sock"));
      const h = plain.last();
      if (h.msgs !== RTTS) throw new Error(`host: ${h.msgs} of ${RTTS} round trips`);
      host.push(((RTTS - 1) * 1000) / h.ms);
    }
    echo.server.close();
    plain.server.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const o = Math.round(median(ours));
  const h = Math.round(median(host));
  const ratio = Number((o / h).toFixed(3));
  const date = new Date().toISOString().slice(0, 10);
  const machine = `${cpus()[0]?.model ?? "?"} ×${cpus().length}, Linux ${release()}, load ${loadavg()[0]!.toFixed(2)}`;
  appendToBenchmarks(
    `- ${date}, ${machine}, ${RUNS} runs of ${RTTS}: ours ${o} round trips/s (runs ${ours.map(Math.round).join(", ")}), ` +
      `host Unix-socket echo ${h}/s (runs ${host.map(Math.round).join(", ")}); ratio ${ratio}`,
  );
  console.log(JSON.stringify({ bench: "vsock-rtt", ours_rtt_per_s: o, host_rtt_per_s: h, ratio, runs: RUNS, rtts: RTTS }));
}

await main();
