// The reference VMM's virtio devices: one virtio-mmio window per device in
// the 32-bit hole, queue notifications through ioeventfds watched on the main
// thread's event loop, interrupts through irqfds on IOAPIC pins, and MMIO
// register exits forwarded from the vCPU worker through a mailbox.
import { connect, type Socket } from "node:net";
import type { VmFd } from "@ts-vmm/kvm-ioctls";
import { layout, type VirtioMmioDevice } from "@ts-vmm/linux-loader";
import type { DiscardableMemory, GuestMemory } from "@ts-vmm/vm-memory";
import {
  EventFdIrqLine,
  MmioTransport,
  VirtioBalloon,
  VirtioBlock,
  VirtioConsole,
  VirtioNet,
  VirtioRng,
  VirtioRtc,
  VirtioVsock,
  type IrqLine,
  type MmioTransportOptions,
  type MmioTransportState,
  type RateLimiterConfig,
  type VirtioDevice,
} from "@ts-vmm/virtio-devices";
import { EventFd, FdWatcher } from "@ts-vmm/vmm-sys-util";
import { VmmError } from "../error.js";
import { MmioMailboxServer, type MmioRequest } from "./mmio-mailbox.js";

/** A virtio device the VMM attaches. */
export type VirtioDeviceConfig =
  /** virtio-blk on a raw image, optionally rate-limited (requests and data bytes). */
  | {
      readonly kind: "blk";
      readonly path: string;
      readonly readOnly?: boolean;
      readonly engine?: "sync" | "async";
      readonly rateLimiter?: RateLimiterConfig;
      /**
       * Adaptive polling of the request queue after it ran empty, in microseconds at most
       * (the sync engine's `pollMaxUs`, see @ts-vmm/virtio-devices); default
       * {@link BLK_POLL_MAX_US}, 0 turns it off.
       */
      readonly pollMaxUs?: number;
    }
  /**
   * virtio-net on a tap interface (attached to if it exists, created otherwise; `%d` in the
   * name lets the kernel number it), with a MAC (default: random, locally administered) and
   * an optional rate limit applied to each direction separately (frames and bytes).
   */
  | {
      readonly kind: "net";
      readonly tap: string;
      readonly mac?: string;
      readonly rateLimiter?: RateLimiterConfig;
      /** The limit on frames to the guest, instead of `rateLimiter` (the API's `rx_rate_limiter`). */
      readonly rxRateLimiter?: RateLimiterConfig;
      /** The limit on frames from the guest, instead of `rateLimiter` (the API's `tx_rate_limiter`). */
      readonly txRateLimiter?: RateLimiterConfig;
    }
  /** virtio-rng from the host CSPRNG. */
  | { readonly kind: "rng" }
  /** virtio-console port 0: on this process's stdin/stdout, or a Unix socket the VMM connects to. */
  | { readonly kind: "console"; readonly socketPath?: string }
  /**
   * virtio-balloon: start with `amountMib` in the balloon (default 0), offer
   * deflate-on-OOM, statistics every `statsIntervalS` seconds (0/absent: no
   * statistics queue) and free page reporting.
   */
  | {
      readonly kind: "balloon";
      readonly amountMib?: number;
      readonly deflateOnOom?: boolean;
      readonly statsIntervalS?: number;
      readonly freePageReporting?: boolean;
    }
  /** virtio-rtc: UTC, TAI and MONOTONIC clocks from the host, with alarms. */
  | { readonly kind: "rtc" }
  /** virtio-vsock with guest CID `cid`: host programs connect to `udsPath` (`CONNECT <port>\n`), guest connections go to `<udsPath>_<port>`. */
  | { readonly kind: "vsock"; readonly cid: number; readonly udsPath: string };


/** Whether the memory can give pages back (GuestMemoryMmap does). */
function isDiscardable(mem: GuestMemory): mem is GuestMemory & DiscardableMemory {
  const m = mem as Partial<DiscardableMemory>;
  return typeof m.discardRange === "function" && typeof m.discardGranularity === "function";
}

/**
 * A balloon amount in MiB as 4 KiB pages, checked against the guest's memory.
 * @throws {@link VmmError} `InvalidConfig`
 */
