import type { QueueState } from "@ts-vmm/virtio-queue";
import { STATUS_ACKNOWLEDGE, STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK } from "./constants.js";
import type { DeviceState, VirtioDevice } from "./device.js";
import { VirtioDeviceError } from "./errors.js";

/**
 * Status bits a driver may write.
 * @internal
 */
export const KNOWN_STATUS = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK | STATUS_FEATURES_OK | STATUS_FAILED;

/** The transport's saved state (plain JSON; features as hex strings). */
export interface MmioTransportState {
  /** Format version. */
  readonly version: 1;
  /** Device status register. */
  readonly status: number;
  /** Negotiated driver features, hex. */
  readonly driverFeatures: string;
  /** DeviceFeaturesSel. */
  readonly deviceFeaturesSel: number;
  /** DriverFeaturesSel. */
  readonly driverFeaturesSel: number;
  /** QueueSel. */
  readonly queueSel: number;
  /** InterruptStatus. */
  readonly interruptStatus: number;
  /** ConfigGeneration. */
  readonly configGeneration: number;
  /** Whether the device was activated (DRIVER_OK accepted). */
  readonly activated: boolean;
  /** Per queue: a configuration write was refused since the last reset. */
  readonly queueConfigErrors: readonly boolean[];
  /** The queues. */
  readonly queues: readonly QueueState[];
  /** The device's own state. */
  readonly device: DeviceState;
}

/**
 * Shape and range checks of a saved transport state, before anything is rebuilt.
 * @internal
 */
export function checkTransportState(state: MmioTransportState, device: VirtioDevice): void {
  const bad = (what: string, cause?: unknown): VirtioDeviceError =>
    new VirtioDeviceError("InvalidState", `virtio-mmio state: ${what}`, cause === undefined ? undefined : { cause });
  if (typeof state !== "object" || state === null || state.version !== 1) throw bad("unknown version");
  const u32 = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0xffff_ffff;
  for (const k of ["status", "deviceFeaturesSel", "driverFeaturesSel", "queueSel", "interruptStatus", "configGeneration"] as const) {
    if (!u32(state[k])) throw bad(`${k} is not a u32`);
  }
  if ((state.status & ~(KNOWN_STATUS | STATUS_DEVICE_NEEDS_RESET)) !== 0) throw bad("status has unknown bits");
  if ((state.interruptStatus & ~3) !== 0) throw bad("interruptStatus has unknown bits");
  if (typeof state.activated !== "boolean") throw bad("activated is not a boolean");
  if (typeof state.driverFeatures !== "string" || !/^[0-9a-f]{1,16}$/.test(state.driverFeatures)) throw bad("driverFeatures is not hex");
  if (!Array.isArray(state.queues) || state.queues.length !== device.queueMaxSizes.length) throw bad("queue count does not match the device");
  if (!Array.isArray(state.queueConfigErrors) || state.queueConfigErrors.length !== device.queueMaxSizes.length || !state.queueConfigErrors.every((b) => typeof b === "boolean")) {
    throw bad("queueConfigErrors does not match the queues");
  }
  if (state.device?.deviceType !== device.deviceType) throw bad("the device state is from another device type");
}
