import type { VsockMetrics } from "./metrics.js";
import type { VsockHeader, VsockRxPacket } from "./packet.js";

/** What the device gives its backend while it is activated. */
export interface VsockBackendHost {
  /** The guest's CID (from the device config). */
  readonly guestCid: number;
  /** Packets for the guest may be ready: the device runs its rx path soon (coalesced, never re-entrant). */
  wakeRx(): void;
  /** The backend's backlog shrank: the device resumes its tx path if it had paused. */
  wakeTx(): void;
}

/**
 * The host side of virtio-vsock, at the packet level (as Firecracker's
 * `VsockBackend`): the device validates the ring and the header's shape and
 * hands packets over; the backend owns connections, their state machines and
 * their flow control. {@link VsockUnixBackend} implements it over Unix
 * sockets; a test can implement it with an in-memory peer.
 *
 * All methods are called on the device owner's thread and never throw for
 * anything the guest did.
 */
export interface VsockBackend {
  /** Counters, shared with the device (it counts packets, the backend connections). */
  readonly metrics: VsockMetrics;
  /** The device was activated. */
  attach(host: VsockBackendHost): void;
  /** The device was reset (or restored): every connection is dropped without telling the guest. */
  detach(): void;
  /**
   * A packet from the guest whose header passed the device's checks (CIDs,
   * type STREAM, a known op, `len` within the chain and 64 KiB, `len` 0 on
   * control ops); `payload.length === header.len`.
   */
  send(header: VsockHeader, payload: Uint8Array): void;
  /**
   * A malformed packet: the backend answers RST (unless it was an RST) and
   * drops any connection with these ports. The device has counted it.
   */
  reject(header: VsockHeader): void;
  /** Whether {@link VsockBackend.recv} has a packet now (then it always returns one). */
  hasRx(): boolean;
  /** The next packet for the guest, with at most `maxPayload` (≥ 0) payload bytes. */
  recv(maxPayload: number): VsockRxPacket | undefined;
  /** Whether the device should stop taking tx chains (they stay in the ring) until `wakeTx`. */
  txBlocked(): boolean;
  /** Closes every connection and the listener. Idempotent. */
  close(): void;
}
