/**
 * virtio-vsock's counters (a plain object the device mutates; read it at any
 * time, e.g. for a metrics endpoint). Everything a guest gets wrong is counted
 * here as well as answered (with RST, or a zero-length completion when there
 * is nothing to answer).
 */
export interface VsockMetrics {
  /** Packets put on the rx queue (device to guest). */
  rxPackets: number;
  /** Payload bytes delivered to the guest. */
  rxBytes: number;
  /** Packets taken from the tx queue (guest to device), malformed ones included. */
  txPackets: number;
  /** Payload bytes the guest sent on connections (written to host sockets). */
  txBytes: number;
  /** Connections established or being established (either side started them). */
  connsAdded: number;
  /** Connections gone (closed, reset, refused). */
  connsRemoved: number;
  /** Guest REQUESTs or host connects refused because `maxConnections` were open. */
  connsRefusedLimit: number;
  /** Guest REQUESTs whose `<uds>_<port>` socket could not be connected. */
  hostConnectFailed: number;
  /** Host-initiated connections the guest neither accepted nor reset in time, or whose CONNECT line was bad or late. */
  hostHandshakeFailed: number;
  /** RST packets sent to the guest. */
  rstSent: number;
  /** Malformed guest packets answered with RST, by reason. */
  malformed: {
    /** src_cid not the guest's CID, or dst_cid not the host. */
    cid: number;
    /** type other than STREAM. */
    type: number;
    /** unknown op, or an op that does not fit the connection's state. */
    op: number;
    /** len above 64 KiB, beyond the chain, or non-zero on a control packet. */
    len: number;
    /** Data beyond the credit the device gave (buf_alloc). */
    credit: number;
    /** tx chains shorter than a header (completed with length 0; nothing to answer). */
    shortHeader: number;
  };
  /** rx chains shorter than a header (returned with length 0, nothing lost). */
  rxChainTooSmall: number;
  /** Times tx processing paused because the backend's backlog was full. */
  txPaused: number;
  /** Transport-reset events delivered (after a restore). */
  eventsSent: number;
}

/** A zeroed {@link VsockMetrics}. */
export function newVsockMetrics(): VsockMetrics {
  return {
    rxPackets: 0,
    rxBytes: 0,
    txPackets: 0,
    txBytes: 0,
    connsAdded: 0,
    connsRemoved: 0,
    connsRefusedLimit: 0,
    hostConnectFailed: 0,
    hostHandshakeFailed: 0,
    rstSent: 0,
    malformed: { cid: 0, type: 0, op: 0, len: 0, credit: 0, shortHeader: 0 },
    rxChainTooSmall: 0,
    txPaused: 0,
    eventsSent: 0,
  };
}