function balloonPages(amountMib: number, memBytes: number): number {
  const max = Math.floor(memBytes / (1 << 20));
  if (!Number.isSafeInteger(amountMib) || amountMib < 0 || amountMib > max) {
    throw new VmmError("InvalidConfig", `the balloon amount must be a whole number of MiB from 0 to the guest's ${max} MiB, got ${String(amountMib)}`);
  }
  return amountMib * 256;
}

/**
 * Default longest polling window of a virtio-blk queue, µs: long enough to cover a
 * driver's turnaround between a completion and its next request (QD1: the guest's
 * notify exit, ~30 µs on the nested hosts measured in BENCHMARKS.md), short enough that
 * a stall of the event loop stays far below a millisecond.
 */
export const BLK_POLL_MAX_US = 50;

/**
 * First window: one page above the layout's virtio base, so 0xd000_0000 stays
 * unassigned (the micro-guest's bench-exits times plain MMIO exits there).
 */
export const VIRTIO_MMIO_FIRST = layout.virtioMmioBase + 0x1000;
/** Window stride. */
export const VIRTIO_MMIO_STRIDE = 0x1000;
/** IOAPIC pins for virtio devices: ISA-free pins (not 0-4, 8, 12, 13), as many as Firecracker-style setups use. */
const VIRTIO_GSIS = [5, 6, 7, 9, 10, 11, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23];

/**
 * Connects an interrupt line to `gsi`: the one place that knows how device
 * interrupts reach the guest (today an irqfd on the in-kernel IOAPIC; with a
 * split irqchip this becomes a GSI route to an MSI).
 */
export function connectIrq(vm: VmFd, gsi: number): IrqLine & {
  /** Closes the line's eventfd (the irqfd goes with it). */
  close(): void;
} {
  const line = new EventFdIrqLine(new EventFd({ nonBlocking: true }));
  vm.registerIrqfd(line.eventFd, gsi);
  return line;
}

interface Slot {
  readonly kind: VirtioDeviceConfig["kind"];
  /** What it was made from. */
  readonly config: VirtioDeviceConfig;
  /** `blk0`, `net1`: the kind and its index among devices of that kind. */
  readonly name: string;
  readonly base: number;
  readonly gsi: number;
  /** Replaced once by {@link VirtioManager.restoreStates}. */
  transport: MmioTransport;
  readonly options: MmioTransportOptions;
  readonly device: VirtioDevice;
  readonly irq: IrqLine & { close(): void };
  readonly notifiers: { readonly fd: EventFd; readonly watcher: FdWatcher }[];
  /** Queue notifications taken from the ioeventfds, interrupts raised, transport rule violations. */
  readonly counts: { notifications: number; interrupts: number; violations: number };
}

/** One attached virtio device, for metrics and tools. */
export interface VirtioDeviceSlot {
  /** `blk0`, `net1`: the kind and its index among the devices of that kind, in attach order. */
  readonly name: string;
  /** The configured kind. */
  readonly kind: VirtioDeviceConfig["kind"];
  /** Guest-physical base of its virtio-mmio window ({@link VIRTIO_MMIO_STRIDE} bytes). */
  readonly base: number;
  /** Its IOAPIC pin. */
  readonly gsi: number;
  /** The device (its own counters: `stats`, `metrics`, `bytesServed`). */
  readonly device: VirtioDevice;
  /** Queue notifications taken from its ioeventfds (each read may stand for several guest kicks). */
  readonly notifications: number;
  /** Interrupts its transport raised (used-buffer and configuration-change notifications). */
  readonly interrupts: number;
  /** Transport and device rule violations reported for it (the text goes to `violations`, bounded). */
  readonly violations: number;
}

/** Owns the virtio devices of one VM (on the main thread). */
export class VirtioManager {
  readonly #slots: Slot[] = [];
  readonly #vm: VmFd;
  readonly #sockets: Socket[] = [];
  #balloon: VirtioBalloon | undefined;
  #memSize = 0;
  /** One server per vCPU mailbox. */
  readonly #mailboxes: MmioMailboxServer[] = [];
  #closed = false;
  /** Transport rule violations, for diagnostics (bounded). */
  readonly violations: string[] = [];

