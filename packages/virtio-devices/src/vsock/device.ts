import { GuestMemoryError } from "@ts-vmm/vm-memory";
import { VirtqueueError, type DescriptorChain, type Queue } from "@ts-vmm/virtio-queue";
import type { ActivateContext, DeviceState, VirtioDevice } from "../device.js";
import { VirtioDeviceError } from "../errors.js";
import type { VsockBackend } from "./backend.js";
import { VSOCK_EVENT_QUEUE, VSOCK_RX_QUEUE, VSOCK_TX_QUEUE, VsockEventHandler } from "./event-handler.js";
import type { VsockMetrics } from "./metrics.js";
import { VsockUnixBackend, type VsockUnixBackendOptions } from "./muxer.js";
import {
  VIRTIO_ID_VSOCK,
  VSOCK_EVENT_TRANSPORT_RESET,
  VSOCK_HEADER_SIZE,
  VSOCK_HOST_CID,
  VSOCK_MAX_PAYLOAD,
  VSOCK_OP_CREDIT_REQUEST,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RW,
  VSOCK_TYPE_STREAM,
  decodeHeader,
  encodeHeader,
  type VsockHeader,
} from "./packet.js";
import { checkVsockState, vsockState, type VirtioVsockState } from "./persist.js";

/** Most packets moved per queue and turn of the event loop before yielding (setImmediate). */
export const VSOCK_BATCH_PACKETS = 256;
/** Most guest payload bytes taken from the tx queue per turn before yielding. */
const TX_BATCH_BYTES = 4 * 1024 * 1024;
const QUEUE_SIZE = 256;
const EVENT_QUEUE_SIZE = 64;

/** Options of {@link VirtioVsock.open}: the guest CID, the Unix socket path, and the backend's bounds. */
export interface VirtioVsockOptions extends VsockUnixBackendOptions {
  /** The guest's CID: 3..0xfffffffe (0-2 are reserved, 0xffffffff is VMADDR_CID_ANY). */
  readonly cid: number;
  /** Where host programs connect (`CONNECT <port>\n`); guest connections go to `<udsPath>_<port>`. */
  readonly udsPath: string;
}

interface Active {
  readonly ctx: ActivateContext;
  readonly rx: Queue;
  readonly tx: Queue;
  readonly ev: Queue;
  broken: boolean;
}

type Malformed = "cid" | "type" | "op" | "len";

/**
 * virtio-vsock (§5.10): three queues (rx, tx, event), config = the guest CID
 * (le64), stream sockets only, no device feature bits (STREAM is implied).
 * The device validates rings and packet headers and moves packets; the
 * connections live in a {@link VsockBackend} ({@link VsockUnixBackend}: the
 * Firecracker convention over Unix sockets).
 *
 * Every tx packet is checked before it reaches the backend: a chain shorter
 * than a header is completed and counted; src_cid not the guest's, dst_cid
 * not the host, a type other than STREAM, an unknown op, `len` above 64 KiB
 * or beyond the chain, or `len` on a control op is answered with RST (never
 * an RST to an RST) and counted in {@link VsockMetrics.malformed}. A ring the
 * queue rejects, or a buffer outside guest memory, sets DEVICE_NEEDS_RESET.
 */
export class VirtioVsock implements VirtioDevice {
  /** {@inheritDoc VirtioDevice.deviceType} */
  readonly deviceType = VIRTIO_ID_VSOCK;
  /** {@inheritDoc VirtioDevice.queueMaxSizes} */
  readonly queueMaxSizes: readonly number[] = [QUEUE_SIZE, QUEUE_SIZE, EVENT_QUEUE_SIZE];
  /** No device-specific features: VIRTIO_VSOCK_F_STREAM is implied when none is negotiated. */
  readonly deviceFeatures = 0n;
  /** Bytes of config space: le64 guest_cid. */
  readonly configSize = 8;
  /** The guest's CID. */
  readonly cid: number;
  /** The host side. */
  readonly backend: VsockBackend;
  /** Counters (the backend's object, shared). */
  readonly metrics: VsockMetrics;
  readonly #handler: VsockEventHandler;
  readonly #onViolation: ((reason: string) => void) | undefined;
  #active: Active | undefined;
  #eventPending = false;
  /** Between {@link VirtioVsock.pause} and {@link VirtioVsock.resume}. */
  #paused = false;

