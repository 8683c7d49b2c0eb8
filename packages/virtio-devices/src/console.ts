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

/** Most buffered host input a saved state may carry (restore refuses more). */
export const CONSOLE_MAX_SAVED_INPUT_BYTES = 4 * CONSOLE_RX_BUFFER_BYTES;

/** virtio-console's saved state (plain JSON; the queues are saved by the transport). */
export interface VirtioConsoleState extends DeviceState {
  /** Always 3. */
  readonly deviceType: 3;
  /**
   * Host input read from the stream and not yet in a guest buffer, base64
   * (at most {@link CONSOLE_MAX_SAVED_INPUT_BYTES} bytes): a restore delivers
   * it before anything the new stream brings.
   */
  readonly pendingInput: string;
  /** The byte and chain counters ({@link VirtioConsole.stats}). */
  readonly stats: VirtioConsole["stats"];
}

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
  /** The input stream is paused because the buffer is full. */
  #paused = false;
  /** Between {@link VirtioConsole.pause} and {@link VirtioConsole.resume}. */
  #suspended = false;
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
    // While suspended the stream stays paused however the buffer drains (#deliver does not run).
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
  /**
   * Stops both directions: the input stream is paused (what the host sends
   * waits in the socket or pipe; a chunk already read joins the buffer),
   * nothing is delivered into receive buffers and no transmit chain is taken.
   */
  pause(): void {
    if (this.#suspended) return;
    this.#suspended = true;
    this.#streams.input?.pause();
  }

  /** Reads the input stream again (unless its buffer is full), delivers buffered input and takes waiting transmit chains. */
  resume(): void {
    if (!this.#suspended) return;
    this.#suspended = false;
    if (!this.#paused) this.#streams.input?.resume();
    this.#deliver();
    this.#transmit();
  }

  /** Whether the device is paused ({@link VirtioConsole.pause}). */
  get paused(): boolean {
    return this.#suspended;
  }

  /** Host input buffered for the guest, in bytes. */
  get pendingInputBytes(): number {
    return this.#pendingBytes;
  }

  /** The device state: buffered host input and the counters. */
  state(): VirtioConsoleState {
    const pending = Buffer.concat(this.#pending);
    return { deviceType: VIRTIO_ID_CONSOLE, pendingInput: pending.toString("base64"), stats: { ...this.stats } };
  }

  /**
   * Loads {@link VirtioConsole.state} output: the buffered input goes before
   * anything already buffered from this device's stream.
   * @throws {@link VirtioDeviceError} `"InvalidState"` for another device's state or a malformed field.
   */
  restoreState(state: DeviceState): void {
    const bad = (what: string): never => {
      throw new VirtioDeviceError("InvalidState", `virtio-console state: ${what}`);
    };
    const s = state as Partial<VirtioConsoleState>;
    if (s.deviceType !== VIRTIO_ID_CONSOLE) bad("not a virtio-console state");
    const p = s.pendingInput;
    if (typeof p !== "string" || p.length > Math.ceil(CONSOLE_MAX_SAVED_INPUT_BYTES / 3) * 4 || !/^[A-Za-z0-9+/]*={0,2}$/.test(p)) {
      bad(`pendingInput is not base64 of at most ${CONSOLE_MAX_SAVED_INPUT_BYTES} bytes`);
    }
    const st = s.stats as Record<string, unknown> | undefined;
    if (typeof st !== "object" || st === null) bad("stats missing");
    const stats = { ...this.stats };
    for (const k of Object.keys(stats) as (keyof VirtioConsole["stats"])[]) {
      const v = st![k];
      if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) bad(`stats.${k} is not a count`);
      stats[k] = v as number;
    }
    const bytes = new Uint8Array(Buffer.from(p!, "base64"));
    if (bytes.length > 0) {
      this.#pending.unshift(bytes);
      this.#pendingBytes += bytes.length;
    }
    Object.assign(this.stats, stats);
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
    if (a === undefined || a.broken || this.#suspended || !a.rx.ready || this.#pendingBytes === 0) return;
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
      if (!this.#suspended) this.#streams.input?.resume();
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
    if (a === undefined || a.broken || this.#suspended || !a.tx.ready || this.#waitingDrain) return;
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
