// Pure checks of virtio-net's data path: what a transmit header may ask for
// given the negotiated features, which receive chains are usable, and the tap
// offloads that the negotiated receive features allow.
import { sliceRange, type GuestMemory, type GuestMemoryRegion } from "@ts-vmm/vm-memory";
import type { ReusableChain } from "@ts-vmm/virtio-queue";
import { TUN_F } from "@ts-vmm/vmm-sys-util";
import {
  ETH_HLEN,
  NET_HDR_SIZE,
  NET_MAX_BUFFER,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
} from "./constants.js";

/** Most views one transmit writev or receive readv takes (Linux's IOV_MAX). @internal */
export const IOV_MAX = 1024;

/** What {@link rxChainViews} answers for a chain in more pieces than asked (not a guest error: copy instead). @internal */
export const RX_TOO_MANY_PIECES = "too many pieces";

/**
 * TUN_F offloads for the tap from the receive features the driver
 * negotiated, honouring the spec's dependencies (TSO needs GUEST_CSUM, ECN
 * needs TSO), so a driver that broke them cannot make the tap refuse.
 * @internal
 */
export function tunOffloadFlags(features: bigint): number {
  if (!(features & VIRTIO_NET_F_GUEST_CSUM)) return 0;
  let f = TUN_F.CSUM;
  if (features & VIRTIO_NET_F_GUEST_TSO4) f |= TUN_F.TSO4;
  if (features & VIRTIO_NET_F_GUEST_TSO6) f |= TUN_F.TSO6;
  if (features & VIRTIO_NET_F_GUEST_ECN && f & (TUN_F.TSO4 | TUN_F.TSO6)) f |= TUN_F.TSO_ECN;
  return f;
}

/** Bits of {@link txOffloadMask}: the transmit offloads a driver negotiated, as a small number. @internal */
export const TX_CSUM = 1;
/** @internal */
export const TX_TSO4 = 2;
/** @internal */
export const TX_TSO6 = 4;
/** @internal */
export const TX_ECN = 8;

/**
 * The transmit offloads in `features` (VIRTIO_NET_F_CSUM, HOST_TSO4, HOST_TSO6, HOST_ECN) as
 * {@link TX_CSUM} | … bits, computed once per activation so that checking a frame's header
 * costs no BigInt operation.
 * @internal
 */
export function txOffloadMask(features: bigint): number {
  let m = 0;
  if (features & VIRTIO_NET_F_CSUM) m |= TX_CSUM;
  if (features & VIRTIO_NET_F_HOST_TSO4) m |= TX_TSO4;
  if (features & VIRTIO_NET_F_HOST_TSO6) m |= TX_TSO6;
  if (features & VIRTIO_NET_F_HOST_ECN) m |= TX_ECN;
  return m;
}

/**
 * Why a transmit header asks for something the driver did not negotiate (or
 * that does not exist), or undefined if it is acceptable; `offloads` is
 * {@link txOffloadMask} of the negotiated features; the header is the 12 bytes of `hdr` from
 * `at`. Lengths and offsets inside it are the kernel's to check (it refuses a bad one with
 * EINVAL).
 * @internal
 */
