export { VSOCK_BATCH_PACKETS, VirtioVsock } from "./device.js";
export type { VirtioVsockOptions } from "./device.js";
export type { VsockBackend, VsockBackendHost } from "./backend.js";
export { VSOCK_LINGER_MS, VsockConnection } from "./connection.js";
export type { VsockConnectionOwner, VsockConnectionState } from "./connection.js";
export { VSOCK_EVENT_QUEUE, VSOCK_RX_QUEUE, VSOCK_TX_QUEUE, VsockEventHandler } from "./event-handler.js";
export type { VsockHandlers } from "./event-handler.js";
export { newVsockMetrics } from "./metrics.js";
export type { VsockMetrics } from "./metrics.js";
export {
  VSOCK_DEFAULT_BUF_ALLOC,
  VSOCK_DEFAULT_HANDSHAKE_MS,
  VSOCK_DEFAULT_MAX_CONNECTIONS,
  VSOCK_DEFAULT_TOTAL_TX_BYTES,
  VSOCK_FIRST_LOCAL_PORT,
  VsockUnixBackend,
} from "./muxer.js";
export type { VsockUnixBackendOptions } from "./muxer.js";
export {
  VIRTIO_ID_VSOCK,
  VSOCK_EVENT_TRANSPORT_RESET,
  VSOCK_HEADER_SIZE,
  VSOCK_HOST_CID,
  VSOCK_MAX_PAYLOAD,
  VSOCK_OP_CREDIT_REQUEST,
  VSOCK_OP_CREDIT_UPDATE,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RST,
  VSOCK_OP_RW,
  VSOCK_OP_SHUTDOWN,
  VSOCK_SHUTDOWN_RCV,
  VSOCK_SHUTDOWN_SEND,
  VSOCK_TYPE_STREAM,
  decodeHeader,
  encodeHeader,
} from "./packet.js";
export type { VsockHeader, VsockRxPacket } from "./packet.js";
export { checkVsockState, vsockState } from "./persist.js";
export type { VirtioVsockState } from "./persist.js";
