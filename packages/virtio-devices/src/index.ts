/**
 * The entry point of `@ts-vmm/virtio-devices` (its README is the package's page in the API docs).
 * `@mergeModuleWith <project>` lists these exports on that page rather than under a
 * sub-module named `index`, beside the package's subpath entry points.
 *
 * @module
 * @mergeModuleWith <project>
 */
export type { ActivateContext, DeviceState, IrqLine, VirtioDevice, VirtioInterrupt } from "./device.js";
export { VirtioDeviceError } from "./errors.js";
export type { VirtioDeviceErrorCode } from "./errors.js";
export { EventFdIrqLine } from "./irq.js";
export { MmioTransport, REGISTER_CELL_BYTES, serveInterruptRegister } from "./mmio-transport.js";
export type { MmioTransportOptions } from "./mmio-transport.js";
export type { MmioTransportState } from "./mmio-state.js";
export {
  BLK_MAX_REQUEST_BYTES,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_SIZE_MAX,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VirtioBlock,
} from "./blk.js";
export type { VirtioBlockOptions, VirtioBlockState } from "./blk.js";
export {
  SECTOR_SIZE,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
} from "./blk-request.js";
export { RNG_MAX_BYTES_PER_REQUEST, VirtioRng } from "./rng.js";
export { CONSOLE_MAX_SAVED_INPUT_BYTES, CONSOLE_RX_BUFFER_BYTES, CONSOLE_TX_MAX_CHAIN_BYTES, VirtioConsole } from "./console.js";
export type { ConsoleStreams, VirtioConsoleState } from "./console.js";
// virtio-rtc (device id 17).
export * from "./rtc/index.js";
export {
  INT_CONFIG_CHANGE,
  INT_USED_BUFFER,
  MMIO,
  MMIO_MAGIC,
  MMIO_VENDOR_ID,
  MMIO_VERSION,
  MMIO_WINDOW_SIZE,
  STATUS_ACKNOWLEDGE,
  STATUS_DEVICE_NEEDS_RESET,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FAILED,
  STATUS_FEATURES_OK,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_BLOCK,
  VIRTIO_ID_CONSOLE,
  VIRTIO_ID_NET,
  VIRTIO_ID_RNG,
} from "./constants.js";
export * from "./net/index.js";
export { RateLimiter, realClock } from "./rate-limiter.js";
export type { RateLimiterClock, RateLimiterConfig, RateLimiterState, TokenBucketConfig, TokenBucketState } from "./rate-limiter.js";
// virtio-vsock (its own folder: device, connection, muxer, persist, metrics).
export * from "./vsock/index.js";
// The legacy PC devices, also on the `./legacy` subpath (one list of exports for both).
export * from "./legacy/index.js";
// virtio-balloon (src/balloon/: device, event handling, persist, metrics).
export * from "./balloon/index.js";