  /**
   * @param cid - the guest CID (3..0xfffffffe).
   * @param backend - the host side (owned by the device from here on: `close()` closes it).
   * @param onViolation - called with a sentence for each malformed packet (for logs).
   * @throws {@link VirtioDeviceError} `"InvalidArgument"` for a bad CID.
   */
  constructor(cid: number, backend: VsockBackend, onViolation?: (reason: string) => void) {
    if (!Number.isSafeInteger(cid) || cid < 3 || cid > 0xffff_fffe) {
      throw new VirtioDeviceError("InvalidArgument", `vsock cid must be an integer in 3..4294967294, got ${String(cid)}`);
    }
    this.cid = cid;
    this.backend = backend;
    this.metrics = backend.metrics;
    this.#onViolation = onViolation;
    this.#handler = new VsockEventHandler({ rx: () => this.#rx(), tx: () => this.#tx(), event: () => this.#event() });
  }

  /**
   * A device on a {@link VsockUnixBackend} listening on `opts.udsPath`.
   * @throws {@link VirtioDeviceError} `"InvalidArgument"` for bad options; `"Io"` if the socket cannot be bound.
   */
  static open(opts: VirtioVsockOptions): VirtioVsock {
    if (!Number.isSafeInteger(opts.cid) || opts.cid < 3 || opts.cid > 0xffff_fffe) {
      throw new VirtioDeviceError("InvalidArgument", `vsock cid must be an integer in 3..4294967294, got ${String(opts.cid)}`);
    }
    return new VirtioVsock(opts.cid, VsockUnixBackend.listen(opts.udsPath, opts), opts.onViolation);
  }

  /** {@inheritDoc VirtioDevice.readConfig} */
  readConfig(offset: number, data: Uint8Array): void {
    data.fill(0);
    const cfg = new Uint8Array(8);
    new DataView(cfg.buffer).setUint32(0, this.cid, true); // upper 32 bits stay 0
    if (offset >= 0 && offset < 8) data.set(cfg.subarray(offset, Math.min(8, offset + data.length)));
  }

  /** Config writes are ignored (guest_cid is read-only). */
  writeConfig(_offset: number, _data: Uint8Array): void {}

