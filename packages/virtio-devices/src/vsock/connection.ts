import type { Socket } from "node:net";
import {
  VSOCK_HOST_CID,
  VSOCK_OP_CREDIT_REQUEST,
  VSOCK_OP_CREDIT_UPDATE,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RST,
  VSOCK_OP_RW,
  VSOCK_OP_SHUTDOWN,
  VSOCK_SHUTDOWN_RCV,
  VSOCK_SHUTDOWN_SEND,
  VSOCK_TYPE_STREAM,
  type VsockHeader,
  type VsockRxPacket,
} from "./packet.js";

/** How long a socket closed by the guest may take to flush what the guest sent before it is destroyed. */
export const VSOCK_LINGER_MS = 10_000;

/**
 * Where a connection is:
 * - `"connecting"`: the guest asked (REQUEST); the host socket `<uds>_<port>` is being connected.
 * - `"requesting"`: the host asked (CONNECT line); a REQUEST is queued or sent, the guest has not answered.
 * - `"established"`: data flows both ways (each side may have shut one direction).
 * - `"closed"`: gone from the muxer; the host socket may still be flushing what the guest sent.
 */
export type VsockConnectionState = "connecting" | "requesting" | "established" | "closed";

/** What a connection needs from its muxer. */
export interface VsockConnectionOwner {
  /** The guest's CID (destination of every packet the connection builds). */
  readonly guestCid: number;
  /** The connection may have a packet for the guest. */
  ready(c: VsockConnection): void;
  /** The connection is gone; `rst`: queue an RST for it. Called once. */
  closed(c: VsockConnection, rst: boolean): void;
  /** `n` bytes the guest sent left this connection's write buffer (flushed, or dropped with the socket). */
  drained(n: number): void;
  /** `n` bytes the guest sent entered this connection's write buffer. */
  buffered(n: number): void;
  /** The host socket is closed for good (after `closed`, possibly much later while it flushed). Called once. */
  socketGone(c: VsockConnection): void;
  /** A `"connecting"` or `"requesting"` connection timed out (it is then reset). */
  timedOut(c: VsockConnection): void;
  /** For logs. */
  note(reason: string): void;
}

const CTL_REQUEST = 1;
const CTL_RESPONSE = 2;
const CTL_CREDIT_UPDATE = 4;
const CTL_CREDIT_REQUEST = 8;

/**
 * One vsock stream between a guest port and a host Unix socket, with the
 * spec's credit flow control in both directions (§5.10.6.3):
 *
 * - guest → host: the device offers `bufAlloc` bytes and counts in `fwdCnt`
 *   what the host socket has taken (write callbacks). Data beyond that credit
 *   is a protocol violation (the muxer answers RST), so at most `bufAlloc`
 *   bytes per connection wait for a slow host socket.
 * - host → guest: the guest's `buf_alloc` / `fwd_cnt` from each of its
 *   packets; the device never sends more than `buf_alloc - (rx_cnt - fwd_cnt)`,
 *   and reads the host socket only when that credit is positive and the last
 *   chunk read is delivered. A read takes at most one libuv chunk (64 KiB;
 *   the socket's high-water mark is 0, so Node does not read ahead), so at most
 *   64 KiB per connection wait in host memory for a guest that does not read.
 */
export class VsockConnection {
  /** The host side's port (the `<port>` of `<uds>_<port>`, or the one assigned to a host CONNECT). */
  readonly hostPort: number;
  /** The guest side's port. */
  readonly guestPort: number;
  /** Credit offered to the guest (bytes of host-socket write buffer). */
  readonly bufAlloc: number;
  /** Whether the host started it (CONNECT) rather than the guest (REQUEST). */
  readonly hostInitiated: boolean;
  #state: VsockConnectionState;
  readonly #owner: VsockConnectionOwner;
  readonly #sock: Socket;
  #peerBufAlloc = 0;
  #peerFwdCnt = 0;
  #rxCnt = 0;
  #fwdCnt = 0;
  #lastFwdSent = 0;
  #pendingWrite = 0;
  #accounted = false;
  #rxData: Uint8Array | undefined;
  #hostEof = false;
  #eofSent = false;
  #guestShutSend = false;
  #guestShutRcv = false;
  #askedCredit = false;
  #ctl = 0;
  #listening = false;
  #sockClosed = false;
  #timer: NodeJS.Timeout | undefined;

