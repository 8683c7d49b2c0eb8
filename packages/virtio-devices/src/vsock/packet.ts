// virtio-vsock packet header and constants (virtio 1.2 §5.10.6): facts from
// the specification; the code around them is ours.

/** virtio-vsock's device id (§5.10). */
export const VIRTIO_ID_VSOCK = 19;
/** The host's CID (VMADDR_CID_HOST): every packet the guest sends must be addressed to it. */
export const VSOCK_HOST_CID = 2;
/** Bytes of `struct virtio_vsock_hdr` (le64 src_cid, dst_cid; le32 src_port, dst_port, len; le16 type, op; le32 flags, buf_alloc, fwd_cnt). */
export const VSOCK_HEADER_SIZE = 44;
/** The only socket type this device carries (VIRTIO_VSOCK_TYPE_STREAM). */
export const VSOCK_TYPE_STREAM = 1;
/** Most payload bytes in one packet, either way (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE). */
export const VSOCK_MAX_PAYLOAD = 64 * 1024;

/** Packet operations (§5.10.6). */
export const VSOCK_OP_REQUEST = 1;
/** Accepts a REQUEST. */
export const VSOCK_OP_RESPONSE = 2;
/** Resets (aborts or, after SHUTDOWN, closes) a connection. */
export const VSOCK_OP_RST = 3;
/** No more data will be received (flag 1) and/or sent (flag 2). */
export const VSOCK_OP_SHUTDOWN = 4;
/** Stream data. */
export const VSOCK_OP_RW = 5;
/** Announces the sender's buf_alloc / fwd_cnt. */
export const VSOCK_OP_CREDIT_UPDATE = 6;
/** Asks the peer for a CREDIT_UPDATE. */
export const VSOCK_OP_CREDIT_REQUEST = 7;

/** SHUTDOWN flag: the sender will receive no more data. */
export const VSOCK_SHUTDOWN_RCV = 1;
/** SHUTDOWN flag: the sender will send no more data. */
export const VSOCK_SHUTDOWN_SEND = 2;

/** Event id of `struct virtio_vsock_event` (le32 id): the transport was reset (after a restore). */
export const VSOCK_EVENT_TRANSPORT_RESET = 0;

/** One packet header, decoded. CIDs are u64 on the wire; a CID with a non-zero upper half is kept as `-1` (never valid). */
export interface VsockHeader {
  /** Source CID (-1 if above 2^32). */
  readonly srcCid: number;
  /** Destination CID (-1 if above 2^32). */
  readonly dstCid: number;
  /** Source port. */
  readonly srcPort: number;
  /** Destination port. */
  readonly dstPort: number;
  /** Payload bytes after the header. */
  readonly len: number;
  /** Socket type. */
  readonly type: number;
  /** Operation (`VSOCK_OP_*`). */
  readonly op: number;
  /** SHUTDOWN flags (0 for other ops). */
  readonly flags: number;
  /** The sender's receive buffer size. */
  readonly bufAlloc: number;
  /** Bytes the sender has consumed from its receive buffer (free-running u32). */
  readonly fwdCnt: number;
}

function cid(dv: DataView, at: number): number {
  return dv.getUint32(at + 4, true) === 0 ? dv.getUint32(at, true) : -1;
}

/** Decodes a header from the first 44 bytes of `b` (which must hold them). */
export function decodeHeader(b: Uint8Array): VsockHeader {
  const dv = new DataView(b.buffer, b.byteOffset, VSOCK_HEADER_SIZE);
  return {
    srcCid: cid(dv, 0),
    dstCid: cid(dv, 8),
    srcPort: dv.getUint32(16, true),
    dstPort: dv.getUint32(20, true),
    len: dv.getUint32(24, true),
    type: dv.getUint16(28, true),
    op: dv.getUint16(30, true),
    flags: dv.getUint32(32, true),
    bufAlloc: dv.getUint32(36, true),
    fwdCnt: dv.getUint32(40, true),
  };
}

/** Encodes `h` into a new 44-byte array (CIDs must be u32s here). */
export function encodeHeader(h: VsockHeader): Uint8Array {
  const b = new Uint8Array(VSOCK_HEADER_SIZE);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, h.srcCid >>> 0, true);
  dv.setUint32(8, h.dstCid >>> 0, true);
  dv.setUint32(16, h.srcPort >>> 0, true);
  dv.setUint32(20, h.dstPort >>> 0, true);
  dv.setUint32(24, h.len >>> 0, true);
  dv.setUint16(28, h.type, true);
  dv.setUint16(30, h.op, true);
  dv.setUint32(32, h.flags >>> 0, true);
  dv.setUint32(36, h.bufAlloc >>> 0, true);
  dv.setUint32(40, h.fwdCnt >>> 0, true);
  return b;
}

/** A packet for the guest: header fields and payload (`header.len === payload.length`). */
export interface VsockRxPacket {
  /** The header to write. */
  readonly header: VsockHeader;
  /** The payload (empty for control packets). */
  readonly payload: Uint8Array;
}
