import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** An asynchronous QMP event (`{ event, data, timestamp }`). */
export interface QmpEvent {
  readonly event: string;
  readonly data?: Record<string, unknown>;
  readonly timestamp?: { seconds: number; microseconds: number };
}

/** A QMP command that returned `{ error }`. */
export class QmpError extends Error {
  /** QMP error class, e.g. `GenericError`, `CommandNotFound`. */
  readonly class: string;
  constructor(cls: string, desc: string) {
    super(`QMP ${cls}: ${desc}`);
    this.name = "QmpError";
    this.class = cls;
  }
}

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void };

/**
 * A small QEMU Machine Protocol client over a unix socket (docs/interop/qmp-spec).
 * Commands are serialised by QMP itself: replies come back in order, events
 * may come between them.
 */
export class Qmp {
  readonly #sock: Socket;
  #buf = "";
  readonly #pending: Pending[] = [];
  readonly #events: QmpEvent[] = [];
  readonly #waiters: { name: string; resolve: (e: QmpEvent) => void }[] = [];
  #closed: Error | undefined;
  /** The greeting's `QMP.version.qemu` (`{ major, minor, micro }`). */
  version: { major: number; minor: number; micro: number } | undefined;

  private constructor(sock: Socket) {
    this.#sock = sock;
    sock.setEncoding("utf8");
    sock.on("data", (d: string) => this.#onData(d));
    const fail = (e: Error): void => {
      this.#closed = e;
      for (const p of this.#pending.splice(0)) p.reject(e);
    };
    sock.on("error", fail);
    sock.on("close", () => fail(new Error("QMP socket closed")));
  }

  /**
   * Connects to a QMP unix socket, retrying until it exists (QEMU creates it
   * shortly after start), reads the greeting and enters command mode
   * (`qmp_capabilities`).
   *
   * @throws Error when the socket does not accept a connection within `timeoutMs`.
   */
  static async connect(path: string, timeoutMs = 10_000): Promise<Qmp> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once("connect", () => resolve(s));
          s.once("error", reject);
        });
        const q = new Qmp(sock);
        const greeting = (await q.#next()) as { QMP?: { version?: { qemu?: Qmp["version"] } } };
        q.version = greeting.QMP?.version?.qemu;
        await q.execute("qmp_capabilities");
        return q;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`cannot connect to QMP at ${path}: ${String(e)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  #onData(d: string): void {
    this.#buf += d;
    let nl: number;
    while ((nl = this.#buf.indexOf("\n")) >= 0) {
      const line = this.#buf.slice(0, nl).trim();
      this.#buf = this.#buf.slice(nl + 1);
      if (!line) continue;
      const msg = JSON.parse(line) as Record<string, unknown>;
      if ("event" in msg) {
        const ev = msg as unknown as QmpEvent;
        const i = this.#waiters.findIndex((w) => w.name === ev.event);
        if (i >= 0) this.#waiters.splice(i, 1)[0]!.resolve(ev);
        else this.#events.push(ev);
        continue;
      }
      const p = this.#pending.shift();
      if (!p) continue;
      if ("error" in msg) {
        const err = msg["error"] as { class: string; desc: string };
        p.reject(new QmpError(err.class, err.desc));
      } else p.resolve("return" in msg ? msg["return"] : msg);
    }
  }

  #next(): Promise<unknown> {
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise((resolve, reject) => this.#pending.push({ resolve, reject }));
  }

  /**
   * Runs a QMP command and returns its `return` value.
   *
   * @throws QmpError when QEMU answers with an error; Error when the socket closed.
   */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    const p = this.#next() as Promise<T>;
    this.#sock.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + "\n");
    return p;
  }

  /** Runs a human monitor command (`info registers`, `xp /16xb 0x7000`) and returns its text. */
  hmp(commandLine: string): Promise<string> {
    return this.execute<string>("human-monitor-command", { "command-line": commandLine });
  }

  /**
   * Reads guest physical memory. Small ranges (≤ 256 bytes) use `xp`; larger
   * ones `pmemsave` into a temporary file, which is much faster.
   */
  async readPhys(addr: number, len: number): Promise<Uint8Array> {
    if (len <= 256) {
      const text = await this.hmp(`xp /${len}xb 0x${addr.toString(16)}`);
      const bytes = [...text.matchAll(/0x([0-9a-f]{2})\b/g)].map((m) => parseInt(m[1]!, 16));
      if (bytes.length !== len) throw new Error(`xp returned ${bytes.length} bytes, wanted ${len}: ${text.slice(0, 200)}`);
      return Uint8Array.from(bytes);
    }
    const dir = mkdtempSync(join(tmpdir(), "qmp-pmem-"));
    const file = join(dir, "mem");
    try {
      await this.execute("pmemsave", { val: addr, size: len, filename: file });
      return new Uint8Array(readFileSync(file));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  /**
   * The boot vCPU's registers from `info registers`, as a map from name to
   * value: `EAX`…`EIP`/`RAX`…`RIP`, `EFL`, `CR0`…`CR4`, `EFER`, and for each
   * segment (`CS`, `DS`, … `TR`, `LDT`) its selector, base, limit and flags as
   * `CS.sel`, `CS.base`, `CS.limit`, `CS.flags`; `GDT.base`, `GDT.limit`, `IDT.*`.
   */
  async registers(): Promise<Record<string, bigint>> {
    return parseInfoRegisters(await this.hmp("info registers"));
  }

  /** Events received so far and not yet taken by {@link Qmp.waitEvent}. */
  get events(): readonly QmpEvent[] {
    return this.#events;
  }

  /**
   * Resolves with the next event named `name` (or one already received).
   *
   * @throws Error after `timeoutMs`.
   */
  waitEvent(name: string, timeoutMs = 10_000): Promise<QmpEvent> {
    const i = this.#events.findIndex((e) => e.event === name);
    if (i >= 0) return Promise.resolve(this.#events.splice(i, 1)[0]!);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no QMP event ${name} within ${timeoutMs} ms`)), timeoutMs);
      this.#waiters.push({ name, resolve: (e) => (clearTimeout(t), resolve(e)) });
    });
  }

  /** Closes the socket. */
  close(): void {
    this.#sock.destroy();
  }
}

