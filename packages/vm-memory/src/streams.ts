import { Readable, Writable } from "node:stream";
import type { GuestAddress } from "./address.js";
import { GuestMemoryError } from "./error.js";
import type { GuestMemory } from "./guest-memory.js";
import { sliceRange } from "./slices.js";

/**
 * A Writable that writes what it is given into guest memory, sequentially from
 * `addr`, within a window of `len` bytes. The window is checked when the
 * stream is made. A chunk that would run past the window is refused whole (the
 * stream errors with `"OutOfBounds"`, nothing of that chunk is written); each
 * chunk is copied once, straight from the chunk into guest memory.
 */
export class GuestMemoryWritable extends Writable {
  readonly #mem: GuestMemory;
  readonly #addr: number;
  readonly #len: number;
  #written = 0;

  /**
   * @throws {@link GuestMemoryError} range errors if `[addr, addr + len)` is not backed.
   */
  constructor(mem: GuestMemory, addr: GuestAddress, len: number) {
    super({ decodeStrings: true });
    sliceRange(mem, addr, len); // checks the window, throws on failure
    this.#mem = mem;
    this.#addr = addr;
    this.#len = len;
  }

  /** Bytes written into guest memory so far. */
  get bytesWritten(): number {
    return this.#written;
  }

  /** @internal */
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (chunk.length > this.#len - this.#written) {
      cb(
        new GuestMemoryError(
          "OutOfBounds",
          `stream chunk of ${chunk.length} bytes overflows the guest window (${this.#len - this.#written} left)`,
          { addr: this.#addr + this.#written, len: chunk.length },
        ),
      );
      return;
    }
    try {
      this.#mem.write(this.#addr + this.#written, chunk);
    } catch (e) {
      cb(e as Error);
      return;
    }
    this.#written += chunk.length;
    cb();
  }
}

/** Options of {@link GuestMemoryReadable}. */
export interface GuestMemoryReadableOptions {
  /** Largest chunk pushed, in bytes (default 64 KiB). */
  readonly chunkSize?: number;
  /**
   * Push copies instead of views over guest memory (default false). Use it when
   * the consumer keeps chunks after the guest may reuse the memory.
   */
  readonly copy?: boolean;
}

/**
 * A Readable that reads `[addr, addr + len)` out of guest memory, in chunks
 * of at most `chunkSize` that never cross a region boundary.
 *
 * Safety: by default the chunks are Buffers viewing guest memory, not copies:
 * the guest can change them until the consumer has used them. Pass
 * `copy: true` if that matters.
 *
 * Consume it with `pipe`/`pipeline` or `'data'` events to keep it zero-copy:
 * `read()` without a size (and so `for await`) may concatenate buffered chunks.
 */
export class GuestMemoryReadable extends Readable {
  readonly #views: Uint8Array[];
  readonly #chunk: number;
  readonly #copy: boolean;
  #view = 0;
  #off = 0;

  /**
   * @throws {@link GuestMemoryError} range errors if `[addr, addr + len)` is not
   *   backed; `"InvalidArgument"` for a bad chunk size.
   */
  constructor(mem: GuestMemory, addr: GuestAddress, len: number, opts: GuestMemoryReadableOptions = {}) {
    super();
    const chunk = opts.chunkSize ?? 65536;
    if (!(Number.isSafeInteger(chunk) && chunk > 0)) {
      throw new GuestMemoryError("InvalidArgument", `chunk size ${chunk} is not a positive integer`);
    }
    this.#views = sliceRange(mem, addr, len);
    this.#chunk = chunk;
    this.#copy = opts.copy ?? false;
  }

  /** @internal */
  override _read(): void {
    // One chunk per call, so a consumer reading on demand gets views, not a concatenation.
    const v = this.#views[this.#view];
    if (v === undefined) {
      this.push(null);
      return;
    }
    const n = Math.min(this.#chunk, v.length - this.#off);
    const part = v.subarray(this.#off, this.#off + n);
    this.#off += n;
    if (this.#off === v.length) {
      this.#view++;
      this.#off = 0;
    }
    this.push(this.#copy ? Buffer.from(part) : Buffer.from(part.buffer as ArrayBuffer, part.byteOffset, part.byteLength));
  }
}
