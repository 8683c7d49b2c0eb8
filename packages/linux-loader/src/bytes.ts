import { LoaderError } from "./error.js";

/** Largest guest physical address + 1 that the loader accepts (2^52). */
export const MAX_GUEST_ADDRESS = 2 ** 52;

/**
 * Little-endian reads from an untrusted file image. Every read is bounds
 * checked and throws `LoaderError("Truncated")` with the name of what was read.
 */
export class Reader {
  readonly bytes: Uint8Array;
  readonly #view: DataView;
  readonly #what: string;

  constructor(bytes: Uint8Array, what: string) {
    this.bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#what = what;
  }

  get length(): number {
    return this.bytes.byteLength;
  }

  need(offset: number, len: number, field: string): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || len < 0 || offset + len > this.bytes.byteLength) {
      throw new LoaderError(
        "Truncated",
        `${this.#what} is truncated: ${field} needs bytes ${offset}..${offset + len} but the file has ${this.bytes.byteLength}`,
      );
    }
  }

  u8(o: number, field: string): number {
    this.need(o, 1, field);
    return this.#view.getUint8(o);
  }
  u16(o: number, field: string): number {
    this.need(o, 2, field);
    return this.#view.getUint16(o, true);
  }
  u32(o: number, field: string): number {
    this.need(o, 4, field);
    return this.#view.getUint32(o, true);
  }
  u64(o: number, field: string): bigint {
    this.need(o, 8, field);
    return this.#view.getBigUint64(o, true);
  }
}

/** Little-endian writes into a fresh zero-filled buffer (tables the loader builds). */
export class Writer {
  readonly bytes: Uint8Array;
  readonly #view: DataView;

  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.#view = new DataView(this.bytes.buffer);
  }

  u8(o: number, v: number): this {
    this.#view.setUint8(o, v);
    return this;
  }
  u16(o: number, v: number): this {
    this.#view.setUint16(o, v, true);
    return this;
  }
  u32(o: number, v: number): this {
    this.#view.setUint32(o, v >>> 0, true);
    return this;
  }
  u64(o: number, v: number | bigint): this {
    this.#view.setBigUint64(o, BigInt(v), true);
    return this;
  }
  ascii(o: number, s: string): this {
    for (let i = 0; i < s.length; i++) this.bytes[o + i] = s.charCodeAt(i) & 0xff;
    return this;
  }
  set(o: number, b: Uint8Array): this {
    this.bytes.set(b, o);
    return this;
  }
}

/** Sum of bytes modulo 256. */
export function byteSum(b: Uint8Array, start = 0, end = b.length): number {
  let s = 0;
  for (let i = start; i < end; i++) s = (s + (b[i] ?? 0)) & 0xff;
  return s;
}

/** Sets `b[at]` so that bytes `start..end` sum to zero modulo 256 (ACPI and MP table checksums). */
export function fixChecksum(b: Uint8Array, at: number, start = 0, end = b.length): void {
  b[at] = 0;
  b[at] = (256 - byteSum(b, start, end)) & 0xff;
}

/** `0x…` for messages. */
export function hex(v: number | bigint): string {
  return `0x${v.toString(16)}`;
}
