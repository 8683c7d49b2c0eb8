/**
 * What went wrong in a VMM-facing call of this package. Guest-driven paths
 * never throw: they set DEVICE_NEEDS_RESET or write a device error status.
 *
 * - `"InvalidArgument"`: the VMM passed a malformed value (options, offsets).
 * - `"InvalidState"`: a saved state is malformed or does not fit the device.
 * - `"Busy"`: the operation needs the device quiesced (I/O still in flight).
 * - `"Io"`: a host file operation failed while setting up a backend (`cause` holds it).
 */
export type VirtioDeviceErrorCode = "InvalidArgument" | "InvalidState" | "Busy" | "Io";

/** The one error class of `@ts-vmm/virtio-devices`. */
export class VirtioDeviceError extends Error {
  /** The condition; see {@link VirtioDeviceErrorCode}. */
  readonly code: VirtioDeviceErrorCode;

  /**
   * @param code - the condition.
   * @param message - a human-readable description.
   * @param options - `cause`: the lower-level error.
   */
  constructor(code: VirtioDeviceErrorCode, message: string, options?: { readonly cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "VirtioDeviceError";
    this.code = code;
  }
}
