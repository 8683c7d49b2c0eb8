import { VIRTIO_ID_NET } from "../constants.js";
import type { DeviceState } from "../device.js";
import { VirtioDeviceError } from "../errors.js";
import { NET_HDR_SIZE, NET_MAX_BUFFER } from "./constants.js";
import type { RateLimiterState } from "../rate-limiter.js";

/** virtio-net's saved state (plain JSON). Queues are saved by the transport. */
export interface VirtioNetState extends DeviceState {
  /** Always 1. */
  readonly deviceType: 1;
  /** The MAC address in config space (`aa:bb:cc:dd:ee:ff`); restore checks it is this device's. */
  readonly mac: string;
  /** Config `status` LINK_UP. */
  readonly linkUp: boolean;
  /**
   * The frame read from the host and not yet delivered (waiting for receive
   * buffers or the rate limiter), vnet header included, base64; null if none.
   * Saved so that a snapshot loses no frame.
   */
  readonly pendingFrame: string | null;
  /** The receive rate limiter's buckets, null without one; absent in states written before they were saved. */
  readonly rxRateLimiter?: RateLimiterState | null;
  /** The transmit rate limiter's buckets (as `rxRateLimiter`). */
  readonly txRateLimiter?: RateLimiterState | null;
}

/** What {@link checkNetState} found in a state. @internal */
export interface RestoredNet {
  readonly linkUp: boolean;
  readonly pending: Uint8Array | undefined;
}

/**
 * Checks a saved state against the device it is loaded into.
 * @throws {@link VirtioDeviceError} `"InvalidState"`.
 * @internal
 */
export function checkNetState(state: DeviceState, mac: string): RestoredNet {
  const s = state as Partial<VirtioNetState>;
  const bad = (why: string): VirtioDeviceError => new VirtioDeviceError("InvalidState", `virtio-net state: ${why}`);
  if (s.deviceType !== VIRTIO_ID_NET) throw bad("not a virtio-net state");
  if (s.mac !== mac) throw bad(`MAC ${String(s.mac)} is not this device's (${mac})`);
  if (typeof s.linkUp !== "boolean") throw bad("linkUp is not a boolean");
  if (s.pendingFrame === null) return { linkUp: s.linkUp, pending: undefined };
  if (typeof s.pendingFrame !== "string" || s.pendingFrame.length > Math.ceil(NET_MAX_BUFFER / 3) * 4 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s.pendingFrame)) {
    throw bad("pendingFrame is not base64 of at most one frame");
  }
  const pending = new Uint8Array(Buffer.from(s.pendingFrame, "base64"));
  if (pending.length < NET_HDR_SIZE || pending.length > NET_MAX_BUFFER) throw bad(`pendingFrame of ${pending.length} bytes is not a frame`);
  return { linkUp: s.linkUp, pending };
}
