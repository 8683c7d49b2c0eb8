import type { GuestMemory } from "@ts-vmm/vm-memory";
import { Queue, type QueueState } from "@ts-vmm/virtio-queue";
import {
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
} from "./constants.js";
import type { DeviceState, IrqLine, VirtioDevice, VirtioInterrupt } from "./device.js";
import { VirtioDeviceError } from "./errors.js";
import { checkTransportState, KNOWN_STATUS, type MmioTransportState } from "./mmio-state.js";

const U32 = 0xffff_ffffn;

/** A 32-bit register value into the 4 bytes of a guest read, little-endian (as every register is). */
function putU32(data: Uint8Array, v: number): void {
  data[0] = v & 0xff;
  data[1] = (v >>> 8) & 0xff;
  data[2] = (v >>> 16) & 0xff;
  data[3] = (v >>> 24) & 0xff;
}

/** Bytes of {@link MmioTransport.interruptState}: InterruptStatus, ConfigGeneration, DeviceID and one spare Int32 cell. */
export const REGISTER_CELL_BYTES = 16;

/** Options of {@link MmioTransport}. */
export interface MmioTransportOptions {
  /** Guest memory the queues live in. */
  readonly mem: GuestMemory;
  /** The interrupt line (an irqfd in the VMM). */
  readonly irq: IrqLine;
  /** Transport features to offer besides VERSION_1 (default: EVENT_IDX, INDIRECT_DESC and RING_PACKED). */
  readonly transportFeatures?: bigint;
  /** Called with a reason whenever the transport sets DEVICE_NEEDS_RESET or ignores a bad write (for logs). */
  readonly onViolation?: (reason: string) => void;
}

/**
 * The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2): the register
 * window of one device. The VMM forwards MMIO exits to {@link MmioTransport.read}
 * and {@link MmioTransport.write} (offsets inside the window) and queue
 * notifications from ioeventfds to {@link MmioTransport.notify}.
 *
 * Every guest-written value is checked; nothing the guest writes makes it
 * throw. Rules it enforces (see [DESIGN.md](../DESIGN.md)): the status bits are set in order
 * and never cleared except by a reset; features are accepted only as a subset
 * of what is offered and with VERSION_1; queues are configured only between
 * FEATURES_OK and (re)ready, with every value checked by the queue; a queue is
 * validated against guest memory when it becomes ready on a live device and
 * at DRIVER_OK. A broken rule on a live device sets DEVICE_NEEDS_RESET.
 */
export class MmioTransport {
  readonly #dev: VirtioDevice;
  readonly #mem: GuestMemory;
  readonly #irq: IrqLine;
  readonly #offered: bigint;
  readonly #onViolation: ((reason: string) => void) | undefined;
  readonly #queues: Queue[];
  readonly #queueConfigErrors: boolean[];
  #status = 0;
  #driverFeatures = 0n;
  #deviceFeaturesSel = 0;
  #driverFeaturesSel = 0;
  #queueSel = 0;
  /**
   * Shared memory a vCPU thread serves registers from ({@link serveInterruptRegister}):
   * [0] InterruptStatus, [1] ConfigGeneration, [2] DeviceID. This thread is the only
   * writer of [1] and [2]; [0] takes Atomics.or here and Atomics.and from an ACK anywhere.
   */
  readonly #isr = new Int32Array(new SharedArrayBuffer(REGISTER_CELL_BYTES));
  #activated = false;
  /** Increments on every reset: interrupts from an older activation are dropped. */
  #epoch = 0;
  /** Between {@link MmioTransport.pause} and {@link MmioTransport.resume}. */
  #paused = false;
  /** An interrupt was due while paused (or the restored InterruptStatus had bits set): raised on resume. */
  #heldIrq = false;
  /** Queue notifications that arrived while paused, by index: delivered on resume. */
  readonly #heldNotify: boolean[] = [];

