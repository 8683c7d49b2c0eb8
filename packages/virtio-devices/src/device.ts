import type { GuestMemory } from "@ts-vmm/vm-memory";
import type { Queue } from "@ts-vmm/virtio-queue";

/**
 * The interrupt line a transport raises: the VMM implements it, typically
 * with an irqfd (an `EventFd` registered with KVM on a GSI), so raising it is
 * one eventfd write. Tests implement it with a counter.
 */
export interface IrqLine {
  /** Raises the line (edge: one interrupt per call). Must not throw. */
  trigger(): void;
}

/**
 * What a device tells its transport. The transport sets its InterruptStatus
 * bits and raises the {@link IrqLine}; devices never see the line itself.
 */
export interface VirtioInterrupt {
  /** Used buffers were returned on queue `index` (call only when the queue asks for a notification). */
  signalUsedQueue(index: number): void;
  /**
   * The device configuration changed (the transport bumps the config generation). Call it in
   * the same synchronous turn as the change, on the transport's thread: other threads serve
   * ConfigGeneration reads from shared memory (`serveInterruptRegister`), and a driver
   * re-reads the config only if the generation moved between its two reads.
   */
  signalConfigChange(): void;
  /**
   * The driver broke a rule the device cannot recover from: the transport
   * sets DEVICE_NEEDS_RESET and signals a configuration change; the device
   * must stop processing until it is reset.
   */
  needsReset(reason: string): void;
}

/** What a device gets when the driver sets DRIVER_OK. */
export interface ActivateContext {
  /** Guest memory. */
  readonly mem: GuestMemory;
  /** The device's queues, in index order (a queue the driver did not set ready has `ready === false`). */
  readonly queues: readonly Queue[];
  /** The negotiated features (device and transport bits). */
  readonly features: bigint;
  /** Notifications to the driver. */
  readonly interrupt: VirtioInterrupt;
}

/**
 * A virtio device independent of its transport (virtio-mmio today; a
 * virtio-pci transport can drive the same objects). The transport owns the
 * status state machine, feature negotiation and queue configuration; the
 * device owns its config space and the data path.
 *
 * All methods are called on one thread (the device owner's event loop).
 * Guest-driven calls (`readConfig`, `writeConfig`, `queueNotify`) never throw.
 */
export interface VirtioDevice {
  /** The virtio device id (§5), e.g. 2 for virtio-blk. */
  readonly deviceType: number;
  /** Largest size of each queue (a power of two each); the length is the number of queues. */
  readonly queueMaxSizes: readonly number[];
  /** Device-specific feature bits offered (the transport adds VERSION_1 and ring features). */
  readonly deviceFeatures: bigint;
  /** Bytes of device configuration space. */
  readonly configSize: number;
  /** Reads `data.length` bytes of config space at `offset` (bytes past the end read as 0). */
  readConfig(offset: number, data: Uint8Array): void;
  /** Writes config space (read-only fields and bytes past the end are ignored). */
  writeConfig(offset: number, data: Uint8Array): void;
  /** Starts the data path. Called once per DRIVER_OK, after every ready queue was validated. */
  activate(ctx: ActivateContext): void;
  /** The driver notified queue `index` (MMIO write or ioeventfd). Only called while activated. */
  queueNotify(index: number): void;
  /**
   * Stops the data path and forgets the activation (device reset). Work in
   * flight is abandoned: nothing it completes later reaches the guest.
   */
  reset(): void;
  /** Whether host I/O started before the last reset or in this activation is still running. */
  busy(): boolean;
  /**
   * Optional: stops everything the host drives (the VMM has parked the
   * vCPUs; the transport calls this from `MmioTransport.pause`). Until
   * {@link VirtioDevice.resume} the device reads no host input (a tap, a
   * socket, stdin), runs no timer that acts on the guest, takes nothing from
   * its queues, writes no guest memory and signals nothing; host input waits
   * in the host (the kernel's socket or tap queue) or in a bounded device
   * buffer that {@link VirtioDevice.state} saves. I/O already in flight may
   * complete (`busy()` says so; the VMM waits for it). `activate`, `reset`,
   * `state`, `restoreState` and config accesses may be called while paused;
   * an activation while paused starts nothing until resume. A device driven
   * only by the guest (blk, rng) needs no hooks: the paused transport holds
   * its notifications. Idempotent.
   */
  pause?(): void;
  /**
   * Optional: undoes {@link VirtioDevice.pause}: host input is read again,
   * timers restart (re-computed from the clock, so an alarm due during the
   * pause fires now), and each queue gets one turn as if the driver had
   * notified it. Idempotent.
   */
  resume?(): void;
  /** The device's own state as plain JSON data (queues are saved by the transport). */
  state(): DeviceState;
  /**
   * Loads {@link VirtioDevice.state} output into a device built with the same
   * backend. Called by the transport's restore before `activate`.
   * @throws {@link VirtioDeviceError} `"InvalidState"` if it does not fit this device.
   */
  restoreState(state: DeviceState): void;
}

/** A device's saved state: plain JSON, tagged with the device type. */
export interface DeviceState {
  /** The device id it was taken from. */
  readonly deviceType: number;
  /** Device-specific fields. */
  readonly [key: string]: unknown;
}
