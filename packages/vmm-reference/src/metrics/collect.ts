// Vmm.metrics(): the per-vCPU exit counters summed, the devices' counters, KVM's stats.
import type { Ioapic } from "@ts-vmm/virtio-devices/legacy";
import type { VirtioDeviceSlot } from "../devices/virtio-manager.js";
import { deviceMetrics } from "./devices.js";
import { readExitCounters } from "./exit-counters.js";
import type { KvmStatsSource } from "./kvm-stats.js";
import { VMM_METRICS_VERSION, type ExitMetrics, type VcpuExitMetrics, type VmmMetrics } from "./types.js";

/** When a run started and ended (performance.now() values). @internal */
export interface RunClock {
  startedAt: number | undefined;
  endedAt: number | undefined;
}

/** What {@link collectMetrics} reads. @internal */
export interface MetricsInputs {
  readonly exitCounters: readonly SharedArrayBuffer[];
  readonly windowNames: readonly string[];
  readonly devices: readonly VirtioDeviceSlot[];
  readonly ioapic: Ioapic | undefined;
  readonly kvm: KvmStatsSource;
  readonly clock: RunClock;
}

function sumInto(into: Record<string, number>, from: Readonly<Record<string, number>>): void {
  for (const [k, n] of Object.entries(from)) into[k] = (into[k] ?? 0) + n;
}

/** Sums the vCPUs' exit counters. @internal */
export function exitMetrics(buffers: readonly SharedArrayBuffer[], windowNames: readonly string[]): ExitMetrics {
  const vcpus: VcpuExitMetrics[] = buffers.map((b, id) => ({ id, ...readExitCounters(b, windowNames) }));
  const byReason: Record<string, number> = {};
  const byDevice: Record<string, number> = {};
  let total = 0;
  for (const v of vcpus) {
    total += v.total;
    sumInto(byReason, v.byReason);
    sumInto(byDevice, v.byDevice);
  }
  return { total, byReason, byDevice, vcpus };
}

/** Builds a {@link VmmMetrics} snapshot. @internal */
export function collectMetrics(i: MetricsInputs): VmmMetrics {
  const { startedAt, endedAt } = i.clock;
  const uptimeMs = startedAt === undefined ? 0 : Math.round((endedAt ?? performance.now()) - startedAt);
  return {
    version: VMM_METRICS_VERSION,
    timestampMs: Date.now(),
    uptimeMs,
    exits: exitMetrics(i.exitCounters, i.windowNames),
    devices: deviceMetrics(i.devices),
    ioapic: i.ioapic ? { ...i.ioapic.metrics } : null,
    kvm: i.kvm.read(),
  };
}
