/**
 * `@ts-vmm/vmm-reference/api`: the Firecracker-compatible HTTP API over a Unix socket
 * (the server, its router, and the backend that drives a `Vmm`).
 *
 * @module api
 */
export { startApiServer, ApiServerError, API_MAX_BODY_BYTES } from "./server.js";
export type { ApiServer, ApiServerOptions, ApiServerErrorCode } from "./server.js";
export { ApiRouter, firecrackerStatName } from "./router.js";
export type { ApiResponse, ApiRouterOptions } from "./router.js";
export { ApiFault, POST_BOOT_MESSAGE, PRE_BOOT_MESSAGE, NOT_SUPPORTED_PREFIX } from "./backend.js";
export type {
  ApiBackend,
  ApiBalloonStatus,
  ApiLimiterUpdate,
  ApiLoadOptions,
  ApiRateLimiterUpdate,
  ApiSnapshotOptions,
  ApiStartOptions,
  ApiVmState,
} from "./backend.js";
export { VmmBackend } from "./vmm-backend.js";
export type { VmmBackendOptions, ApiMetricsSink } from "./vmm-backend.js";
