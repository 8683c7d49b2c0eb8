import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describeWith } from "@ts-vmm/test-utils";
import { afterAll, beforeAll, expect, it } from "vitest";
import { buildStaticTool, parsePeerResult, PEER_SOURCE } from "../src/index.js";

/*
 * nested/peer.c on this host: the far end of net and vsock in the nested
 * tier (and its L2 side). TCP over loopback against itself; the
 * Firecracker-convention connect and the QMP client against small servers
 * written here; the byte pattern against an independent implementation, so
 * a peer that accepted anything would fail.
 */
const run = promisify(execFile);

/** The pattern of nested/peer.c, written again from its definition: xorshift32 of seed·0x9e3779b1 + dir·0x85ebca77, top byte. */
function pattern(seed: number, dir: number, n: number): Buffer {
  let x = (Math.imul(seed, 0x9e3779b1) + Math.imul(dir, 0x85ebca77)) >>> 0;
  if (x === 0) x = 1;
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

let peer: string;
let dir: string;
beforeAll(() => {
  peer = buildStaticTool(PEER_SOURCE);
  dir = mkdtempSync(join(tmpdir(), "ts-vmm-peer-test-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function peerRun(args: readonly (string | number)[]): Promise<{ out: string; code: number }> {
  try {
    const r = await run(peer, args.map(String), { timeout: 30_000 });
    return { out: r.stdout.trim(), code: 0 };
  } catch (e) {
    const x = e as { stdout?: string; code?: number };
    return { out: (x.stdout ?? "").trim(), code: x.code ?? -1 };
  }
}

/** Buffers a socket's bytes from the start, so reads of exact sizes lose nothing. */
class Reader {
  private buf = Buffer.alloc(0);
  private ended = false;
  private waiters: (() => void)[] = [];
  constructor(s: Socket) {
    s.on("data", (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    const end = (): void => {
      this.ended = true;
      this.wake();
    };
    s.on("end", end);
    s.on("error", end);
  }
  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
  private async until(ready: () => boolean): Promise<void> {
    while (!ready()) {
      if (this.ended) throw new Error(`EOF with ${this.buf.length} bytes buffered`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }
  /** Exactly n bytes. */
  async read(n: number): Promise<Buffer> {
    await this.until(() => this.buf.length >= n);
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
  /** One line, with its newline. */
  async line(): Promise<string> {
    await this.until(() => this.buf.includes(10));
    return (await this.read(this.buf.indexOf(10) + 1)).toString();
  }
}

function listen(server: Server, where: string | number): Promise<void> {
  return new Promise((res) => (typeof where === "string" ? server.listen(where, res) : server.listen(where, "127.0.0.1", res)));
}

describeWith({ tools: ["gcc"] }, "tsvmm-peer (nested/peer.c) on this host", () => {
  it("tcp-listen and tcp-connect exchange both streams; each side reports what it sent and checked", async () => {
    const port = 30000 + Math.floor(Math.random() * 20000);
    const server = peerRun(["tcp-listen", "127.0.0.1", port, 300_000, 123_457, 42, 20]);
    const client = await peerRun(["tcp-connect", "127.0.0.1", port, 300_000, 123_457, 42, 20]);
    expect(client).toEqual({ out: "result=ok sent=300000 received=123457", code: 0 });
    expect(await server).toEqual({ out: "result=ok sent=123457 received=300000", code: 0 });
  });

  it("the connecting side's bytes are the pattern of direction 1; a byte off is a mismatch at its offset", async () => {
    // A server in Node: checks what the peer sends against the independent pattern, answers a corrupted direction 2.
    let got: Buffer | undefined;
    const server = createServer((s) => {
      void new Reader(s).read(5000).then((b) => {
        got = b;
        const down = pattern(7, 2, 3000);
        down[2999] = down[2999]! ^ 1;
        s.end(down);
      });
    });
    await listen(server, 0);
    const port = (server.address() as AddressInfo).port;
    const r = await peerRun(["tcp-connect", "127.0.0.1", port, 5000, 3000, 7, 20]);
    server.close();
    expect(got?.equals(pattern(7, 1, 5000))).toBe(true);
    expect(r.code).toBe(1);
    expect(r.out).toBe("result=fail why=mismatch@2999 sent=5000 received=2999");
  });

  it("reports eof when the other side closes early, and timeout at its deadline", async () => {
    const server = createServer((s) => void new Reader(s).read(100).then(() => s.end(pattern(9, 2, 10))));
    await listen(server, 0);
    const port = (server.address() as AddressInfo).port;
    expect(await peerRun(["tcp-connect", "127.0.0.1", port, 100, 50, 9, 20])).toEqual({ out: "result=fail why=eof sent=100 received=10", code: 1 });
    server.close();
    // Nothing listens: the connect is retried until the deadline.
    const t0 = Date.now();
    const r = await peerRun(["tcp-connect", "127.0.0.1", port, 1, 1, 9, 1]);
    expect(r).toEqual({ out: "result=fail why=timeout sent=0 received=0", code: 1 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
  });

  it("unix-connect speaks Firecracker's convention: CONNECT <port>, retried while the VMM closes before OK, then the stream", async () => {
    const path = join(dir, "v.sock");
    const requests: string[] = [];
    let attempt = 0;
    const server = createServer((s) => {
      const r = new Reader(s);
      void (async () => {
        requests.push(await r.line());
        // The first attempt: the guest is not listening yet (the VMM closes without OK).
        if (attempt++ === 0) return void s.destroy();
        s.write("OK 1073741824\n");
        const up = await r.read(70_000);
        if (!up.equals(pattern(11, 1, 70_000))) return void s.destroy();
        s.end(pattern(11, 2, 1234));
      })();
    });
    await listen(server, path);
    const r = await peerRun(["unix-connect", path, 5001, 70_000, 1234, 11, 20]);
    server.close();
    expect(r).toEqual({ out: "result=ok sent=70000 received=1234", code: 0 });
    expect(requests).toEqual(["CONNECT 5001\n", "CONNECT 5001\n"]);
  });

  it("unix-connect fails on a reply other than OK; unix-listen serves the guest-initiated side at its path", async () => {
    const path = join(dir, "w.sock");
    const server = createServer((s) => {
      s.resume(); // read to the EOF, so the connection closes when the peer exits
      s.end("NO\n");
    });
    await listen(server, path);
    expect(await peerRun(["unix-connect", path, 1, 1, 1, 1, 20])).toEqual({ out: "result=fail why=no-OK-reply sent=0 received=0", code: 1 });
    await new Promise((res) => server.close(res));

    const lpath = join(dir, "v.sock_5000");
    const listener = peerRun(["unix-listen", lpath, 4000, 6000, 3, 20]);
    const { connect } = await import("node:net");
    let s: Socket | undefined;
    for (let i = 0; i < 100 && !s; i++) {
      s = await new Promise<Socket | undefined>((res) => {
        const c = connect(lpath, () => res(c));
        c.once("error", () => setTimeout(() => res(undefined), 50));
      });
    }
    const reader = new Reader(s!);
    s!.write(pattern(3, 1, 4000));
    const down = await reader.read(6000);
    s!.end();
    expect(down.equals(pattern(3, 2, 6000))).toBe(true);
    expect(await listener).toEqual({ out: "result=ok sent=6000 received=4000", code: 0 });
  });

  it("qmp: capabilities, then the command; events are skipped; an error reply fails", async () => {
    const path = join(dir, "qmp.sock");
    const seen: string[] = [];
    let refuse = false;
    const server = createServer((s) => {
      s.write('{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}\r\n');
      let buf = "";
      s.on("data", (d: Buffer) => {
        buf += d.toString();
        let k;
        while ((k = buf.indexOf("\n")) >= 0) {
          const cmd = buf.slice(0, k);
          buf = buf.slice(k + 1);
          seen.push(cmd);
          if (cmd.includes("qmp_capabilities")) s.write('{"return": {}}\r\n');
          else if (refuse) s.write('{"error": {"class": "GenericError", "desc": "No balloon device has been activated"}}\r\n');
          else s.write('{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "BALLOON_CHANGE", "data": {"actual": 1}}\r\n{"return": {}}\r\n');
        }
      });
    });
    await listen(server, path);
    const cmd = '{"execute":"balloon","arguments":{"value":201326592}}';
    expect(await peerRun(["qmp", path, cmd, 10])).toEqual({ out: 'result=ok reply={"return":_{}}', code: 0 });
    expect(seen).toEqual(['{"execute":"qmp_capabilities"}', cmd]);
    refuse = true;
    const r = await peerRun(["qmp", path, cmd, 10]);
    server.close();
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^result=fail why=qmp-error reply=\{"error":_\{"class":_"GenericError"/);
  });

  it("refuses malformed arguments with a usage error (status 2), and its result lines parse", async () => {
    expect((await peerRun(["tcp-connect", "127.0.0.1", "x", 1, 1, 1, 1])).code).toBe(2);
    expect((await peerRun(["bogus"])).code).toBe(2);
    expect((await peerRun(["tcp-connect", "not-an-ip", 1, 1, 1, 1, 5])).out).toBe("result=fail why=bad-address sent=0 received=0");
    expect(parsePeerResult("TS-VMM-NET tcp result=ok sent=5 received=7")).toEqual({ ok: true, sent: 5, received: 7, why: null, line: "TS-VMM-NET tcp result=ok sent=5 received=7" });
    expect(parsePeerResult("result=fail why=connect:Connection_refused sent=0 received=0")).toMatchObject({ ok: false, why: "connect:Connection_refused" });
    expect(parsePeerResult("nothing here")).toBeNull();
  });
});
