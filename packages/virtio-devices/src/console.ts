import type { Readable, Writable } from "node:stream";
import { GuestMemoryError, type GuestMemory } from "@ts-vmm/vm-memory";
import { VirtqueueError, type DescriptorChain, type Queue } from "@ts-vmm/virtio-queue";
import { VIRTIO_ID_CONSOLE } from "./constants.js";
import type { ActivateContext, DeviceState, VirtioDevice } from "./device.js";
import { VirtioDeviceError } from "./errors.js";

/** Host input buffered for the guest before the input stream is paused. */
export const CONSOLE_RX_BUFFER_BYTES = 64 * 1024;
/** Most bytes taken from one transmit chain (the rest of a larger chain is dropped and reported). */
export const CONSOLE_TX_MAX_CHAIN_BYTES = 1024 * 1024;

/** Where port 0 goes: any Node streams (a connected Unix socket, stdin/stdout, a file). */
export interface ConsoleStreams {
  /** Bytes for the guest (its receiveq). */
  readonly input?: Readable;
  /** Bytes from the guest (its transmitq). */
  readonly output?: Writable;
  /** Called when the device drops or refuses something (for logs). */
  readonly onViolation?: (reason: string) => void;
}

interface Active {
  readonly ctx: ActivateContext;
  readonly rx: Queue;
  readonly tx: Queue;
  broken: boolean;
}

/**
 * virtio-console (§5.3) with port 0 only (no MULTIPORT, no resize): queue 0
 * (receiveq) carries host input into the guest's buffers, queue 1 (transmitq)
 * guest output to the host stream. Host input is buffered up to
 * {@link CONSOLE_RX_BUFFER_BYTES}; beyond it the input stream is paused until
 * the guest posts buffers. Guest output honours the output stream's
 * back-pressure: transmit chains wait in the ring while the stream is full.
 */
export class VirtioConsole implements VirtioDevice {
  /** {@inheritDoc VirtioDevice.deviceType} */
  readonly deviceType = VIRTIO_ID_CONSOLE;
  /** {@inheritDoc VirtioDevice.queueMaxSizes} */
  readonly queueMaxSizes: readonly number[] = [64, 64];
  /** {@inheritDoc VirtioDevice.deviceFeatures} */
  readonly deviceFeatures = 0n;
  /** Bytes of config space: cols, rows, max_nr_ports, emerg_wr. */
  readonly configSize = 12;
  readonly #streams: ConsoleStreams;
  readonly #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #paused = false;
  #waitingDrain = false;
  #active: Active | undefined;
  /**
   * Bytes moved: guest to host, host to guest; `txDropped`: transmit bytes beyond a chain's
   * limit; `txChains`/`rxChains`: chains completed on each queue.
   */
  readonly stats = { txBytes: 0, rxBytes: 0, txDropped: 0, txChains: 0, rxChains: 0 };

  /** @param streams - the host side of port 0. */
  constructor(streams: ConsoleStreams = {}) {
    this.#streams = streams;
    streams.input?.on("data", (chunk: Buffer | string) => this.#onInput(typeof chunk === "string" ? Buffer.from(chunk) : chunk));
  }

  #onInput(chunk: Uint8Array): void {
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    if (this.#pendingBytes >= CONSOLE_RX_BUFFER_BYTES && !this.#paused) {
      this.#paused = true;
      this.#streams.input?.pause();
    }
    this.#deliver();
  }

  /** {@inheritDoc VirtioDevice.readConfig} */
  readConfig(offset: number, data: Uint8Array): void {
    data.fill(0);
    const cfg = new Uint8Array(12);
    new DataView(cfg.buffer).setUint32(4, 1, true); // max_nr_ports = 1 (meaningful only with MULTIPORT)
    if (offset >= 0 && offset < 12) data.set(cfg.subarray(offset, Math.min(12, offset + data.length)));
  }
  /** Config writes are ignored (emerg_wr is not offered). */
  writeConfig(_offset: number, _data: Uint8Array): void {}

