// Test helper: a vsock guest driver over the mock rings (rx, tx, event), the
// way Linux's virtio_transport drives the device: rx buffers of header + 4 KiB,
// one tx chain per packet.
import type { MockSplitQueue } from "@ts-vmm/virtio-queue/mock";
import { VSOCK_HEADER_SIZE, VSOCK_OP_RW, decodeHeader, encodeHeader, type VsockHeader } from "../src/index.js";
import type { Rig } from "./driver.js";

export interface GuestPacket {
  readonly h: VsockHeader;
  readonly data: Uint8Array;
}

const RX_BASE = 0x200000;
const RX_STRIDE = 0x2000;
/** tx packets are bump-allocated in [TX_BASE, TX_END), wrapping (a test keeps less than that in flight). */
export const TX_BASE = 0x800000;
const TX_END = 0xf00000;

export class VsockGuest {
  readonly received: GuestPacket[] = [];
  #txAt = TX_BASE;
  #cursor = 0;
  readonly #rxLen: Map<number, number> = new Map();
  readonly #free: number[] = Array.from({ length: 512 }, (_, i) => RX_BASE + i * RX_STRIDE);

  constructor(
    public r: Rig,
    readonly rx: MockSplitQueue,
    readonly tx: MockSplitQueue,
    readonly ev: MockSplitQueue,
    readonly cid: number,
  ) {}

  /** Posts `n` rx buffers of `len` bytes (default header + 4 KiB) and notifies. */
  postRx(n: number, len = VSOCK_HEADER_SIZE + 4096): void {
    for (let i = 0; i < n; i++) {
      const addr = this.#free.pop();
      if (addr === undefined) throw new Error("out of rx buffers");
      const head = this.rx.addChain([{ addr, len, writable: true }]);
      this.#rxLen.set(head, addr);
    }
    this.r.t.notify(0);
  }

  /** Sends one packet (defaults: from this CID to the host, STREAM, buf_alloc 256 KiB, fwd_cnt 0). */
  send(h: Partial<VsockHeader> & { op: number }, data: Uint8Array = new Uint8Array(0), opts: { notify?: boolean; chainLen?: number } = {}): void {
    const full: VsockHeader = {
      srcCid: this.cid, dstCid: 2, srcPort: 0, dstPort: 0, len: data.length, type: 1, flags: 0, bufAlloc: 256 * 1024, fwdCnt: 0, ...h,
    };
    const len = Math.max(VSOCK_HEADER_SIZE + data.length, opts.chainLen ?? 0);
    if (this.#txAt + len > TX_END) this.#txAt = TX_BASE;
    const addr = this.#txAt;
    this.#txAt += (len + 63) & ~63;
    this.r.mem.write(addr, encodeHeader(full));
    if (data.length > 0) this.r.mem.write(addr + VSOCK_HEADER_SIZE, data);
    this.tx.addChain([{ addr, len: opts.chainLen ?? VSOCK_HEADER_SIZE + data.length }]);
    if (opts.notify ?? true) this.r.t.notify(1);
  }

  /** tx chains the device completed so far. */
  txCompleted = 0;

  /** Takes completed tx chains (frees descriptors); returns how many were new. */
  reapTx(): number {
    const k = this.tx.takeUsed().length;
    this.txCompleted += k;
    return k;
  }

  /** Reads the rx used ring into `received`, re-posting each buffer. Returns the new packets. */
  poll(repost = true): GuestPacket[] {
    this.reapTx();
    const got: GuestPacket[] = [];
    const used = this.rx.takeUsed().map((u) => {
      const addr = this.#rxLen.get(u.id);
      this.#rxLen.delete(u.id);
      if (addr === undefined) throw new Error(`rx used id ${u.id} unknown`);
      return { ...u, addr };
    });
    for (const u of used) {
      const addr = u.addr;
      if (u.len >= VSOCK_HEADER_SIZE) {
        const b = new Uint8Array(u.len);
        this.r.mem.read(addr, b);
        const h = decodeHeader(b);
        if (h.len !== u.len - VSOCK_HEADER_SIZE) throw new Error(`rx len ${u.len} but header len ${h.len}`);
        const p = { h, data: b.slice(VSOCK_HEADER_SIZE) };
        got.push(p);
        this.received.push(p);
      }
      if (repost) {
        const head = this.rx.addChain([{ addr, len: VSOCK_HEADER_SIZE + 4096, writable: true }]);
        this.#rxLen.set(head, addr);
      } else this.#free.push(addr);
    }
    if (used.length > 0 && repost) this.r.t.notify(0);
    return got;
  }

  /** Polls until a packet matching `pred` is among those received since the last match (or throws after `ms`). */
  async waitFor(pred: (p: GuestPacket) => boolean, ms = 3000): Promise<GuestPacket> {
    const deadline = Date.now() + ms;
    for (;;) {
      this.poll();
      for (; this.#cursor < this.received.length; this.#cursor++) {
        const p = this.received[this.#cursor]!;
        if (pred(p)) {
          this.#cursor++;
          return p;
        }
      }
      if (Date.now() > deadline) throw new Error(`no matching packet in ${ms} ms; got ${JSON.stringify(this.received.map((p) => p.h))}`);
      await new Promise((res) => setTimeout(res, 5));
    }
  }

  /** Concatenated RW payload received on (hostPort, guestPort) so far. */
  dataOn(hostPort: number, guestPort: number): Buffer {
    return Buffer.concat(this.received.filter((p) => p.h.op === VSOCK_OP_RW && p.h.srcPort === hostPort && p.h.dstPort === guestPort).map((p) => p.data));
  }
}
