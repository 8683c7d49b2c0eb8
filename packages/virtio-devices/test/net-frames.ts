// Test helpers for virtio-net: Ethernet/ARP/IPv4/TCP frames built by hand,
// and a guest-side view of the rx and tx queues over the mock driver.
import type { MockSplitQueue } from "@ts-vmm/virtio-queue/mock";
import type { Rig } from "./driver.js";

export const GUEST_MAC = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
export const GUEST_IP = [10, 0, 2, 15];
export const PEER_IP = [10, 0, 2, 2];

/** An ARP who-has `target` from the guest (42 bytes). */
export function arpRequest(target = PEER_IP, senderIp = GUEST_IP, mac = GUEST_MAC): Uint8Array {
  const f = new Uint8Array(42);
  f.fill(0xff, 0, 6);
  f.set(mac, 6);
  f[12] = 0x08;
  f[13] = 0x06;
  f.set([0, 1, 8, 0, 6, 4, 0, 1], 14);
  f.set(mac, 22);
  f.set(senderIp, 28);
  f.set(target, 38);
  return f;
}

/** The peer's MAC if `frame` (without vnet header) is an ARP reply from `peerIp` to `mac`, else undefined. */
export function arpReplyFrom(frame: Uint8Array, peerIp = PEER_IP, mac = GUEST_MAC): number[] | undefined {
  if (frame.length < 42 || frame[12] !== 0x08 || frame[13] !== 0x06 || frame[20] !== 0 || frame[21] !== 2) return undefined;
  if (!peerIp.every((b, i) => frame[28 + i] === b)) return undefined;
  if (!mac.every((b, i) => frame[32 + i] === b)) return undefined;
  return [...frame.subarray(22, 28)];
}

function sum16(b: Uint8Array, start: number, end: number, acc = 0): number {
  for (let i = start; i < end; i += 2) acc += ((b[i] as number) << 8) | (i + 1 < end ? (b[i + 1] as number) : 0);
  return acc;
}
function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/**
 * A TCP/IPv4 segment from the guest to the peer (no ACK flag, PSH only) with
 * `payload` bytes, for NEEDS_CSUM: the TCP checksum field holds the
 * pseudo-header sum (as a driver leaves it for the device), the IP header
 * checksum is complete.
 */
export function tcpSegment(peerMac: number[], payload: number, seq: number, port = 4000): Uint8Array {
  const f = new Uint8Array(14 + 20 + 20 + payload);
  f.set(peerMac, 0);
  f.set(GUEST_MAC, 6);
  f[12] = 0x08;
  f[13] = 0x00;
  const ip = 14;
  const total = 20 + 20 + payload;
  f.set([0x45, 0, total >> 8, total & 0xff, 0, 1, 0x40, 0, 64, 6, 0, 0], ip);
  f.set(GUEST_IP, ip + 12);
  f.set(PEER_IP, ip + 16);
  const ipc = ~fold(sum16(f, ip, ip + 20)) & 0xffff;
  f[ip + 10] = ipc >> 8;
  f[ip + 11] = ipc & 0xff;
  const tcp = ip + 20;
  f.set([0xc0, 0x00, port >> 8, port & 0xff], tcp);
  new DataView(f.buffer).setUint32(tcp + 4, seq >>> 0);
  f[tcp + 12] = 5 << 4;
  f[tcp + 13] = 0x08; // PSH
  f[tcp + 14] = 0xff;
  f[tcp + 15] = 0xff;
  for (let i = 0; i < payload; i++) f[tcp + 20 + i] = i & 0xff;
  // Pseudo-header: src, dst, protocol, TCP length.
  const tcpLen = 20 + payload;
  const pseudo = fold(sum16(f, ip + 12, ip + 20) + 6 + tcpLen);
  f[tcp + 16] = pseudo >> 8;
  f[tcp + 17] = pseudo & 0xff;
  return f;
}

/** If `frame` is a TCP RST from the peer, its ack number. */
export function tcpRstAck(frame: Uint8Array): number | undefined {
  if (frame.length < 54 || frame[12] !== 0x08 || frame[13] !== 0 || frame[23] !== 6) return undefined;
  const tcp = 14 + ((frame[14] as number) & 0xf) * 4;
  if (((frame[tcp + 13] as number) & 0x04) === 0) return undefined;
  return new DataView(frame.buffer, frame.byteOffset).getUint32(tcp + 8);
}

/** A 12-byte virtio_net_hdr. */
export function vnetHeader(h: { flags?: number; gsoType?: number; hdrLen?: number; gsoSize?: number; csumStart?: number; csumOffset?: number } = {}): Uint8Array {
  const b = new Uint8Array(12);
  const v = new DataView(b.buffer);
  b[0] = h.flags ?? 0;
  b[1] = h.gsoType ?? 0;
  v.setUint16(2, h.hdrLen ?? 0, true);
  v.setUint16(4, h.gsoSize ?? 0, true);
  v.setUint16(6, h.csumStart ?? 0, true);
  v.setUint16(8, h.csumOffset ?? 0, true);
  return b;
}

/** Guest side of the device's two queues. */
export class GuestNet {
  #txAt = 0x40_0000;
  readonly rxBase = 0x80_0000;
  constructor(
    readonly r: Rig,
    readonly rxq: MockSplitQueue,
    readonly txq: MockSplitQueue,
  ) {}

  /** Sends `frame` with `hdr` (default: a zero header) as one readable chain, and notifies. */
  send(frame: Uint8Array, hdr: Uint8Array = vnetHeader(), notify = true): number {
    const at = this.#txAt;
    this.#txAt += (hdr.length + frame.length + 0xfff) & ~0xfff;
    if (this.#txAt > 0x7f_0000) this.#txAt = 0x40_0000;
    this.r.mem.write(at, hdr);
    this.r.mem.write(at + hdr.length, frame);
    const head = this.txq.addChain([{ addr: at, len: hdr.length + frame.length }]);
    if (notify) this.r.t.notify(1);
    return head;
  }

  #slot = 0;
  /** Posts `n` receive buffers of `len` bytes (≤ 64 KiB) each, one chain each, and notifies. */
  post(n: number, len = 2048, notify = true): void {
    for (let i = 0; i < n; i++) {
      const addr = this.rxBase + (this.#slot++ % 64) * 0x1_0000;
      this.postChain([{ addr, len, writable: true }], false);
    }
    if (notify) this.r.t.notify(0);
  }

  /** Used receive entries with their bytes (header first), in order. */
  received(): { id: number; len: number; bytes: Uint8Array }[] {
    return this.rxq.takeUsed().map((u) => {
      const addr = this.rxAddr(u.id);
      return { id: u.id, len: u.len, bytes: addr === undefined ? new Uint8Array(0) : this.r.mem.slice(addr, Math.min(u.len, 0x1_0000)).slice() };
    });
  }

  #addrs = new Map<number, number>();
  /** Posts one chain with the given buffers, remembering the first buffer's address for `received`. */
  postChain(buffers: { addr: number; len: number; writable?: boolean }[], notify = true): number {
    const head = this.rxq.addChain(buffers);
    this.#addrs.set(head, buffers[0]!.addr);
    if (notify) this.r.t.notify(0);
    return head;
  }

  rxAddr(head: number): number | undefined {
    const a = this.#addrs.get(head);
    if (a !== undefined) {
      this.#addrs.delete(head);
      return a;
    }
    return undefined;
  }
}

/** Resolves once `cond()` holds, checking every 5 ms; rejects after `ms`. */
export async function until(cond: () => boolean, ms = 3000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
