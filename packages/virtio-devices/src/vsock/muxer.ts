import { lstatSync, unlinkSync } from "node:fs";
import { Socket, createServer, type Server } from "node:net";
import { VirtioDeviceError } from "../errors.js";
import type { VsockBackend, VsockBackendHost } from "./backend.js";
import { VsockConnection, type VsockConnectionOwner } from "./connection.js";
import { newVsockMetrics, type VsockMetrics } from "./metrics.js";
import {
  VSOCK_HOST_CID,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RST,
  VSOCK_TYPE_STREAM,
  type VsockHeader,
  type VsockRxPacket,
} from "./packet.js";

/** Default most connections at once (open, being opened, or host sockets still sending their CONNECT line). */
export const VSOCK_DEFAULT_MAX_CONNECTIONS = 64;
/** Default credit offered to the guest per connection (host-socket write buffer), as Firecracker's. */
export const VSOCK_DEFAULT_BUF_ALLOC = 256 * 1024;
/** Default bytes the guest may have waiting for all host sockets together before tx processing pauses. */
export const VSOCK_DEFAULT_TOTAL_TX_BYTES = 8 * 1024 * 1024;
/** Default time for a host socket to send its CONNECT line, for the guest to answer a REQUEST, or for `<uds>_<port>` to accept. */
export const VSOCK_DEFAULT_HANDSHAKE_MS = 2000;
/** First host port assigned to host-initiated connections (then counting up, as Firecracker). */
export const VSOCK_FIRST_LOCAL_PORT = 2 ** 30;
/** RSTs queued for the guest before tx processing pauses (until the guest takes them). */
const RST_BACKLOG = 64;
/** Longest CONNECT line accepted ("CONNECT 4294967295\n" is 19 bytes). */
const MAX_CONNECT_LINE = 32;

/** Options of {@link VsockUnixBackend.listen}. */
export interface VsockUnixBackendOptions {
  /** Most connections at once (default {@link VSOCK_DEFAULT_MAX_CONNECTIONS}, 1..4096). */
  readonly maxConnections?: number;
  /** Credit per connection in bytes (default {@link VSOCK_DEFAULT_BUF_ALLOC}, 4 KiB..16 MiB). */
  readonly bufAlloc?: number;
  /** Bytes waiting for host sockets, all connections together, before tx pauses (default {@link VSOCK_DEFAULT_TOTAL_TX_BYTES}). */
  readonly totalTxBytes?: number;
  /** Handshake timeout in ms (default {@link VSOCK_DEFAULT_HANDSHAKE_MS}). */
  readonly handshakeMs?: number;
  /** Called with a sentence for each thing that went wrong (for logs). */
  readonly onViolation?: (reason: string) => void;
}

function checkWhole(name: string, v: number, lo: number, hi: number): number {
  if (!Number.isSafeInteger(v) || v < lo || v > hi) {
    throw new VirtioDeviceError("InvalidArgument", `vsock ${name} must be an integer in ${lo}..${hi}, got ${String(v)}`);
  }
  return v;
}

/**
 * The Firecracker convention over Unix sockets (its `VsockUnixBackend`):
 *
 * - Host to guest: a host program connects to `udsPath` and writes
 *   `CONNECT <port>\n`; the backend assigns a host port (from 2^30 up), sends
 *   the guest a REQUEST to `<port>`, and once the guest answers RESPONSE writes
 *   `OK <assigned port>\n` to the host socket, after which the socket carries
 *   the stream. A guest RST, a bad or late line, or no answer within the
 *   handshake time closes the host socket.
 * - Guest to host: a REQUEST to host port P connects to the Unix socket
 *   `<udsPath>_<P>`; RESPONSE once it accepts, RST if it cannot be connected.
 *
 * Connections are bounded (`maxConnections`), each connection's buffering is
 * bounded by credit (see {@link VsockConnection}), and so is the total: tx
 * processing pauses while the guest's data waiting for host sockets exceeds
 * `totalTxBytes` or while RSTs pile up because the guest posts no rx buffers.
 */
export class VsockUnixBackend implements VsockBackend, VsockConnectionOwner {
  /** {@inheritDoc VsockBackend.metrics} */
  readonly metrics: VsockMetrics = newVsockMetrics();
  /** The listening socket's path; guest-initiated connections go to `<udsPath>_<port>`. */
  readonly udsPath: string;
  readonly #maxConnections: number;
  readonly #bufAlloc: number;
  readonly #totalTxBytes: number;
  readonly #handshakeMs: number;
  readonly #onViolation: ((reason: string) => void) | undefined;
  readonly #server: Server;
  readonly #conns = new Map<string, VsockConnection>();
  readonly #localPorts = new Set<number>();
  readonly #ready = new Set<VsockConnection>();
  readonly #handshakes = new Set<Socket>();
  /** Connections gone whose host socket is still flushing what the guest sent: they count against the limit. */
  readonly #lingering = new Set<VsockConnection>();
  #rst: [hostPort: number, guestPort: number][] = [];
  #nextPort = VSOCK_FIRST_LOCAL_PORT;
  #txBuffered = 0;
  #txWasBlocked = false;
  #host: VsockBackendHost | undefined;
  #closed = false;