  private constructor(vm: VmFd) {
    this.#vm = vm;
  }

  /**
   * Creates the devices and wires them to KVM: an irqfd per device, an
   * ioeventfd per queue (datamatch = queue index on QueueNotify).
   * @throws {@link VmmError} `InvalidConfig` (too many devices, a disk that cannot be opened)
   *   or `SetupFailed` (a KVM registration failed).
   */
  static create(vm: VmFd, mem: GuestMemory, configs: readonly VirtioDeviceConfig[]): VirtioManager {
    if (configs.length > VIRTIO_GSIS.length) throw new VmmError("InvalidConfig", `at most ${VIRTIO_GSIS.length} virtio devices`);
    const m = new VirtioManager(vm);
    m.#memSize = mem.size;
    try {
      configs.forEach((c, i) => m.#add(mem, c, VIRTIO_MMIO_FIRST + i * VIRTIO_MMIO_STRIDE, VIRTIO_GSIS[i]!));
    } catch (e) {
      m.close();
      if (e instanceof VmmError) throw e;
      const msg = (e as Error).message;
      const code = (e as { code?: string }).code === "Io" || (e as { code?: string }).code === "InvalidArgument" ? "InvalidConfig" : "SetupFailed";
      throw new VmmError(code, `virtio device setup failed: ${msg}`, { cause: e });
    }
    return m;
  }

  #device(c: VirtioDeviceConfig, mem: GuestMemory, counts: { violations: number }): VirtioDevice {
    const note = (r: string): void => {
      counts.violations++;
      this.#note(r);
    };
    switch (c.kind) {
      case "blk":
        return VirtioBlock.open(c.path, {
          readOnly: c.readOnly ?? false,
          engine: c.engine ?? "sync",
          pollMaxUs: c.pollMaxUs ?? BLK_POLL_MAX_US,
          ...(c.rateLimiter !== undefined ? { rateLimiter: c.rateLimiter } : {}),
        });
      case "net": {
        const rx = c.rxRateLimiter ?? c.rateLimiter;
        const tx = c.txRateLimiter ?? c.rateLimiter;
        return VirtioNet.openTap({
          tap: c.tap,
          ...(c.mac !== undefined ? { mac: c.mac } : {}),
          ...(rx !== undefined ? { rxRateLimiter: rx } : {}),
          ...(tx !== undefined ? { txRateLimiter: tx } : {}),
          onViolation: note,
        });
      }
      case "rng":
        return new VirtioRng();
      case "console": {
        if (c.socketPath === undefined) return new VirtioConsole({ input: process.stdin, output: process.stdout });
        const sock = connect(c.socketPath);
        sock.on("error", (e) => note(`console socket ${c.socketPath}: ${e.message}`));
        this.#sockets.push(sock);
        return new VirtioConsole({ input: sock, output: sock, onViolation: note });
      }
      case "balloon": {
        if (this.#balloon !== undefined) throw new VmmError("InvalidConfig", "at most one balloon device");
        if (!isDiscardable(mem)) throw new VmmError("InvalidConfig", "the balloon needs guest memory that can give pages back to the host (GuestMemoryMmap)");
        const pages = balloonPages(c.amountMib ?? 0, mem.size);
        this.#balloon = new VirtioBalloon({
          memory: mem,
          targetPages: pages,
          deflateOnOom: c.deflateOnOom ?? false,
          statsIntervalS: c.statsIntervalS ?? 0,
          freePageReporting: c.freePageReporting ?? false,
          onViolation: note,
        });
        return this.#balloon;
      }
      case "rtc":
        return new VirtioRtc();
      case "vsock":
        return VirtioVsock.open({ cid: c.cid, udsPath: c.udsPath, onViolation: note });
    }
  }

  /** The balloon device, if one was configured. */
  get balloon(): VirtioBalloon | undefined {
    return this.#balloon;
  }

  /**
   * Sets the balloon's target to `amountMib` MiB (the driver gets a
   * configuration-change interrupt and inflates or deflates toward it).
   * @throws {@link VmmError} `InvalidConfig` without a balloon, or for an amount that is
   *   not a whole number of MiB from 0 to the guest's memory.
   */
  setBalloonTarget(amountMib: number): void {
    const b = this.#balloon;
    if (b === undefined) throw new VmmError("InvalidConfig", "this VM has no balloon device (ts-vmm run --balloon)");
    b.setTarget(balloonPages(amountMib, this.#memSize));
  }

  #note(reason: string): void {
    if (this.violations.length < 256) this.violations.push(reason);
  }

  #add(mem: GuestMemory, c: VirtioDeviceConfig, base: number, gsi: number): void {
    const counts = { notifications: 0, interrupts: 0, violations: 0 };
    const device = this.#device(c, mem, counts);
    const irq = connectIrq(this.#vm, gsi);
    const counted: IrqLine = {
      trigger: () => {
        counts.interrupts++;
        irq.trigger();
      },
    };
    const options: MmioTransportOptions = {
      mem, irq: counted, onViolation: (r) => {
        counts.violations++;
        this.#note(`${c.kind}@0x${base.toString(16)}: ${r}`);
      },
    };
    const transport = new MmioTransport(device, options);
    const name = `${c.kind}${this.#slots.filter((s) => s.kind === c.kind).length}`;
    const slot: Slot = { kind: c.kind, config: c, name, base, gsi, transport, options, device, irq, notifiers: [], counts };
    this.#slots.push(slot);
    for (let q = 0; q < transport.queueCount; q++) {
      const fd = new EventFd({ nonBlocking: true });
      this.#vm.registerIoevent(fd, { kind: "mmio", address: base + MmioTransport.notifyOffset }, { datamatch: q, len: 4 });
      const watcher = FdWatcher.watch(fd.fd, { readable: true }, () => {
        if (fd.tryRead() !== null) {
          counts.notifications++;
          slot.transport.notify(q);
        }
      });
      watcher.unref();
      slot.notifiers.push({ fd, watcher });
    }
  }

  /** The windows and IRQs, for the command line and the DSDT. */
  get mmioDevices(): VirtioMmioDevice[] {
    return this.#slots.map((s) => ({ addr: s.base, size: VIRTIO_MMIO_STRIDE, irq: s.gsi }));
  }

  /** Each window's base and its transport's register cells, for the vCPU workers to serve InterruptStatus/InterruptAck, ConfigGeneration and the ID registers themselves. */
  get interruptCells(): { readonly base: number; readonly cell: SharedArrayBuffer }[] {
    return this.#slots.map((s) => ({ base: s.base, cell: s.transport.interruptState }));
  }

  /** `[start, end)` of every window, for the vCPU worker to forward. */
  get windows(): [number, number][] {
    return this.#slots.map((s) => [s.base, s.base + VIRTIO_MMIO_STRIDE]);
  }

  /** Every device with its window, pin and counters, in attach order. */
  get devices(): VirtioDeviceSlot[] {
    return this.#slots.map((s) => ({ name: s.name, kind: s.kind, base: s.base, gsi: s.gsi, device: s.device, ...s.counts }));
  }

  /** The transports, in device order. */
  get transports(): MmioTransport[] {
    return this.#slots.map((s) => s.transport);
  }

  /** Serves one MMIO access inside a window. @returns false if no window holds it. */
  handle(req: MmioRequest): boolean {
    for (const s of this.#slots) {
      if (req.address >= s.base && req.address < s.base + VIRTIO_MMIO_STRIDE) {
        if (req.write) s.transport.write(req.address - s.base, req.data);
        else s.transport.read(req.address - s.base, req.data);
        return true;
      }
    }
    if (!req.write) req.data.fill(0xff);
    return false;
  }

  /**
   * Serves a vCPU worker's mailbox until close(); called once per vCPU, each
   * with its own mailbox. `other` serves the VMM's own MMIO devices first
   * (the split irqchip's I/O APIC): it returns true if it took the access.
   */
  serve(mailbox: SharedArrayBuffer, other?: (r: MmioRequest) => boolean): void {
    this.#mailboxes.push(new MmioMailboxServer(mailbox, (r) => void (other?.(r) || this.handle(r))));
  }

  /**
   * Quiets the devices of a paused VM: notifications the guest posted before
   * its vCPUs stopped (still in their ioeventfds) are served now, then every
   * transport is paused (each device stops its host input and timers, see
   * `VirtioDevice.pause` in @ts-vmm/virtio-devices; interrupts and
   * notifications are held), then this waits until no device has host I/O in
   * flight (checked every millisecond, at most `timeoutMs`). From then on no
   * device writes guest memory or raises an interrupt until {@link VirtioManager.resume}.
   * @throws {@link VmmError} `InvalidState` if a device is still busy after `timeoutMs`
   *   (the devices stay paused: call {@link VirtioManager.resume}).
   */
  async quiesce(timeoutMs = 30_000): Promise<void> {
    for (const s of this.#slots) {
      s.notifiers.forEach((n, q) => {
        if (n.fd.tryRead() !== null) {
          s.counts.notifications++;
          s.transport.notify(q);
        }
      });
    }
    for (const s of this.#slots) s.transport.pause();
    const until = Date.now() + timeoutMs;
    for (;;) {
      const busy = this.#slots.find((s) => s.device.busy());
      if (busy === undefined) return;
      if (Date.now() > until) throw new VmmError("InvalidState", `the ${busy.kind} device at 0x${busy.base.toString(16)} still has I/O in flight after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  /**
   * Resumes every device paused by {@link VirtioManager.quiesce} or restored by
   * {@link VirtioManager.restoreStates}: host input and timers start again, held
   * notifications are served and held interrupts raised. Idempotent.
   */
  resume(): void {
    if (this.#closed) return;
    for (const s of this.#slots) s.transport.resume();
  }

  /**
   * The device configurations as a snapshot must record them: a net device's
   * tap by the name it got (a `%d` resolved) and its MAC (a random one
   * included), so a restore attaches to the same tap with the MAC the guest
   * knows.
   */
  savedConfigs(): VirtioDeviceConfig[] {
    return this.#slots.map((s) => {
      const c = s.config;
      if (c.kind !== "net" || !(s.device instanceof VirtioNet)) return c;
      return { ...c, tap: s.device.backend.name, mac: s.device.mac };
    });
  }

  /**
   * Every transport's state (queues and device included), in device order.
   * @throws VirtioDeviceError `Busy` if a device has I/O in flight (call {@link VirtioManager.quiesce} first).
   */
  states(): MmioTransportState[] {
    return this.#slots.map((s) => s.transport.state());
  }

  /**
   * Replaces each transport with one rebuilt from `states` (same order and
   * device kinds as this manager's), before the vCPUs run. The devices come
   * back paused (activated, but reading no host input and running no timer)
   * until {@link VirtioManager.resume}, which `Vmm.run` calls; a restored
   * vsock device then sends the driver VIRTIO_VSOCK_EVENT_TRANSPORT_RESET.
   * @throws VirtioDeviceError `InvalidState` for a state that does not fit its device.
   */
  restoreStates(states: readonly MmioTransportState[]): void {
    if (states.length !== this.#slots.length) throw new VmmError("SnapshotInvalid", `the snapshot has ${states.length} virtio device states for ${this.#slots.length} devices`);
    this.#slots.forEach((s, i) => {
      s.transport = MmioTransport.fromState(states[i]!, s.device, s.options, { paused: true });
    });
  }

  /** Unregisters from KVM, closes eventfds, watchers, sockets and disk images, cancels rtc alarm timers. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const m of this.#mailboxes) m.close();
    for (const s of this.#slots) {
      for (const n of s.notifiers) {
        n.watcher.close();
        try {
          this.#vm.unregisterIoevent(n.fd, { kind: "mmio", address: s.base + MmioTransport.notifyOffset }, { datamatch: s.notifiers.indexOf(n), len: 4 });
        } catch {
          // the VM may already be closed
        }
        n.fd.close();
      }
      try {
        this.#vm.unregisterIrqfd(s.irq instanceof EventFdIrqLine ? s.irq.eventFd : 0, s.gsi);
      } catch {
        // the VM may already be closed
      }
      s.irq.close();
      if (s.device instanceof VirtioBlock || s.device instanceof VirtioNet || s.device instanceof VirtioVsock) s.device.close();
      if (s.device instanceof VirtioRtc) s.device.reset(); // cancels its alarm timers
    }
    for (const sock of this.#sockets) sock.destroy();
  }
}