  /**
   * @param device - the device behind this window.
   * @param opts - guest memory, the interrupt line and options.
   * @throws {@link VirtioDeviceError} `"InvalidArgument"` if the device's queue sizes are not valid queue sizes.
   */
  constructor(device: VirtioDevice, opts: MmioTransportOptions) {
    this.#dev = device;
    this.#mem = opts.mem;
    this.#irq = opts.irq;
    this.#onViolation = opts.onViolation;
    const tf = opts.transportFeatures ?? VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC | VIRTIO_F_RING_PACKED;
    this.#offered = device.deviceFeatures | tf | VIRTIO_F_VERSION_1;
    try {
      this.#queues = device.queueMaxSizes.map((n) => new Queue(n));
    } catch (e) {
      throw new VirtioDeviceError("InvalidArgument", `device queue sizes ${device.queueMaxSizes.join(",")}: ${(e as Error).message}`, { cause: e });
    }
    this.#queueConfigErrors = this.#queues.map(() => false);
    Atomics.store(this.#isr, 2, device.deviceType | 0);
  }

  get #configGeneration(): number {
    return Atomics.load(this.#isr, 1) >>> 0;
  }

  set #configGeneration(v: number) {
    Atomics.store(this.#isr, 1, v | 0);
  }

  /** Size of the register window in bytes. */
  static get windowSize(): number {
    return MMIO_WINDOW_SIZE;
  }
  /** Offset of QueueNotify inside the window (where the VMM puts one ioeventfd per queue, datamatch = index). */
  static get notifyOffset(): number {
    return MMIO.QueueNotify;
  }

  /** The device behind this window. */
  get device(): VirtioDevice {
    return this.#dev;
  }
  /** Number of queues. */
  get queueCount(): number {
    return this.#queues.length;
  }
  /** The device status register. */
  get status(): number {
    return this.#status;
  }
  /** Whether the device has been activated (DRIVER_OK accepted, not reset since). */
  get activated(): boolean {
    return this.#activated;
  }
  /** Features offered (device, transport, VERSION_1). */
  get offeredFeatures(): bigint {
    return this.#offered;
  }
  /** Features the driver wrote (negotiated once FEATURES_OK is set). */
  get driverFeatures(): bigint {
    return this.#driverFeatures;
  }
  /** InterruptStatus. */
  get interruptStatus(): number {
    return Atomics.load(this.#isr, 0);
  }
  /**
   * The shared cells ({@link REGISTER_CELL_BYTES} bytes, Int32) that hold
   * InterruptStatus [0], ConfigGeneration [1] and DeviceID [2]. A VMM whose MMIO
   * exits arrive on other threads (vCPU workers) passes it to them, and they
   * serve the guest's InterruptStatus reads and InterruptAck writes (a Linux
   * driver does both on every interrupt), ConfigGeneration reads (around every
   * multi-word config read) and the ID registers with
   * {@link serveInterruptRegister}, without a round trip to this transport's
   * thread. The transport sets interrupt bits with Atomics.or before it raises
   * the line; ACK clears with Atomics.and. It bumps ConfigGeneration (Atomics.store)
   * in the same turn as the device changes its config, before the change
   * interrupt, so a driver's read of the generation before and after a config
   * read served here sees any change made in between.
   */
  get interruptState(): SharedArrayBuffer {
    return this.#isr.buffer as SharedArrayBuffer;
  }
  /** ConfigGeneration. */
  get configGeneration(): number {
    return this.#configGeneration;
  }

  #violation(reason: string, needsReset: boolean): void {
    this.#onViolation?.(reason);
    if (needsReset) this.#setNeedsReset(reason);
  }

  #setNeedsReset(_reason: string): void {
    if (this.#status & STATUS_DEVICE_NEEDS_RESET) return;
    this.#status |= STATUS_DEVICE_NEEDS_RESET;
    // §2.1.2: with DRIVER_OK set, the device sends a configuration change notification.
    if (this.#status & STATUS_DRIVER_OK) this.#raise(INT_CONFIG_CHANGE);
  }

  #raise(bit: number): void {
    Atomics.or(this.#isr, 0, bit);
    if (this.#paused) this.#heldIrq = true;
    else this.#irq.trigger();
  }

  /** Whether the transport is paused (see {@link MmioTransport.pause}). */
  get paused(): boolean {
    return this.#paused;
  }

  /**
   * Pauses the device behind this window (the VMM pauses its vCPUs first):
   * the device's own {@link VirtioDevice.pause} stops its host input and
   * timers; until {@link MmioTransport.resume} this transport raises no
   * interrupt (InterruptStatus bits are still set, the line is raised once on
   * resume) and holds queue notifications (each is delivered on resume), so
   * a device without pause hooks does nothing either. Register accesses are
   * still served. Idempotent.
   */
  pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    this.#dev.pause?.();
  }

  /**
   * Undoes {@link MmioTransport.pause}: the device resumes, held queue
   * notifications are delivered, and a held interrupt is raised (once, if
   * InterruptStatus still has a bit set). Idempotent.
   */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#dev.resume?.();
    this.#heldNotify.forEach((held, q) => {
      if (!held) return;
      this.#heldNotify[q] = false;
      this.notify(q);
    });
    if (this.#heldIrq) {
      this.#heldIrq = false;
      if (Atomics.load(this.#isr, 0) !== 0) this.#irq.trigger();
    }
  }

  /**
   * Serves a guest read of `data.length` bytes at `offset` in the window
   * (fills `data`). Registers below 0x100 are 32-bit: other widths or
   * misaligned offsets read as zeros. Never throws.
   */
  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    if (!Number.isInteger(offset) || offset < 0 || offset >= MMIO_WINDOW_SIZE) return;
    if (offset >= MMIO.Config) {
      const len = data.length;
      if (len !== 1 && len !== 2 && len !== 4 && len !== 8) return;
      if (offset + len > MMIO_WINDOW_SIZE) return;
      const off = offset - MMIO.Config;
      if (off + len > this.#dev.configSize) {
        // Partly or wholly past the device's config: the bytes inside are read, the rest stay 0.
        if (off < this.#dev.configSize) this.#dev.readConfig(off, data.subarray(0, this.#dev.configSize - off));
        return;
      }
      this.#dev.readConfig(off, data);
      return;
    }
    if (data.length !== 4 || offset % 4 !== 0) {
      this.#violation(`read of ${data.length} bytes at register 0x${offset.toString(16)}`, false);
      return;
    }
    putU32(data, this.#readRegister(offset));
  }

  #readRegister(offset: number): number {
    const q = this.#queues[this.#queueSel];
    switch (offset) {
      case MMIO.MagicValue:
        return MMIO_MAGIC;
      case MMIO.Version:
        return MMIO_VERSION;
      case MMIO.DeviceId:
        return this.#dev.deviceType;
      case MMIO.VendorId:
        return MMIO_VENDOR_ID;
      case MMIO.DeviceFeatures:
        return this.#deviceFeaturesSel < 2 ? Number((this.#offered >> BigInt(32 * this.#deviceFeaturesSel)) & U32) : 0;
      case MMIO.QueueNumMax:
        return q === undefined ? 0 : q.maxSize;
      case MMIO.QueueReady:
        return q?.ready ? 1 : 0;
      case MMIO.InterruptStatus:
        return Atomics.load(this.#isr, 0);
      case MMIO.Status:
        // A reset completes once host I/O of the old activation is over: until
        // then the status does not read 0 (§2.4: the driver waits for 0).
        return this.#status === 0 && this.#dev.busy() ? STATUS_ACKNOWLEDGE : this.#status;
      case MMIO.ShmLenLow:
      case MMIO.ShmLenHigh:
        return 0xffff_ffff; // no shared memory regions: length -1 (§4.2.2)
      case MMIO.ConfigGeneration:
        return this.#configGeneration;
      default:
        return 0; // write-only and reserved registers read as 0
    }
  }

  /**
   * Serves a guest write of `data` at `offset` in the window. Registers below
   * 0x100 take 32-bit aligned writes only. Never throws.
   */
  write(offset: number, data: Uint8Array): void {
    if (!Number.isInteger(offset) || offset < 0 || offset >= MMIO_WINDOW_SIZE) return;
    if (offset >= MMIO.Config) {
      const len = data.length;
      if ((len !== 1 && len !== 2 && len !== 4 && len !== 8) || offset + len > MMIO_WINDOW_SIZE) return;
      const off = offset - MMIO.Config;
      if (off + len > this.#dev.configSize) return;
      this.#dev.writeConfig(off, data);
      return;
    }
    if (data.length !== 4 || offset % 4 !== 0) {
      this.#violation(`write of ${data.length} bytes at register 0x${offset.toString(16)}`, false);
      return;
    }
    const v = ((data[0] as number) | ((data[1] as number) << 8) | ((data[2] as number) << 16) | ((data[3] as number) << 24)) >>> 0;
    this.#writeRegister(offset, v);
  }

  /** Writes one 32-bit register (the same path as {@link MmioTransport.write}). Never throws. */
  writeRegister(offset: number, value: number): void {
    if (!Number.isInteger(offset) || offset < 0 || offset >= MMIO.Config || offset % 4 !== 0) return;
    this.#writeRegister(offset, value >>> 0);
  }

  /** Reads one 32-bit register (the same path as {@link MmioTransport.read}). Never throws. */
  readRegister(offset: number): number {
    if (!Number.isInteger(offset) || offset < 0 || offset >= MMIO.Config || offset % 4 !== 0) return 0;
    return this.#readRegister(offset) >>> 0;
  }

  #writeRegister(offset: number, v: number): void {
    switch (offset) {
      case MMIO.DeviceFeaturesSel:
        this.#deviceFeaturesSel = v;
        return;
      case MMIO.DriverFeatures:
        this.#writeDriverFeatures(v);
        return;
      case MMIO.DriverFeaturesSel:
        this.#driverFeaturesSel = v;
        return;
      case MMIO.QueueSel:
        this.#queueSel = v; // an out-of-range selector reads QueueNumMax 0 and ignores writes
        return;
      case MMIO.QueueNum:
      case MMIO.QueueDescLow:
      case MMIO.QueueDescHigh:
      case MMIO.QueueDriverLow:
      case MMIO.QueueDriverHigh:
      case MMIO.QueueDeviceLow:
      case MMIO.QueueDeviceHigh:
      case MMIO.QueueReady:
        this.#writeQueue(offset, v);
        return;
      case MMIO.QueueNotify:
        this.notify(v);
        return;
      case MMIO.InterruptAck:
        Atomics.and(this.#isr, 0, ~v);
        return;
      case MMIO.Status:
        this.#writeStatus(v);
        return;
      case MMIO.ShmSel:
      case MMIO.QueueReset:
        return; // no shared memory; VIRTIO_F_RING_RESET is not offered
      default:
        this.#violation(`write to read-only or reserved register 0x${offset.toString(16)}`, false);
    }
  }

  #writeDriverFeatures(v: number): void {
    const s = this.#status;
    if (!(s & STATUS_DRIVER) || s & STATUS_FEATURES_OK) {
      this.#violation("DriverFeatures written outside feature negotiation", false);
      return;
    }
    if (this.#driverFeaturesSel > 1) return;
    const shift = BigInt(32 * this.#driverFeaturesSel);
    this.#driverFeatures = (this.#driverFeatures & ~(U32 << shift)) | (BigInt(v) << shift);
  }

  #writeQueue(offset: number, v: number): void {
    const sel = this.#queueSel;
    const q = this.#queues[sel];
    if (q === undefined) {
      this.#violation(`queue register 0x${offset.toString(16)} written with QueueSel ${sel} (no such queue)`, false);
      return;
    }
    if (!(this.#status & STATUS_FEATURES_OK) || this.#status & STATUS_DEVICE_NEEDS_RESET) {
      this.#violation(`queue ${sel} configured before FEATURES_OK or while DEVICE_NEEDS_RESET`, false);
      return;
    }
    let ok = true;
    switch (offset) {
      case MMIO.QueueNum:
        ok = q.setSize(v);
        break;
      case MMIO.QueueDescLow:
        ok = q.setDescTableAddress(v, undefined);
        break;
      case MMIO.QueueDescHigh:
        ok = q.setDescTableAddress(undefined, v);
        break;
      case MMIO.QueueDriverLow:
        ok = q.setAvailRingAddress(v, undefined);
        break;
      case MMIO.QueueDriverHigh:
        ok = q.setAvailRingAddress(undefined, v);
        break;
      case MMIO.QueueDeviceLow:
        ok = q.setUsedRingAddress(v, undefined);
        break;
      case MMIO.QueueDeviceHigh:
        ok = q.setUsedRingAddress(undefined, v);
        break;
      case MMIO.QueueReady:
        this.#writeQueueReady(sel, q, v);
        return;
    }
    if (!ok) {
      // Remember it: the queue must not become ready with a value the driver believes it set.
      this.#queueConfigErrors[sel] = true;
      this.#violation(`queue ${sel}: ${q.lastError?.message ?? "bad value"}`, false);
    }
  }

  #writeQueueReady(sel: number, q: Queue, v: number): void {
    if (v === 0) {
      q.setReady(false);
      return;
    }
    if (v !== 1) {
      this.#violation(`QueueReady written with ${v}`, false);
      return;
    }
    if (this.#queueConfigErrors[sel]) {
      this.#violation(`queue ${sel} not set ready: a configuration write was refused`, false);
      return; // QueueReady reads back 0: the driver sees the refusal
    }
    q.setReady(true);
    if (this.#activated && !q.isValid(this.#mem)) {
      q.setReady(false);
      this.#violation(`queue ${sel} set ready on a live device with rings outside guest memory`, true);
    }
  }

  #writeStatus(v: number): void {
    if (v === 0) {
      this.reset();
      return;
    }
    const old = this.#status;
    if (v & ~KNOWN_STATUS) {
      this.#violation(`status 0x${v.toString(16)} has unknown or device-owned bits`, old !== 0);
      return;
    }
    const keep = old & ~STATUS_DEVICE_NEEDS_RESET;
    if ((v & keep) !== keep) {
      this.#violation(`status 0x${v.toString(16)} clears bits of 0x${old.toString(16)} without a reset`, true);
      return;
    }
    const added = v & ~keep;
    if (added & STATUS_FAILED) {
      this.#status |= STATUS_FAILED;
      return;
    }
    // Order (§3.1.1): ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK.
    const need = (bit: number, before: number): boolean => !(v & bit) || (v & before) === before;
    if (!need(STATUS_DRIVER, STATUS_ACKNOWLEDGE) || !need(STATUS_FEATURES_OK, STATUS_DRIVER) || !need(STATUS_DRIVER_OK, STATUS_FEATURES_OK)) {
      this.#violation(`status 0x${v.toString(16)} sets bits out of order`, old !== 0);
      return;
    }
    let next = old | added;
    if (added & STATUS_FEATURES_OK) {
      if (!this.#acceptFeatures()) next &= ~STATUS_FEATURES_OK; // the driver reads it back clear (§3.1.1 step 6)
    }
    this.#status = next;
    if (added & STATUS_DRIVER_OK && next & STATUS_FEATURES_OK) this.#activate();
  }

  #acceptFeatures(): boolean {
    const f = this.#driverFeatures;
    if ((f & ~this.#offered) !== 0n) {
      this.#violation(`driver features 0x${f.toString(16)} include bits not offered (0x${this.#offered.toString(16)})`, false);
      return false;
    }
    if (!(f & VIRTIO_F_VERSION_1)) {
      this.#violation("driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)", false);
      return false;
    }
    for (const q of this.#queues) {
      q.setRingPacked((f & VIRTIO_F_RING_PACKED) !== 0n);
      q.setEventIdx((f & VIRTIO_F_EVENT_IDX) !== 0n);
      q.setIndirectDesc((f & VIRTIO_F_INDIRECT_DESC) !== 0n);
    }
    return true;
  }

  #activate(): void {
    for (let i = 0; i < this.#queues.length; i++) {
      const q = this.#queues[i] as Queue;
      if (q.ready && !q.isValid(this.#mem)) {
        this.#violation(`queue ${i} is ready with rings outside guest memory at DRIVER_OK`, true);
        return;
      }
    }
    this.#activated = true;
    this.#dev.activate({ mem: this.#mem, queues: this.#queues, features: this.#driverFeatures, interrupt: this.#interruptFor(this.#epoch) });
  }

  #interruptFor(epoch: number): VirtioInterrupt {
    return {
      signalUsedQueue: () => {
        if (epoch === this.#epoch && this.#activated) this.#raise(INT_USED_BUFFER);
      },
      signalConfigChange: () => {
        if (epoch !== this.#epoch) return;
        this.#configGeneration = (this.#configGeneration + 1) >>> 0;
        if (this.#status & STATUS_DRIVER_OK) this.#raise(INT_CONFIG_CHANGE);
      },
      needsReset: (reason: string) => {
        if (epoch !== this.#epoch) return;
        this.#violation(reason, true);
      },
    };
  }

  /**
   * A queue notification (QueueNotify write or its ioeventfd). Ignored unless
   * the device is active and `index` names a ready queue. Never throws.
   */
  notify(index: number): void {
    if (!this.#activated || this.#status & STATUS_DEVICE_NEEDS_RESET) return;
    const q = this.#queues[index];
    if (q === undefined || !q.ready) return;
    if (this.#paused) {
      this.#heldNotify[index] = true;
      return;
    }
    this.#dev.queueNotify(index);
  }

  /** Device reset (status 0): the device stops, queues and negotiation go back to power-on. */
  reset(): void {
    this.#epoch++;
    this.#activated = false;
    this.#dev.reset();
    for (const q of this.#queues) q.reset();
    this.#queueConfigErrors.fill(false);
    this.#status = 0;
    this.#driverFeatures = 0n;
    this.#deviceFeaturesSel = 0;
    this.#driverFeaturesSel = 0;
    this.#queueSel = 0;
    Atomics.store(this.#isr, 0, 0);
    this.#heldIrq = false;
    this.#heldNotify.length = 0;
  }

  /**
   * The transport's state, queues and device included.
   * @throws {@link VirtioDeviceError} `"Busy"` if the device has host I/O in flight (quiesce first).
   */
  state(): MmioTransportState {
    if (this.#dev.busy()) throw new VirtioDeviceError("Busy", "device has I/O in flight; save state once it is idle");
    return {
      version: 1,
      status: this.#status,
      driverFeatures: this.#driverFeatures.toString(16),
      deviceFeaturesSel: this.#deviceFeaturesSel,
      driverFeaturesSel: this.#driverFeaturesSel,
      queueSel: this.#queueSel,
      interruptStatus: Atomics.load(this.#isr, 0) >>> 0,
      configGeneration: this.#configGeneration,
      activated: this.#activated,
      queueConfigErrors: [...this.#queueConfigErrors],
      queues: this.#queues.map((q) => q.state()),
      device: this.#dev.state(),
    };
  }

  /**
   * Rebuilds a transport around `device` (built with the same backend) from
   * {@link MmioTransport.state} output, re-checking every field, and
   * re-activates the device if it was active. With `paused`, the transport
   * and the device are paused before the device state is loaded and the
   * device activated (nothing runs until {@link MmioTransport.resume}); the
   * VMM restores this way before its vCPUs run. A saved InterruptStatus with
   * bits set raises the line once (on resume when paused): an interrupt held
   * by a pause when the snapshot was taken is not lost, and a driver that
   * already saw it reads the register and finds nothing new.
   * @throws {@link VirtioDeviceError} `"InvalidState"` for a malformed state or one from another device.
   */
  static fromState(state: MmioTransportState, device: VirtioDevice, opts: MmioTransportOptions, restore: { readonly paused?: boolean } = {}): MmioTransport {
    checkTransportState(state, device);
    const bad = (what: string, cause?: unknown): VirtioDeviceError =>
      new VirtioDeviceError("InvalidState", `virtio-mmio state: ${what}`, cause === undefined ? undefined : { cause });
    const t = new MmioTransport(device, opts);
    const features = BigInt(`0x${state.driverFeatures}`);
    if ((features & ~t.#offered) !== 0n) throw bad("driverFeatures has bits this device does not offer");
    if (state.activated && !(state.status & STATUS_DRIVER_OK)) throw bad("activated without DRIVER_OK");
    for (let i = 0; i < state.queues.length; i++) {
      let q: Queue;
      try {
        q = Queue.fromState(state.queues[i] as QueueState);
      } catch (e) {
        throw bad(`queue ${i}: ${(e as Error).message}`, e);
      }
      if (q.maxSize !== device.queueMaxSizes[i]) throw bad(`queue ${i} max size ${q.maxSize} does not match the device`);
      t.#queues[i] = q;
    }
    if (restore.paused === true) t.pause();
    device.restoreState(state.device);
    t.#status = state.status;
    t.#driverFeatures = features;
    t.#deviceFeaturesSel = state.deviceFeaturesSel;
    t.#driverFeaturesSel = state.driverFeaturesSel;
    t.#queueSel = state.queueSel;
    Atomics.store(t.#isr, 0, state.interruptStatus | 0);
    t.#configGeneration = state.configGeneration;
    state.queueConfigErrors.forEach((b, i) => (t.#queueConfigErrors[i] = b));
    if (state.activated) t.#activate();
    if (state.activated && (state.interruptStatus & 3) !== 0) {
      if (t.#paused) t.#heldIrq = true;
      else t.#irq.trigger();
    }
    return t;
  }
}

/**
 * Serves, on any thread, the guest accesses of a virtio-mmio window that need
 * no round trip to the transport's thread, on the cells of
 * {@link MmioTransport.interruptState}: InterruptStatus reads and InterruptAck
 * writes, ConfigGeneration reads, and reads of MagicValue, Version, DeviceID and
 * VendorID (constant for the transport's life). Returns false for every other
 * access (offset, direction or a width other than 4), which must go to
 * {@link MmioTransport.read} / {@link MmioTransport.write} as before; also for
 * ConfigGeneration and DeviceID when `cell` is shorter than the transport's (a
 * 4-byte InterruptStatus cell of an older transport). Never throws.
 * @param cell - an Int32Array over the transport's interruptState.
 * @param offset - the offset in the window.
 * @param write - whether the guest writes.
 * @param data - the bytes written, or the buffer a read fills (little-endian).
 */
export function serveInterruptRegister(cell: Int32Array, offset: number, write: boolean, data: Uint8Array): boolean {
  if (data.length !== 4) return false;
  if (write) {
    if (offset !== MMIO.InterruptAck) return false;
    const v = data[0]! | (data[1]! << 8) | (data[2]! << 16) | (data[3]! << 24);
    Atomics.and(cell, 0, ~v);
    return true;
  }
  let v: number;
  switch (offset) {
    case MMIO.InterruptStatus:
      v = Atomics.load(cell, 0);
      break;
    case MMIO.ConfigGeneration:
      if (cell.length < 3) return false;
      v = Atomics.load(cell, 1);
      break;
    case MMIO.DeviceId:
      if (cell.length < 3) return false;
      v = Atomics.load(cell, 2);
      break;
    case MMIO.MagicValue:
      v = MMIO_MAGIC;
      break;
    case MMIO.Version:
      v = MMIO_VERSION;
      break;
    case MMIO.VendorId:
      v = MMIO_VENDOR_ID;
      break;
    default:
      return false;
  }
  putU32(data, v);
  return true;
}
