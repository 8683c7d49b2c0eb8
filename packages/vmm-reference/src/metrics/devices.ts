// Each virtio device's counters in one shape (DeviceMetrics): the summary
// fields computed from the device's own counter set, which is copied along.
import { VirtioBalloon, VirtioBlock, VirtioConsole, VirtioNet, VirtioRng, VirtioRtc, VirtioVsock } from "@ts-vmm/virtio-devices";
import type { VirtioDeviceSlot } from "../devices/virtio-manager.js";
import type { CounterSet, DeviceMetrics } from "./types.js";

interface Summary {
  readonly requests: number;
  readonly bytes: number;
  readonly errors: number;
  readonly dropped: number;
  readonly counters: CounterSet;
}

/** A deep copy of a counter object (numbers and nested objects of numbers only). */
function copyCounters(o: object): CounterSet {
  const out: CounterSet = {};
  for (const [k, v] of Object.entries(o)) {
    if (typeof v === "number") out[k] = v;
    else if (v !== null && typeof v === "object") out[k] = copyCounters(v as object);
  }
  return out;
}

function summarize(device: VirtioDeviceSlot["device"]): Summary {
  if (device instanceof VirtioBlock) {
    const s = device.stats;
    return { requests: s.ok + s.ioerr + s.unsupp, bytes: s.readBytes + s.writeBytes, errors: s.ioerr + s.unsupp + s.needsReset, dropped: 0, counters: copyCounters(s) };
  }
  if (device instanceof VirtioNet) {
    const m = device.metrics;
    return {
      requests: m.rxFrames + m.txFrames,
      bytes: m.rxBytes + m.txBytes,
      errors: m.rxMalformedChains + m.rxTapErrors + m.txMalformed + m.txTapErrors + m.needsReset,
      dropped: m.rxDroppedTooLarge + m.rxDroppedBadFrame + m.rxDroppedReset + m.txOversize + m.txTapErrors,
      counters: copyCounters(m.toJSON()),
    };
  }
  if (device instanceof VirtioRng) {
    return { requests: device.requestsServed, bytes: device.bytesServed, errors: 0, dropped: 0, counters: { requestsServed: device.requestsServed, bytesServed: device.bytesServed } };
  }
  if (device instanceof VirtioConsole) {
    const s = device.stats;
    return { requests: s.txChains + s.rxChains, bytes: s.txBytes + s.rxBytes, errors: 0, dropped: s.txDropped, counters: copyCounters(s) };
  }
  if (device instanceof VirtioBalloon) {
    const m = device.metrics;
    return {
      requests: m.inflatedPages + m.deflatedPages + m.reports + m.statsUpdates,
      bytes: m.discardedBytes,
      errors: m.invalidPfns + m.discardFailures + m.invalidReports + m.needsReset,
      dropped: m.statsIgnored,
      counters: copyCounters(m),
    };
  }
  if (device instanceof VirtioRtc) {
    const m = device.metrics;
    return { requests: m.requests, bytes: 0, errors: m.eopnotsupp + m.enodev + m.einval + m.eio + m.noStatus + m.needsReset, dropped: 0, counters: copyCounters(m) };
  }
  if (device instanceof VirtioVsock) {
    const m = device.metrics;
    const mal = m.malformed;
    return {
      requests: m.rxPackets + m.txPackets,
      bytes: m.rxBytes + m.txBytes,
      errors: mal.cid + mal.type + mal.op + mal.len + mal.credit + mal.shortHeader + m.rxChainTooSmall,
      dropped: m.connsRefusedLimit,
      counters: copyCounters(m),
    };
  }
  return { requests: 0, bytes: 0, errors: 0, dropped: 0, counters: {} };
}

/** The {@link DeviceMetrics} of every attached virtio device, by name. */
export function deviceMetrics(slots: readonly VirtioDeviceSlot[]): Record<string, DeviceMetrics> {
  const out: Record<string, DeviceMetrics> = {};
  for (const s of slots) {
    out[s.name] = {
      kind: s.kind,
      mmioBase: `0x${s.base.toString(16)}`,
      gsi: s.gsi,
      ...summarize(s.device),
      notifications: s.notifications,
      interrupts: s.interrupts,
      violations: s.violations,
    };
  }
  return out;
}