  /** {@inheritDoc VirtioDevice.activate} */
  activate(ctx: ActivateContext): void {
    const [rx, tx] = ctx.queues;
    if (rx === undefined || tx === undefined) return;
    this.#active = { ctx, rx, tx, broken: false };
    this.#deliver();
  }
  /** Stops the data path; buffered host input is kept for the next activation. */
  reset(): void {
    this.#active = undefined;
  }
  /** {@inheritDoc VirtioDevice.busy} */
  busy(): boolean {
    return false;
  }
  /** The device state (buffered host input is not saved). */
  state(): DeviceState {
    return { deviceType: VIRTIO_ID_CONSOLE };
  }
  /** {@inheritDoc VirtioDevice.restoreState} */
  restoreState(state: DeviceState): void {
    if (state.deviceType !== VIRTIO_ID_CONSOLE) throw new VirtioDeviceError("InvalidState", "not a virtio-console state");
  }

  /** {@inheritDoc VirtioDevice.queueNotify} */
  queueNotify(index: number): void {
    if (index === 0) this.#deliver();
    else if (index === 1) this.#transmit();
  }

  #fail(a: Active, e: unknown): void {
    if (!(e instanceof VirtqueueError) && !(e instanceof GuestMemoryError)) throw e;
    a.broken = true;
    a.ctx.interrupt.needsReset(`virtio-console: ${e.message}`);
  }

  #deliver(): void {
    const a = this.#active;
    if (a === undefined || a.broken || !a.rx.ready || this.#pendingBytes === 0) return;
    const mem = a.ctx.mem;
    let used = false;
    try {
      while (this.#pendingBytes > 0) {
        const chain = a.rx.popDescriptorChain(mem);
        if (chain === undefined) break;
        const n = Math.min(chain.writableLength, this.#pendingBytes);
        const bytes = this.#take(n);
        chain.writeFrom(mem, bytes);
        a.rx.addUsed(mem, chain.head, n);
        this.stats.rxBytes += n;
        this.stats.rxChains++;
        used = true;
      }
      if (used && a.rx.needsNotification(mem)) a.ctx.interrupt.signalUsedQueue(0);
    } catch (e) {
      this.#fail(a, e);
    }
    if (this.#paused && this.#pendingBytes < CONSOLE_RX_BUFFER_BYTES / 2) {
      this.#paused = false;
      this.#streams.input?.resume();
    }
  }

  /** Removes the first `n` pending bytes (n ≤ pending). */
  #take(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const c = this.#pending[0]!;
      const k = Math.min(c.length, n - at);
      out.set(c.subarray(0, k), at);
      at += k;
      if (k === c.length) this.#pending.shift();
      else this.#pending[0] = c.subarray(k);
    }
    this.#pendingBytes -= n;
    return out;
  }

  #transmit(): void {
    const a = this.#active;
    if (a === undefined || a.broken || !a.tx.ready || this.#waitingDrain) return;
    const mem: GuestMemory = a.ctx.mem;
    let used = false;
    try {
      let chain: DescriptorChain | undefined;
      // At most 64 chains or 1 MiB per turn of the event loop.
      let budget = 64;
      let taken = 0;
      while (budget-- > 0 && taken < CONSOLE_TX_MAX_CHAIN_BYTES && (chain = a.tx.popDescriptorChain(mem)) !== undefined) {
        const n = Math.min(chain.readableLength, CONSOLE_TX_MAX_CHAIN_BYTES);
        if (n < chain.readableLength) {
          this.stats.txDropped += chain.readableLength - n;
          this.#streams.onViolation?.(`virtio-console: transmit chain of ${chain.readableLength} bytes, kept ${n}`);
        }
        const bytes = new Uint8Array(n);
        chain.readInto(mem, bytes);
        taken += n;
        a.tx.addUsed(mem, chain.head, 0);
        used = true;
        this.stats.txBytes += n;
        this.stats.txChains++;
        const out = this.#streams.output;
        if (out !== undefined && !out.write(bytes)) {
          this.#waitingDrain = true;
          out.once("drain", () => {
            this.#waitingDrain = false;
            this.#transmit();
          });
          break;
        }
      }
      if ((budget < 0 || taken >= CONSOLE_TX_MAX_CHAIN_BYTES) && !this.#waitingDrain) setImmediate(() => this.#transmit()); // a guest refilling as fast as we go: yield
      if (used && a.tx.needsNotification(mem)) a.ctx.interrupt.signalUsedQueue(1);
    } catch (e) {
      this.#fail(a, e);
    }
  }
}