  private constructor(udsPath: string, server: Server, opts: VsockUnixBackendOptions) {
    this.udsPath = udsPath;
    this.#server = server;
    this.#maxConnections = checkWhole("maxConnections", opts.maxConnections ?? VSOCK_DEFAULT_MAX_CONNECTIONS, 1, 4096);
    this.#bufAlloc = checkWhole("bufAlloc", opts.bufAlloc ?? VSOCK_DEFAULT_BUF_ALLOC, 4096, 16 * 1024 * 1024);
    this.#totalTxBytes = checkWhole("totalTxBytes", opts.totalTxBytes ?? VSOCK_DEFAULT_TOTAL_TX_BYTES, 64 * 1024, 2 ** 32);
    this.#handshakeMs = checkWhole("handshakeMs", opts.handshakeMs ?? VSOCK_DEFAULT_HANDSHAKE_MS, 1, 600_000);
    this.#onViolation = opts.onViolation;
    server.on("connection", (s: Socket) => this.#accept(s));
    server.on("error", (e) => this.note(`vsock: listener ${udsPath}: ${e.message}`));
  }

  /**
   * Listens on `udsPath` (bound before this returns). A stale socket file at
   * the path is removed first; any other file there is refused.
   * @throws {@link VirtioDeviceError} `"InvalidArgument"` for bad options or a path
   *   that is not a socket; `"Io"` if the socket cannot be bound.
   */
  static listen(udsPath: string, opts: VsockUnixBackendOptions = {}): VsockUnixBackend {
    if (typeof udsPath !== "string" || udsPath === "" || udsPath.includes("\0")) {
      throw new VirtioDeviceError("InvalidArgument", "vsock uds path must be a non-empty string");
    }
    try {
      if (lstatSync(udsPath).isSocket()) unlinkSync(udsPath);
      else throw new VirtioDeviceError("InvalidArgument", `vsock uds path ${udsPath} exists and is not a socket`);
    } catch (e) {
      if (e instanceof VirtioDeviceError) throw e;
      if ((e as { code?: string }).code !== "ENOENT") throw new VirtioDeviceError("Io", `vsock uds path ${udsPath}: ${(e as Error).message}`, { cause: e });
    }
    const server = createServer({ pauseOnConnect: true, allowHalfOpen: true, highWaterMark: 0 });
    let error: Error | undefined;
    server.once("error", (e) => (error = e));
    server.listen(udsPath); // binds synchronously; a failure is only emitted on the next tick
    if (!server.listening) {
      server.close();
      throw new VirtioDeviceError("Io", `cannot listen on vsock uds path ${udsPath}${error ? `: ${error.message}` : ""}`);
    }
    server.unref();
    try {
      return new VsockUnixBackend(udsPath, server, opts);
    } catch (e) {
      server.close();
      throw e;
    }
  }

  /** {@inheritDoc VsockConnectionOwner.guestCid} */
  get guestCid(): number {
    return this.#host?.guestCid ?? 0;
  }

  /** Open connections (any state but closed). */
  get connectionCount(): number {
    return this.#conns.size;
  }

  /** Connections gone whose host socket is still flushing (they count against `maxConnections`). */
  get lingeringCount(): number {
    return this.#lingering.size;
  }

  /** Bytes from the guest waiting for host sockets, all connections together. */
  get txBuffered(): number {
    return this.#txBuffered;
  }

  /** Host bytes read and waiting for the guest's credit, all connections together. */
  get rxBuffered(): number {
    let n = 0;
    for (const c of this.#conns.values()) n += c.pendingRead;
    return n;
  }

  /** {@inheritDoc VsockConnectionOwner.note} */
  note(reason: string): void {
    this.#onViolation?.(reason);
  }

  /** {@inheritDoc VsockBackend.attach} */
  attach(host: VsockBackendHost): void {
    this.#host = host;
  }

  /** {@inheritDoc VsockBackend.detach} */
  detach(): void {
    this.#host = undefined;
    for (const s of this.#handshakes) s.destroy();
    this.#handshakes.clear();
    for (const c of [...this.#conns.values()]) c.kill(false, true);
    this.#rst = [];
    this.#ready.clear();
  }

  /** {@inheritDoc VsockBackend.close} */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.detach();
    this.#server.close();
    try {
      unlinkSync(this.udsPath);
    } catch {
      // already gone
    }
  }

  #key(hostPort: number, guestPort: number): string {
    return `${hostPort}:${guestPort}`;
  }

  #full(): boolean {
    return this.#conns.size + this.#handshakes.size + this.#lingering.size >= this.#maxConnections;
  }

  #queueRst(hostPort: number, guestPort: number): void {
    this.#rst.push([hostPort, guestPort]);
    this.#host?.wakeRx();
  }

  // ---- host-initiated: CONNECT <port>\n ----

  #accept(s: Socket): void {
    if (this.#host === undefined || this.#full()) {
      if (this.#host !== undefined) this.metrics.connsRefusedLimit++;
      s.destroy();
      return;
    }
    this.#handshakes.add(s);
    let line = new Uint8Array(0);
    const fail = (why: string): void => {
      if (!this.#handshakes.delete(s)) return;
      this.metrics.hostHandshakeFailed++;
      this.note(`vsock: host connection on ${this.udsPath}: ${why}`);
      clearTimeout(timer);
      s.destroy();
    };
    const timer = setTimeout(() => fail("no CONNECT line in time"), this.#handshakeMs);
    timer.unref();
    const onReadable = (): void => {
      for (;;) {
        const c = s.read() as Buffer | null;
        if (c === null) return;
        const joined = new Uint8Array(line.length + c.length);
        joined.set(line);
        joined.set(c, line.length);
        line = joined;
        const nl = line.indexOf(0x0a);
        if (nl >= 0 && nl < MAX_CONNECT_LINE) {
          s.removeListener("readable", onReadable);
          s.removeListener("end", onEnd);
          s.removeListener("error", onError);
          clearTimeout(timer);
          this.#handshakes.delete(s);
          this.#connectLine(s, new TextDecoder().decode(line.subarray(0, nl)), line.subarray(nl + 1));
          return;
        }
        if (nl >= 0 || line.length >= MAX_CONNECT_LINE) return fail("CONNECT line too long");
      }
    };
    const onEnd = (): void => fail("closed before its CONNECT line");
    const onError = (e: Error): void => fail(e.message);
    s.on("readable", onReadable);
    s.on("end", onEnd);
    s.on("error", onError);
  }

  #connectLine(s: Socket, text: string, rest: Uint8Array): void {
    const m = /^CONNECT ([0-9]{1,10})$/.exec(text);
    const port = m ? Number(m[1]) : NaN;
    if (this.#host === undefined || !(port <= 0xffff_ffff)) {
      this.metrics.hostHandshakeFailed++;
      this.note(`vsock: host connection on ${this.udsPath}: bad CONNECT line ${JSON.stringify(text.slice(0, 40))}`);
      s.destroy();
      return;
    }
    const hostPort = this.#allocPort();
    const c = new VsockConnection(this, s, { hostPort, guestPort: port, bufAlloc: this.#bufAlloc, hostInitiated: true }, this.#handshakeMs, rest);
    this.#localPorts.add(hostPort);
    this.#conns.set(this.#key(hostPort, port), c);
    this.metrics.connsAdded++;
    this.ready(c);
  }

  #allocPort(): number {
    for (;;) {
      const p = this.#nextPort;
      this.#nextPort = this.#nextPort === 0xffff_ffff ? VSOCK_FIRST_LOCAL_PORT : this.#nextPort + 1;
      if (!this.#localPorts.has(p)) return p;
    }
  }

  // ---- packets from the guest ----

  /** {@inheritDoc VsockBackend.send} */
  send(h: VsockHeader, payload: Uint8Array): void {
    if (this.#host === undefined) return;
    const c = this.#conns.get(this.#key(h.dstPort, h.srcPort));
    if (h.op === VSOCK_OP_RST) {
      c?.kill(false, false);
      return;
    }
    if (c === undefined) {
      if (h.op === VSOCK_OP_REQUEST) this.#guestConnect(h);
      else this.#queueRst(h.dstPort, h.srcPort); // no such connection (§5.10.6.4)
      return;
    }
    if (h.op !== VSOCK_OP_REQUEST) c.updateCredit(h);
    const wrong = c.fromGuest(h, payload);
    if (wrong !== undefined) this.metrics.malformed[wrong]++;
  }

  #guestConnect(h: VsockHeader): void {
    if (this.#full()) {
      this.metrics.connsRefusedLimit++;
      this.#queueRst(h.dstPort, h.srcPort);
      return;
    }
    const path = `${this.udsPath}_${h.dstPort}`;
    // readableHighWaterMark 0: Node reads one chunk per read() call and never ahead (see VsockConnection).
    const opts = { allowHalfOpen: true, readableHighWaterMark: 0 };
    const s = new Socket(opts);
    s.pause();
    s.connect({ path });
    s.once("error", () => {
      if (c.state === "connecting") this.metrics.hostConnectFailed++;
    });
    const c = new VsockConnection(this, s, { hostPort: h.dstPort, guestPort: h.srcPort, bufAlloc: this.#bufAlloc, hostInitiated: false }, this.#handshakeMs);
    this.#conns.set(this.#key(h.dstPort, h.srcPort), c);
    this.metrics.connsAdded++;
    c.updateCredit(h);
  }

  /** {@inheritDoc VsockBackend.reject} */
  reject(h: VsockHeader): void {
    if (this.#host === undefined || h.op === VSOCK_OP_RST) return; // never answer an RST
    const c = this.#conns.get(this.#key(h.dstPort, h.srcPort));
    c?.kill(false, true);
    this.#queueRst(h.dstPort, h.srcPort);
  }

  // ---- packets for the guest ----

  /** {@inheritDoc VsockBackend.hasRx} */
  hasRx(): boolean {
    if (this.#host === undefined) return false;
    if (this.#rst.length > 0) return true;
    for (const c of this.#ready) {
      if (c.hasRx()) return true;
      this.#ready.delete(c);
    }
    return false;
  }

  /** {@inheritDoc VsockBackend.recv} */
  recv(maxPayload: number): VsockRxPacket | undefined {
    const host = this.#host;
    if (host === undefined) return undefined;
    const r = this.#rst.shift();
    if (r !== undefined) {
      this.metrics.rstSent++;
      if (this.#rst.length === RST_BACKLOG - 1) this.#maybeWakeTx();
      const header: VsockHeader = {
        srcCid: VSOCK_HOST_CID, dstCid: host.guestCid, srcPort: r[0], dstPort: r[1], len: 0,
        type: VSOCK_TYPE_STREAM, op: VSOCK_OP_RST, flags: 0, bufAlloc: 0, fwdCnt: 0,
      };
      return { header, payload: new Uint8Array(0) };
    }
    for (const c of this.#ready) {
      this.#ready.delete(c);
      if (!c.hasRx()) continue;
      const p = c.recv(maxPayload);
      if (c.hasRx()) this.#ready.add(c); // to the back: round robin
      return p;
    }
    return undefined;
  }

  /** {@inheritDoc VsockBackend.txBlocked} */
  txBlocked(): boolean {
    const blocked = this.#rst.length >= RST_BACKLOG || this.#txBuffered >= this.#totalTxBytes;
    if (blocked) this.#txWasBlocked = true;
    return blocked;
  }

  #maybeWakeTx(): void {
    if (this.#txWasBlocked && !this.txBlocked()) {
      this.#txWasBlocked = false;
      this.#host?.wakeTx();
    }
  }

  // ---- VsockConnectionOwner ----

  /** {@inheritDoc VsockConnectionOwner.ready} */
  ready(c: VsockConnection): void {
    if (c.state === "closed") return;
    this.#ready.add(c);
    this.#host?.wakeRx();
  }

  /** {@inheritDoc VsockConnectionOwner.closed} */
  closed(c: VsockConnection, rst: boolean): void {
    const key = this.#key(c.hostPort, c.guestPort);
    if (this.#conns.get(key) !== c) return;
    this.#conns.delete(key);
    if (c.hostInitiated) this.#localPorts.delete(c.hostPort);
    this.#ready.delete(c);
    this.metrics.connsRemoved++;
    if (!c.socketClosed) this.#lingering.add(c);
    if (rst && this.#host !== undefined) this.#queueRst(c.hostPort, c.guestPort);
  }

  /** {@inheritDoc VsockConnectionOwner.socketGone} */
  socketGone(c: VsockConnection): void {
    this.#lingering.delete(c);
  }

  /** {@inheritDoc VsockConnectionOwner.buffered} */
  buffered(n: number): void {
    this.#txBuffered += n;
  }

  /** {@inheritDoc VsockConnectionOwner.drained} */
  drained(n: number): void {
    this.#txBuffered -= n;
    this.#maybeWakeTx();
  }

  /** {@inheritDoc VsockConnectionOwner.timedOut} */
  timedOut(c: VsockConnection): void {
    if (c.hostInitiated) this.metrics.hostHandshakeFailed++;
    else this.metrics.hostConnectFailed++;
  }
}
