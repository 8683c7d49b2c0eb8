import type { DeviceState } from "../device.js";
import { VirtioDeviceError } from "../errors.js";
import { VIRTIO_ID_VSOCK } from "./packet.js";

/**
 * virtio-vsock's saved state: the guest CID only. Connections are not saved
 * (as in Firecracker): their host sockets cannot move into another process,
 * so a restored device sends the driver VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on
 * activation and the guest sees every connection reset (§5.10.6.7).
 */
export interface VirtioVsockState extends DeviceState {
  /** Always 19. */
  readonly deviceType: 19;
  /** The guest CID the state was taken with (restore requires the same). */
  readonly cid: number;
}

/** The state of a device with this CID. */
export function vsockState(cid: number): VirtioVsockState {
  return { deviceType: VIRTIO_ID_VSOCK, cid };
}

/**
 * Checks that `state` is a virtio-vsock state for `cid`.
 * @throws {@link VirtioDeviceError} `"InvalidState"` otherwise.
 */
export function checkVsockState(state: DeviceState, cid: number): asserts state is VirtioVsockState {
  const s = state as Partial<VirtioVsockState>;
  if (s.deviceType !== VIRTIO_ID_VSOCK) throw new VirtioDeviceError("InvalidState", "not a virtio-vsock state");
  if (s.cid !== cid) throw new VirtioDeviceError("InvalidState", `virtio-vsock state has CID ${String(s.cid)}, this device ${cid}`);
}