  /**
   * @param sock - the host socket (paused; created with `highWaterMark: 0` and `allowHalfOpen`).
   * @param initial - host bytes already read (after a CONNECT line), delivered once established.
   * @param timeoutMs - how long `"connecting"` / `"requesting"` may last before the connection is reset.
   */
  constructor(
    owner: VsockConnectionOwner,
    sock: Socket,
    init: { readonly hostPort: number; readonly guestPort: number; readonly bufAlloc: number; readonly hostInitiated: boolean },
    timeoutMs: number,
    initial?: Uint8Array,
  ) {
    this.#owner = owner;
    this.#sock = sock;
    this.hostPort = init.hostPort;
    this.guestPort = init.guestPort;
    this.bufAlloc = init.bufAlloc;
    this.hostInitiated = init.hostInitiated;
    this.#state = init.hostInitiated ? "requesting" : "connecting";
    if (initial !== undefined && initial.length > 0) this.#rxData = initial;
    if (init.hostInitiated) this.#ctl |= CTL_REQUEST;
    this.#timer = setTimeout(() => {
      this.#owner.note(`vsock: ${this.#state} connection host:${this.hostPort} guest:${this.guestPort} timed out`);
      this.#owner.timedOut(this);
      this.kill(true, true);
    }, timeoutMs);
    this.#timer.unref();
    sock.on("end", () => {
      this.#hostEof = true;
      this.#owner.ready(this);
    });
    sock.on("error", (e) => {
      this.#owner.note(`vsock: host socket of host:${this.hostPort} guest:${this.guestPort}: ${e.message}`);
      this.kill(true, true);
    });
    sock.on("close", () => {
      this.#sockClosed = true;
      this.kill(true, true);
      this.#owner.socketGone(this);
      if (!this.#accounted) {
        this.#accounted = true;
        if (this.#pendingWrite > 0) this.#owner.drained(this.#pendingWrite);
        this.#pendingWrite = 0;
      }
    });
    if (!init.hostInitiated) {
      sock.once("connect", () => {
        if (this.#state !== "connecting") return;
        this.#established();
        this.#ctl |= CTL_RESPONSE;
        this.#owner.ready(this);
      });
    }
  }

  /** Where the connection is. */
  get state(): VsockConnectionState {
    return this.#state;
  }

  /** Whether the host socket has closed (a closed connection may still be flushing it). */
  get socketClosed(): boolean {
    return this.#sockClosed;
  }

  /** Bytes the guest sent that the host socket has not taken yet. */
  get pendingWrite(): number {
    return this.#pendingWrite;
  }

  /** Host bytes read and waiting for the guest's credit (at most one chunk). */
  get pendingRead(): number {
    return this.#rxData?.length ?? 0;
  }

  #established(): void {
    this.#state = "established";
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#pull();
    if (this.hasRx()) this.#owner.ready(this); // bytes that came with the CONNECT line
  }

  /** The guest's credit: how many bytes it can take now (0 if its counters make no sense). */
  #peerFree(): number {
    const inFlight = (this.#rxCnt - this.#peerFwdCnt) >>> 0;
    return inFlight > this.#peerBufAlloc ? 0 : this.#peerBufAlloc - inFlight;
  }

  /** Takes `buf_alloc` / `fwd_cnt` from any guest packet on this connection. */
  updateCredit(h: VsockHeader): void {
    this.#peerBufAlloc = h.bufAlloc;
    this.#peerFwdCnt = h.fwdCnt;
    if (this.#peerFree() > 0) this.#askedCredit = false;
    this.#pull();
    if (this.hasRx()) this.#owner.ready(this);
  }

  /**
   * A guest packet for this connection (header already checked by the
   * device, credit already taken). Returns what was wrong for a protocol
   * violation — `"op"` (an op the state does not allow) or `"credit"` (data
   * beyond the credit given) — after resetting the connection; the caller
   * counts it. `undefined` when the packet was fine.
   */
  fromGuest(h: VsockHeader, payload: Uint8Array): "op" | "credit" | undefined {
    if (this.#state === "closed") return undefined;
    switch (h.op) {
      case VSOCK_OP_RESPONSE:
        if (this.#state !== "requesting") return this.#violation();
        this.#established();
        this.#sock.write(`OK ${this.hostPort}\n`);
        return undefined;
      case VSOCK_OP_RST:
        this.kill(false, false);
        return undefined;
      case VSOCK_OP_SHUTDOWN:
        if (this.#state !== "established") return this.#violation();
        if (h.flags & VSOCK_SHUTDOWN_RCV) this.#guestShutRcv = true;
        if (h.flags & VSOCK_SHUTDOWN_SEND && !this.#guestShutSend) {
          this.#guestShutSend = true;
          this.#sock.end(); // after everything already written: Node flushes first
        }
        // Both directions shut by the guest: a clean close, answered with RST (§5.10.6.6).
        if (this.#guestShutRcv && this.#guestShutSend) this.kill(true, false);
        else this.#maybeDone();
        return undefined;
      case VSOCK_OP_RW: {
        if (this.#state !== "established" || this.#guestShutSend) return this.#violation();
        const n = payload.length;
        if (n === 0) return undefined;
        if (this.#pendingWrite + n > this.bufAlloc) return this.#violation("credit");
        this.#pendingWrite += n;
        this.#owner.buffered(n);
        this.#sock.write(payload, (err) => this.#wrote(n, err));
        return undefined;
      }
      case VSOCK_OP_CREDIT_UPDATE:
        return undefined; // the credit was taken from the header
      case VSOCK_OP_CREDIT_REQUEST:
        this.#ctl |= CTL_CREDIT_UPDATE;
        this.#owner.ready(this);
        return undefined;
      default:
        return this.#violation(); // a second REQUEST
    }
  }

  #violation(what: "op" | "credit" = "op"): "op" | "credit" {
    this.kill(true, false);
    return what;
  }

  #wrote(n: number, err: Error | null | undefined): void {
    if (this.#accounted) return;
    this.#pendingWrite -= n;
    this.#owner.drained(n);
    if (err) return; // the 'error' handler resets the connection
    this.#fwdCnt = (this.#fwdCnt + n) >>> 0;
    if (this.#state === "closed") return;
    // Tell the guest about freed space once a quarter of the buffer was forwarded since
    // the last fwd_cnt it saw (every packet carries fwd_cnt too): its view of our free
    // space then never drops below 3/4 of buf_alloc once we have flushed, so it never stalls.
    if (((this.#fwdCnt - this.#lastFwdSent) >>> 0) >= this.bufAlloc / 4) {
      this.#ctl |= CTL_CREDIT_UPDATE;
      this.#owner.ready(this);
    }
    this.#maybeDone();
  }

  /** Reads the next chunk from the host socket when the guest has credit and the last chunk went out. */
  #pull(): void {
    if (this.#state !== "established" || this.#guestShutRcv || this.#hostEof || this.#rxData !== undefined) return;
    if (this.#peerFree() === 0) return;
    if (!this.#listening) {
      this.#listening = true;
      this.#sock.on("readable", () => this.#pull()); // attaching starts one read
      return;
    }
    const c = this.#sock.read() as Buffer | null;
    if (c === null || c.length === 0) return; // a read was started: "readable" comes back (or "end")
    this.#rxData = c;
    this.#owner.ready(this);
  }

  #canSendData(): boolean {
    return this.#state === "established" && !this.#guestShutRcv && this.#rxData !== undefined && this.#peerFree() > 0;
  }

  #eofDue(): boolean {
    return this.#state === "established" && this.#hostEof && !this.#eofSent && (this.#rxData === undefined || this.#guestShutRcv);
  }

  /** Whether {@link VsockConnection.recv} has a packet now. */
  hasRx(): boolean {
    if (this.#state === "closed") return false;
    if (this.#ctl !== 0 || this.#canSendData() || this.#eofDue()) return true;
    if (this.#state === "established" && this.#rxData !== undefined && !this.#guestShutRcv && !this.#askedCredit) return true; // CREDIT_REQUEST
    return false;
  }

  #packet(op: number, flags = 0, payload: Uint8Array = new Uint8Array(0)): VsockRxPacket {
    this.#lastFwdSent = this.#fwdCnt;
    this.#ctl &= ~CTL_CREDIT_UPDATE; // every packet announces fwd_cnt
    return {
      header: {
        srcCid: VSOCK_HOST_CID,
        dstCid: this.#owner.guestCid,
        srcPort: this.hostPort,
        dstPort: this.guestPort,
        len: payload.length,
        type: VSOCK_TYPE_STREAM,
        op,
        flags,
        bufAlloc: this.bufAlloc,
        fwdCnt: this.#fwdCnt,
      },
      payload,
    };
  }

  /** The next packet for the guest (control first, then data, then EOF), at most `maxPayload` data bytes. */
  recv(maxPayload: number): VsockRxPacket | undefined {
    if (this.#state === "closed") return undefined;
    if (this.#ctl & CTL_REQUEST) {
      this.#ctl &= ~CTL_REQUEST;
      return this.#packet(VSOCK_OP_REQUEST);
    }
    if (this.#ctl & CTL_RESPONSE) {
      this.#ctl &= ~CTL_RESPONSE;
      return this.#packet(VSOCK_OP_RESPONSE);
    }
    if (this.#canSendData() && maxPayload > 0) {
      const d = this.#rxData as Uint8Array;
      const n = Math.min(maxPayload, this.#peerFree(), d.length);
      this.#rxData = n === d.length ? undefined : d.subarray(n);
      this.#rxCnt = (this.#rxCnt + n) >>> 0;
      const p = this.#packet(VSOCK_OP_RW, 0, d.subarray(0, n));
      this.#pull();
      return p;
    }
    if (this.#eofDue()) {
      this.#eofSent = true;
      const p = this.#packet(VSOCK_OP_SHUTDOWN, VSOCK_SHUTDOWN_SEND);
      queueMicrotask(() => this.#maybeDone());
      return p;
    }
    if (this.#ctl & CTL_CREDIT_REQUEST) {
      this.#ctl &= ~CTL_CREDIT_REQUEST;
      return this.#packet(VSOCK_OP_CREDIT_REQUEST);
    }
    if (this.#state === "established" && this.#rxData !== undefined && !this.#guestShutRcv && !this.#askedCredit && this.#peerFree() === 0) {
      this.#askedCredit = true; // data waits for credit: ask once, then wait for the guest's update
      return this.#packet(VSOCK_OP_CREDIT_REQUEST);
    }
    // A CREDIT_UPDATE, or a 44-byte chain that cannot take data: a credit update is always valid.
    return this.#packet(VSOCK_OP_CREDIT_UPDATE);
  }

  /** Both directions finished (host EOF told to the guest, the guest's SHUTDOWN SEND flushed): close with RST. */
  #maybeDone(): void {
    if (this.#state === "established" && this.#eofSent && this.#guestShutSend && this.#pendingWrite === 0) this.kill(true, false);
  }

  /**
   * Ends the connection: leaves the muxer (with an RST for the guest if
   * `rst`), and closes the host socket — at once if `abort`, otherwise after
   * what the guest already sent is flushed (at most {@link VSOCK_LINGER_MS}).
   * Idempotent.
   */
  kill(rst: boolean, abort: boolean): void {
    if (this.#state === "closed") {
      if (abort) this.#sock.destroy();
      return;
    }
    this.#state = "closed";
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#rxData = undefined;
    this.#owner.closed(this, rst);
    if (abort || this.#sock.destroyed) {
      this.#sock.destroy();
      return;
    }
    this.#sock.removeAllListeners("readable");
    this.#sock.end(() => this.#sock.destroy());
    setTimeout(() => this.#sock.destroy(), VSOCK_LINGER_MS).unref();
  }
}