/** Parses the text of HMP `info registers` (x86). See {@link Qmp.registers}. */
export function parseInfoRegisters(text: string): Record<string, bigint> {
  const out: Record<string, bigint> = {};
  for (const m of text.matchAll(/\b([A-Z][A-Z0-9]{1,3})=([0-9a-f]{4,16})\b/g)) out[m[1]!] = BigInt(`0x${m[2]}`);
  // Segments: "CS =0010 0000000000000000 ffffffff 00cf9b00 DPL=0 CS32 [-R-]"
  for (const m of text.matchAll(/^(ES|CS|SS|DS|FS|GS|LDT|TR)\s*=([0-9a-f]{4}) ([0-9a-f]{8,16}) ([0-9a-f]{8}) ([0-9a-f]{8})/gm)) {
    out[`${m[1]}.sel`] = BigInt(`0x${m[2]}`);
    out[`${m[1]}.base`] = BigInt(`0x${m[3]}`);
    out[`${m[1]}.limit`] = BigInt(`0x${m[4]}`);
    out[`${m[1]}.flags`] = BigInt(`0x${m[5]}`);
  }
  for (const m of text.matchAll(/^(GDT|IDT)=\s*([0-9a-f]{8,16}) ([0-9a-f]{8})/gm)) {
    out[`${m[1]}.base`] = BigInt(`0x${m[2]}`);
    out[`${m[1]}.limit`] = BigInt(`0x${m[3]}`);
  }
  return out;
}

/** A QEMU started by {@link startQemu}. */
export interface QemuInstance {
  readonly qmp: Qmp;
  readonly process: ChildProcess;
  /** Directory holding the QMP socket (and anything else the caller puts there). */
  readonly dir: string;
  /** Everything QEMU wrote to stderr so far. */
  stderr(): string;
  /** Quits QEMU (QMP `quit`, then SIGKILL after 2 s) and removes `dir`. */
  stop(): Promise<void>;
}

/**
 * Starts `qemu-system-x86_64` with `args` plus `-qmp unix:<dir>/qmp.sock` and
 * `-display none` (everything else, such as `-nodefaults`, `-accel` or `-S` to
 * start paused, is the caller's), and connects QMP.
 *
 * @example
 * const q = await startQemu(["-S", "-M", "microvm", "-accel", "tcg", "-m", "64", "-nodefaults"]);
 * try { console.log(await q.qmp.hmp("info registers")); } finally { await q.stop(); }
 *
 * @throws Error when QEMU exits or QMP does not come up within `timeoutMs`.
 */
export async function startQemu(args: readonly string[], timeoutMs = 15_000): Promise<QemuInstance> {
  const dir = mkdtempSync(join(tmpdir(), "ts-vmm-qemu-"));
  const sock = join(dir, "qmp.sock");
  const proc = spawn("qemu-system-x86_64", [...args, "-qmp", `unix:${sock},server=on,wait=off`, "-display", "none"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  proc.stderr?.setEncoding("utf8").on("data", (d: string) => (err += d));
  const exited = new Promise<never>((_, reject) =>
    proc.once("exit", (code, sig) => reject(new Error(`qemu exited (${code ?? sig}) before QMP was ready: ${err.trim()}`))),
  );
  exited.catch(() => undefined);
  let qmp: Qmp;
  try {
    qmp = await Promise.race([Qmp.connect(sock, timeoutMs), exited]);
  } catch (e) {
    proc.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    qmp,
    process: proc,
    dir,
    stderr: () => err,
    async stop() {
      const gone = new Promise<void>((r) => (proc.exitCode !== null || proc.signalCode !== null ? r() : proc.once("exit", () => r())));
      try {
        await Promise.race([qmp.execute("quit"), new Promise((r) => setTimeout(r, 1000))]);
      } catch {
        // the socket closes as QEMU quits
      }
      const t = setTimeout(() => proc.kill("SIGKILL"), 2000);
      await gone;
      clearTimeout(t);
      qmp.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