  /** {@inheritDoc VirtioDevice.activate} */
  activate(ctx: ActivateContext): void {
    const [rx, tx, ev] = ctx.queues;
    if (rx === undefined || tx === undefined || ev === undefined) return;
    this.#active = { ctx, rx, tx, ev, broken: false };
    this.backend.attach({ guestCid: this.cid, wakeRx: () => this.#handler.wakeRx(), wakeTx: () => this.#handler.wakeTx() });
    this.#event();
    this.#tx();
    this.#rx();
  }

  /** Stops the data path and drops every connection (their host sockets are closed; the guest forgot them) and a pending transport-reset event. */
  reset(): void {
    this.#active = undefined;
    this.#eventPending = false;
    this.#handler.cancel();
    this.backend.detach();
  }

  /** {@inheritDoc VirtioDevice.busy} */
  busy(): boolean {
    return false; // tx payloads are copied out of guest memory; nothing holds a view of it
  }

  /**
   * Stops moving packets: no rx, tx or event turn runs, so no host data
   * reaches guest memory. The backend keeps its connections: host sockets
   * keep what they send in the kernel or in the connection's one-chunk
   * buffer (credit-bounded), new host connections are accepted and wait,
   * and handshake timers keep running in host time (a host program that
   * connects during a pause longer than the handshake time is refused).
   */
  pause(): void {
    this.#paused = true;
  }

  /** Delivers a waiting event, then takes tx and fills rx as if the driver had notified all three queues. */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#event();
    this.#tx();
    this.#rx();
  }

  /** Whether the device is paused. */
  get paused(): boolean {
    return this.#paused;
  }

  /** The CID only: connections are not saved (see {@link VirtioVsockState}). */
  state(): VirtioVsockState {
    return vsockState(this.cid);
  }

  /**
   * Loads a state with the same CID, drops every connection, and queues
   * VIRTIO_VSOCK_EVENT_TRANSPORT_RESET for the driver (sent on activation,
   * or on resume when restored paused, as soon as the driver has an event
   * buffer posted): the guest resets every connection it had, as after a
   * Firecracker restore.
   * @throws {@link VirtioDeviceError} `"InvalidState"` for another device's state or another CID.
   */
  restoreState(state: DeviceState): void {
    checkVsockState(state, this.cid);
    this.backend.detach();
    this.#eventPending = true;
  }

  /** Whether a transport-reset event waits for an event-queue buffer. */
  get eventPending(): boolean {
    return this.#eventPending;
  }

  /** {@inheritDoc VirtioDevice.queueNotify} */
  queueNotify(index: number): void {
    this.#handler.queueNotify(index);
  }

  /** Stops the device and closes the backend (listener, every host socket). Idempotent. */
  close(): void {
    this.#active = undefined;
    this.#handler.cancel();
    this.backend.close();
  }

  #fail(a: Active, e: unknown): void {
    if (!(e instanceof VirtqueueError) && !(e instanceof GuestMemoryError)) throw e;
    a.broken = true;
    a.ctx.interrupt.needsReset(`virtio-vsock: ${e.message}`);
  }