export function txHeaderProblem(hdr: Uint8Array, offloads: number, at = 0): string | undefined {
  const flags = hdr[at] as number;
  const gso = hdr[at + 1] as number;
  if ((flags | gso) === 0) return undefined; // no offload asked for: every frame of a driver without them
  if ((flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) return `header flags 0x${flags.toString(16)} (only NEEDS_CSUM is for transmit)`;
  if (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM && !(offloads & TX_CSUM)) return "NEEDS_CSUM without VIRTIO_NET_F_CSUM";
  const type = gso & ~VIRTIO_NET_HDR_GSO_ECN;
  if (gso & VIRTIO_NET_HDR_GSO_ECN && (type === VIRTIO_NET_HDR_GSO_NONE || !(offloads & TX_ECN))) return "GSO ECN without VIRTIO_NET_F_HOST_ECN";
  if (type === VIRTIO_NET_HDR_GSO_NONE) return undefined;
  if (type === VIRTIO_NET_HDR_GSO_TCPV4 && offloads & TX_TSO4) return undefined;
  if (type === VIRTIO_NET_HDR_GSO_TCPV6 && offloads & TX_TSO6) return undefined;
  return `gso_type ${gso} not negotiated`;
}

/**
 * Why a transmit chain cannot be sent, or undefined after appending the views
 * of its frame (after the header) in guest memory to `out`. Checks: no
 * device-writable part, header plus Ethernet header at least, at most
 * {@link NET_MAX_BUFFER} (the caller tells an oversize chain by its length),
 * every byte inside guest memory, at most IOV_MAX pieces with the header's.
 * On a problem `out` may hold some of the views (the caller drops them).
 * Allocates nothing but the views for a buffer inside one memory region.
 * @internal
 */
export function txFrameViews(mem: GuestMemory, chain: ReusableChain, out: Uint8Array[]): string | undefined {
  const len = chain.readableLength;
  if (chain.writableLength > 0) return "transmit chain has device-writable buffers";
  if (len > NET_MAX_BUFFER) return `transmit chain of ${len} bytes is over ${NET_MAX_BUFFER}`;
  if (len < NET_HDR_SIZE + ETH_HLEN) return `transmit chain of ${len} bytes is shorter than header + Ethernet header`;
  const n = chain.length;
  let skip = NET_HDR_SIZE;
  try {
    for (let i = 0; i < n; i++) {
      const dlen = chain.lenAt(i);
      if (dlen === 0) continue;
      const addr = chain.addrAt(i);
      const r = mem.findRegion(addr);
      if (r !== undefined && addr + dlen <= r.end) {
        // The whole buffer lies in one region: one check covers the skipped header part too.
        if (skip < dlen) out.push(mem.slice(addr + skip, dlen - skip));
        skip = skip > dlen ? skip - dlen : 0;
        continue;
      }
      if (skip >= dlen) {
        if (!mem.checkRange(addr, dlen)) return `buffer at 0x${addr.toString(16)} is outside guest memory`;
        skip -= dlen;
        continue;
      }
      if (skip > 0 && !mem.checkRange(addr, skip)) return `buffer at 0x${addr.toString(16)} is outside guest memory`;
      for (const v of sliceRange(mem, addr + skip, dlen - skip)) out.push(v);
      skip = 0;
    }
  } catch {
    return "a transmit buffer is outside guest memory";
  }
  if (out.length > IOV_MAX) return `transmit chain needs ${out.length - 1} pieces, over IOV_MAX`;
  return undefined;
}

/** The index of the region of `regions` that holds `addr`, or -1 (a linear search: a VMM has a few). */
function regionIndex(regions: readonly GuestMemoryRegion[], addr: number): number {
  for (let r = 0; r < regions.length; r++) {
    const g = regions[r] as GuestMemoryRegion;
    if (addr >= g.start && addr < g.end) return r;
  }
  return -1;
}

/** What {@link txFrameSpans} answers for a chain not in one region (the caller uses {@link txFrameViews}). @internal */
export const TX_NOT_ONE_REGION = -1;

/**
 * As {@link txFrameViews} for a chain whose buffers all lie in one memory region (nearly every
 * frame), into the triples of an {@link IovTable} whose view 0 is `hdr` and view `1 + i` is
 * `regions[i].bytes`: copies the 12-byte header into header slot `slot` of `hdr` (bytes
 * `[12 * slot, +12)`, each read once from guest memory) and writes one (view, offset, length)
 * triple for it and one for each buffer's frame bytes into `spans`, from triple `base` (a batch
 * of frames lies in one table; the caller leaves room for a chain of the queue's size). Returns
 * the number of triples, why the chain cannot be sent, or {@link TX_NOT_ONE_REGION} — a
 * buffer outside the first buffer's region, or outside `regions` — for the caller to retry
 * with {@link txFrameViews}, which tells the guest's error from a chain across regions.
 * Allocates nothing.
 * @internal
 */
export function txFrameSpans(regions: readonly GuestMemoryRegion[], chain: ReusableChain, hdr: Uint8Array, spans: Float64Array, slot = 0, base = 0): number | string {
  const len = chain.readableLength;
  if (chain.writableLength > 0) return "transmit chain has device-writable buffers";
  if (len > NET_MAX_BUFFER) return `transmit chain of ${len} bytes is over ${NET_MAX_BUFFER}`;
  if (len < NET_HDR_SIZE + ETH_HLEN) return `transmit chain of ${len} bytes is shorter than header + Ethernet header`;
  const n = chain.length;
  let h = NET_HDR_SIZE * slot; // where the next header byte goes
  const hEnd = h + NET_HDR_SIZE;
  spans[3 * base] = 0;
  spans[3 * base + 1] = h;
  spans[3 * base + 2] = NET_HDR_SIZE;
  let k = 1;
  let view = -1;
  let start = 0;
  let end = 0;
  let bytes: Uint8Array | undefined;
  for (let i = 0; i < n; i++) {
    const dlen = chain.lenAt(i);
    if (dlen === 0) continue;
    const addr = chain.addrAt(i);
    if (bytes === undefined) {
      const r = regionIndex(regions, addr);
      if (r < 0) return TX_NOT_ONE_REGION;
      const g = regions[r] as GuestMemoryRegion;
      view = r + 1;
      start = g.start;
      end = g.end;
      bytes = g.bytes;
    }
    if (!(addr >= start && addr + dlen <= end)) return TX_NOT_ONE_REGION;
    let off = addr - start;
    let left = dlen;
    while (h < hEnd && left > 0) {
      hdr[h++] = bytes[off++] as number;
      left--;
    }
    if (left === 0) continue;
    if (3 * (base + k) >= spans.length) return `transmit chain needs ${n} pieces or more, over IOV_MAX`;
    const j = 3 * (base + k++);
    spans[j] = view;
    spans[j + 1] = off;
    spans[j + 2] = left;
  }
  return k;
}

/** What {@link rxChainSpans} answers for a chain with a buffer outside every region or across two (the caller uses {@link rxChainViews}). @internal */
export const RX_NOT_ONE_REGION = -1;

/**
 * As {@link rxChainViews} for a receive chain each of whose buffers lies inside one memory
 * region (nearly every chain), into the triples of an {@link IovTable} whose view 0 is the
 * device's spare buffer and view `1 + i` is `regions[i].bytes`: one (view, offset, length)
 * triple per non-empty buffer, in order, then `(0, 0, spare)` for the bytes that do not fit.
 * Returns the number of triples, why the chain cannot take a frame, {@link RX_TOO_MANY_PIECES}
 * (more buffers than the table holds beside the spare), or {@link RX_NOT_ONE_REGION} — for the
 * caller to retry with {@link rxChainViews}, which tells the guest's error from a buffer across
 * regions. Allocates nothing.
 * @internal
 */
export function rxChainSpans(regions: readonly GuestMemoryRegion[], chain: ReusableChain, spans: Float64Array, spare: number): number | string {
  if (chain.readableCount > 0) return "receive chain has device-readable buffers";
  if (chain.writableLength < NET_HDR_SIZE) return `receive chain of ${chain.writableLength} bytes cannot hold the 12-byte header`;
  const n = chain.length;
  const last = Math.floor(spans.length / 3) - 1; // the spare's triple
  let k = 0;
  for (let i = 0; i < n; i++) {
    const dlen = chain.lenAt(i);
    if (dlen === 0) continue;
    const addr = chain.addrAt(i);
    const r = regionIndex(regions, addr);
    if (r < 0) return RX_NOT_ONE_REGION;
    const g = regions[r] as GuestMemoryRegion;
    if (addr + dlen > g.end) return RX_NOT_ONE_REGION;
    if (k >= last) return RX_TOO_MANY_PIECES;
    const j = 3 * k++;
    spans[j] = r + 1;
    spans[j + 1] = addr - g.start;
    spans[j + 2] = dlen;
  }
  const j = 3 * k;
  spans[j] = 0;
  spans[j + 1] = 0;
  spans[j + 2] = spare;
  return k + 1;
}

/**
 * Why a receive chain cannot take frame bytes, or undefined if it can: it must
 * be device-writable only, hold at least the 12-byte header, and lie inside
 * guest memory.
 * @internal
 */
export function rxChainProblem(mem: GuestMemory, chain: ReusableChain): string | undefined {
  if (chain.readableCount > 0) return "receive chain has device-readable buffers";
  if (chain.writableLength < NET_HDR_SIZE) return `receive chain of ${chain.writableLength} bytes cannot hold the 12-byte header`;
  for (let i = 0; i < chain.length; i++) {
    const addr = chain.addrAt(i);
    const len = chain.lenAt(i);
    if (len > 0 && !mem.checkRange(addr, len)) return `receive buffer [0x${addr.toString(16)}, +${len}) is outside guest memory`;
  }
  return undefined;
}

/**
 * Why a receive chain cannot take frame bytes (as {@link rxChainProblem}), or
 * undefined after appending views of its buffers in guest memory, in order, to
 * `out` (for a read straight into them). At most `maxPieces` views; more is
 * {@link RX_TOO_MANY_PIECES}, which the caller answers with the copying path. On a problem `out` may hold
 * some views (the caller drops them).
 * @internal
 */
export function rxChainViews(mem: GuestMemory, chain: ReusableChain, out: Uint8Array[], maxPieces: number): string | undefined {
  if (chain.readableCount > 0) return "receive chain has device-readable buffers";
  if (chain.writableLength < NET_HDR_SIZE) return `receive chain of ${chain.writableLength} bytes cannot hold the 12-byte header`;
  const n = chain.length;
  try {
    for (let i = 0; i < n; i++) {
      const dlen = chain.lenAt(i);
      if (dlen === 0) continue;
      const addr = chain.addrAt(i);
      const r = mem.findRegion(addr);
      if (r !== undefined && addr + dlen <= r.end) out.push(mem.slice(addr, dlen));
      else {
        if (!mem.checkRange(addr, dlen)) return `receive buffer [0x${addr.toString(16)}, +${dlen}) is outside guest memory`;
        for (const v of sliceRange(mem, addr, dlen)) out.push(v);
      }
    }
  } catch {
    return "a receive buffer is outside guest memory";
  }
  if (out.length > maxPieces) return RX_TOO_MANY_PIECES;
  return undefined;
}
