import type { DeviceState } from "../device.js";
import { VirtioDeviceError } from "../errors.js";
import { VIRTIO_ID_BALLOON } from "./constants.js";
import { newBalloonMetrics, type BalloonMetrics } from "./metrics.js";
import { statsFromJson, statsToJson, type BalloonStats } from "./stats.js";

/** virtio-balloon's saved state (plain JSON; the queues are saved by the transport). */
export interface VirtioBalloonState extends DeviceState {
  /** Always 5. */
  readonly deviceType: 5;
  /** num_pages: the target the host set, in 4 KiB pages. */
  readonly targetPages: number;
  /** actual: what the driver last wrote, in 4 KiB pages. */
  readonly actualPages: number;
  /** How the device was built (restore refuses a device built differently). */
  readonly config: {
    readonly statsQueue: boolean;
    readonly deflateOnOom: boolean;
    readonly freePageReporting: boolean;
  };
  /** Statistics polling interval in seconds (0: not polling). */
  readonly statsIntervalS: number;
  /** The statistics buffer the device holds (popped, not yet returned), by head / buffer id, or null. */
  readonly statsHead: number | null;
  /** The latest statistics, values as decimal strings, or null. */
  readonly stats: { readonly updatedAt: number; readonly values: Readonly<Record<string, string>> } | null;
  /** The counters. */
  readonly metrics: BalloonMetrics;
}

/** What a restore puts back into the device. @internal */
export interface RestoredBalloon {
  readonly targetPages: number;
  readonly actualPages: number;
  readonly statsIntervalS: number;
  readonly statsHead: number | undefined;
  readonly stats: BalloonStats | undefined;
  readonly metrics: BalloonMetrics;
}

/** Builds the saved state. @internal */
export function balloonState(s: RestoredBalloon, config: VirtioBalloonState["config"]): VirtioBalloonState {
  return {
    deviceType: VIRTIO_ID_BALLOON,
    targetPages: s.targetPages,
    actualPages: s.actualPages,
    config: { ...config },
    statsIntervalS: s.statsIntervalS,
    statsHead: s.statsHead ?? null,
    stats: s.stats === undefined ? null : statsToJson(s.stats),
    metrics: { ...s.metrics },
  };
}

const isU32 = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0xffff_ffff;

/**
 * Checks every field of a saved state against the device it is restored into.
 * @throws {@link VirtioDeviceError} `"InvalidState"` naming the field.
 * @internal
 */
export function checkBalloonState(state: DeviceState, config: VirtioBalloonState["config"], maxIntervalS: number): RestoredBalloon {
  const bad = (what: string): never => {
    throw new VirtioDeviceError("InvalidState", `virtio-balloon state: ${what}`);
  };
  const s = state as Partial<VirtioBalloonState>;
  if (s.deviceType !== VIRTIO_ID_BALLOON) bad("not a virtio-balloon state");
  if (!isU32(s.targetPages)) bad("targetPages is not a u32");
  if (!isU32(s.actualPages)) bad("actualPages is not a u32");
  const c = s.config;
  if (typeof c !== "object" || c === null) bad("config missing");
  else if (c.statsQueue !== config.statsQueue || c.deflateOnOom !== config.deflateOnOom || c.freePageReporting !== config.freePageReporting) {
    bad(`saved with ${JSON.stringify(c)}, this device is ${JSON.stringify(config)}`);
  }
  const iv = s.statsIntervalS;
  if (typeof iv !== "number" || !Number.isFinite(iv) || iv < 0 || iv > maxIntervalS || (iv > 0 && !config.statsQueue)) bad("statsIntervalS out of range");
  const head = s.statsHead;
  if (head !== null && !(typeof head === "number" && Number.isInteger(head) && head >= 0 && head < 0x8000)) bad("statsHead is not a queue index or null");
  const stats = s.stats === null ? undefined : statsFromJson(s.stats);
  if (s.stats !== null && stats === undefined) bad("stats malformed");
  const metrics = newBalloonMetrics();
  const saved = s.metrics as Record<string, unknown> | undefined;
  if (typeof saved !== "object" || saved === null) bad("metrics missing");
  for (const k of Object.keys(metrics) as (keyof BalloonMetrics)[]) {
    const v = saved![k];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) bad(`metrics.${k} is not a count`);
    metrics[k] = v as number;
  }
  return {
    targetPages: s.targetPages!,
    actualPages: s.actualPages!,
    statsIntervalS: iv!,
    statsHead: head ?? undefined,
    stats,
    metrics,
  };
}