  #usable(q: Queue): Active | undefined {
    const a = this.#active;
    return a === undefined || a.broken || this.#paused || !q.ready ? undefined : a;
  }

  /** Pops a chain; with EVENT_IDX, asks for a notification before giving up. */
  #pop(a: Active, q: Queue): DescriptorChain | undefined {
    const mem = a.ctx.mem;
    const c = q.popDescriptorChain(mem);
    if (c !== undefined || !q.eventIdx) return c;
    return q.enableNotification(mem) ? q.popDescriptorChain(mem) : undefined;
  }

  #signal(a: Active, q: Queue, index: number): void {
    if (q.needsNotification(a.ctx.mem)) a.ctx.interrupt.signalUsedQueue(index);
  }

  #rx(): void {
    const a = this.#active;
    if (a === undefined || this.#usable(a.rx) === undefined) return;
    const mem = a.ctx.mem;
    let used = false;
    try {
      let n = 0;
      while (this.backend.hasRx()) {
        if (n++ >= VSOCK_BATCH_PACKETS) {
          this.#handler.wakeRx(); // yield, then go on
          break;
        }
        const chain = this.#pop(a, a.rx);
        if (chain === undefined) break; // the rx queue's notification brings us back
        used = true;
        if (chain.writableLength < VSOCK_HEADER_SIZE) {
          this.metrics.rxChainTooSmall++;
          a.rx.addUsed(mem, chain.head, 0);
          continue;
        }
        const p = this.backend.recv(Math.min(chain.writableLength - VSOCK_HEADER_SIZE, VSOCK_MAX_PAYLOAD));
        if (p === undefined) {
          a.rx.addUsed(mem, chain.head, 0); // hasRx promised a packet; never leave the chain hanging
          break;
        }
        const out = new Uint8Array(VSOCK_HEADER_SIZE + p.payload.length);
        out.set(encodeHeader(p.header));
        out.set(p.payload, VSOCK_HEADER_SIZE);
        chain.writeFrom(mem, out);
        a.rx.addUsed(mem, chain.head, out.length);
        this.metrics.rxPackets++;
        this.metrics.rxBytes += p.payload.length;
      }
      if (used) this.#signal(a, a.rx, VSOCK_RX_QUEUE);
    } catch (e) {
      this.#fail(a, e);
    }
  }

  #tx(): void {
    const a = this.#active;
    if (a === undefined || this.#usable(a.tx) === undefined) return;
    const mem = a.ctx.mem;
    let used = false;
    try {
      let n = 0;
      let bytes = 0;
      for (;;) {
        if (n >= VSOCK_BATCH_PACKETS || bytes >= TX_BATCH_BYTES) {
          this.#handler.wakeTx();
          break;
        }
        if (this.backend.txBlocked()) {
          this.metrics.txPaused++; // the backend calls wakeTx when its backlog shrinks
          break;
        }
        const chain = this.#pop(a, a.tx);
        if (chain === undefined) break;
        n++;
        bytes += this.#txPacket(a, chain);
        a.tx.addUsed(mem, chain.head, 0);
        used = true;
        if (this.#active !== a) return;
      }
      if (used) this.#signal(a, a.tx, VSOCK_TX_QUEUE);
    } catch (e) {
      this.#fail(a, e);
    }
  }

  #check(h: VsockHeader, room: number): Malformed | undefined {
    if (h.srcCid !== this.cid || h.dstCid !== VSOCK_HOST_CID) return "cid";
    if (h.type !== VSOCK_TYPE_STREAM) return "type";
    if (h.op < VSOCK_OP_REQUEST || h.op > VSOCK_OP_CREDIT_REQUEST) return "op";
    if (h.len > VSOCK_MAX_PAYLOAD || h.len > room || (h.op !== VSOCK_OP_RW && h.len !== 0)) return "len";
    return undefined;
  }

  /** One tx chain: checked, then handed to the backend. Returns the payload bytes taken. */
  #txPacket(a: Active, chain: DescriptorChain): number {
    const mem = a.ctx.mem;
    this.metrics.txPackets++;
    if (chain.readableLength < VSOCK_HEADER_SIZE) {
      this.metrics.malformed.shortHeader++;
      this.#onViolation?.(`virtio-vsock: tx chain ${chain.head} has ${chain.readableLength} readable bytes, less than a header`);
      return 0;
    }
    const hb = new Uint8Array(VSOCK_HEADER_SIZE);
    chain.readInto(mem, hb);
    const h = decodeHeader(hb);
    const bad = this.#check(h, chain.readableLength - VSOCK_HEADER_SIZE);
    if (bad !== undefined) {
      this.metrics.malformed[bad]++;
      this.#onViolation?.(
        `virtio-vsock: malformed packet (${bad}): op ${h.op} type ${h.type} cid ${h.srcCid}->${h.dstCid} port ${h.srcPort}->${h.dstPort} len ${h.len}`,
      );
      this.backend.reject(h);
      return 0;
    }
    let payload = new Uint8Array(0);
    if (h.len > 0) {
      payload = new Uint8Array(h.len);
      chain.readInto(mem, payload, VSOCK_HEADER_SIZE);
    }
    this.metrics.txBytes += h.len;
    this.backend.send(h, payload);
    return h.len;
  }

  #event(): void {
    const a = this.#active;
    if (!this.#eventPending || a === undefined || this.#usable(a.ev) === undefined) return;
    const mem = a.ctx.mem;
    try {
      const chain = this.#pop(a, a.ev);
      if (chain === undefined) return; // the event queue's notification brings us back
      if (chain.writableLength < 4) {
        a.ev.addUsed(mem, chain.head, 0);
      } else {
        const e = new Uint8Array(4);
        new DataView(e.buffer).setUint32(0, VSOCK_EVENT_TRANSPORT_RESET, true);
        chain.writeFrom(mem, e);
        a.ev.addUsed(mem, chain.head, 4);
        this.#eventPending = false;
        this.metrics.eventsSent++;
      }
      this.#signal(a, a.ev, VSOCK_EVENT_QUEUE);
    } catch (e) {
      this.#fail(a, e);
    }
  }
}
