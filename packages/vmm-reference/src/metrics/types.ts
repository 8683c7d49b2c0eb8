// The shape of Vmm.metrics() and of each line MetricsWriter appends: plain JSON
// (numbers, strings, arrays, records), so JSON.stringify needs no replacer.
import type { IoapicMetrics } from "@ts-vmm/virtio-devices/legacy";

/** Format version of {@link VmmMetrics}; bumped when a field changes meaning or goes away. */
export const VMM_METRICS_VERSION = 1;

/** A counter set: counter name to value, or to a nested set (vsock's `malformed`). */
export type CounterSet = { [name: string]: number | CounterSet };

/** Exits counted by the vCPU workers (user-space exits: what KVM_RUN returned). */
export interface ExitMetrics {
  /** Exits in all (the sum of the entries of `byReason` named after an exit kind, `VcpuExitKind` of @ts-vmm/kvm-ioctls). */
  readonly total: number;
  /**
   * Non-zero counts by exit kind (`IoOut`, `MmioWrite`, `Hlt`, `Intr`, …), plus `Again`
   * (KVM_RUN answered EAGAIN), `MmioInterruptRegister` (MMIO exits the worker served on a
   * virtio InterruptStatus/ACK register; also counted under their kind; the ConfigGeneration
   * and ID register reads it also serves count only under their kind) and
   * `MmioMailboxTimeouts` (forwarded accesses that waited 50 ms for the main thread).
   */
  readonly byReason: Record<string, number>;
  /**
   * Port I/O and MMIO exits by the device whose range they hit (zeros included): `com1`
   * (0x3f8–0x3ff), `i8042` (0x60, 0x64), `acpi-pm`, `debug-exit`, `boot-timer`, `cmos`
   * (0x70–0x71, the CMOS RTC; floating ports with `cmos: false`), the legacy PC ranges with
   * no device (`pic`, `pit`, `port-b`, `port80`, `pci-config`),
   * `pio-unknown` (any other port), `ioapic` (the split irqchip's window), each virtio
   * device by name (`blk0`, its virtio-mmio window), `mmio-unknown`. A string I/O exit
   * counts once however many repetitions it carries.
   */
  readonly byDevice: Record<string, number>;
  /** The same per vCPU, by vCPU id. */
  readonly vcpus: readonly VcpuExitMetrics[];
}

/** One vCPU's {@link ExitMetrics}. */
export interface VcpuExitMetrics {
  /** vCPU id. */
  readonly id: number;
  /** Exits of this vCPU. */
  readonly total: number;
  /** As {@link ExitMetrics.byReason}. */
  readonly byReason: Record<string, number>;
  /** As {@link ExitMetrics.byDevice}. */
  readonly byDevice: Record<string, number>;
}

/**
 * One virtio device's counters. The four summary fields mean the same for every kind;
 * `counters` holds the device's own set as it keeps it.
 */
export interface DeviceMetrics {
  /** The configured kind (`blk`, `net`, `rng`, `console`, `balloon`, `rtc`, `vsock`). */
  readonly kind: string;
  /** Base of its virtio-mmio window, as `0x…`. */
  readonly mmioBase: string;
  /** Its IOAPIC pin. */
  readonly gsi: number;
  /**
   * Requests the device completed: blk requests (any status), net frames both ways, rng and
   * rtc requests, console chains carrying data, vsock packets both ways, balloon
   * inflate/deflate pages, reports and statistics updates.
   */
  readonly requests: number;
  /** Payload bytes moved (blk data read + written, net and vsock frames/payload both ways, rng bytes, console bytes). */
  readonly bytes: number;
  /** Requests answered with an error or refused as malformed, and DEVICE_NEEDS_RESET events. */
  readonly errors: number;
  /** Data the device threw away: net frames dropped, console bytes beyond a chain's limit, vsock connections refused at the limit. */
  readonly dropped: number;
  /** Queue notifications taken from the device's ioeventfds. */
  readonly notifications: number;
  /** Interrupts the device's transport raised. */
  readonly interrupts: number;
  /** Transport and device rule violations reported. */
  readonly violations: number;
  /** The device's own counters (VirtioBlock.stats, NetMetrics, VsockMetrics, …). */
  readonly counters: CounterSet;
}

/** KVM's own statistics (KVM_GET_STATS_FD), as numbers (exact below 2^53). */
export interface KvmMetrics {
  /** Whether the host has KVM_CAP_BINARY_STATS_FD and the stats files opened. */
  readonly available: boolean;
  /** Why not, when not available. */
  readonly reason?: string;
  /** The VM's statistics by name (`remote_tlb_flush`, `pages_4k`, …); histograms as arrays. */
  readonly vm: Record<string, number | number[]>;
  /** Each vCPU's statistics by name (`exits`, `halt_exits`, `io_exits`, `mmio_exits`, …), by vCPU id. */
  readonly vcpus: readonly Record<string, number | number[]>[];
}

/**
 * A snapshot of the VMM's counters ({@link Vmm.metrics}), readable at any time: before
 * the run (all zero), while it runs (each counter a value it had; the set is not taken
 * at one instant), after it (the final counts).
 */
export interface VmmMetrics {
  /** {@link VMM_METRICS_VERSION}. */
  readonly version: number;
  /** When this snapshot was taken, milliseconds since the Unix epoch. */
  readonly timestampMs: number;
  /** Milliseconds since run() started (0 before it; frozen when it ended). */
  readonly uptimeMs: number;
  /** Exits by reason and by device. */
  readonly exits: ExitMetrics;
  /** virtio devices by name (`blk0`, `net0`, …). */
  readonly devices: Record<string, DeviceMetrics>;
  /** The split irqchip's user-space I/O APIC counters; null with a full (in-kernel) irqchip. */
  readonly ioapic: IoapicMetrics | null;
  /** KVM's per-VM and per-vCPU statistics. */
  readonly kvm: KvmMetrics;
}
