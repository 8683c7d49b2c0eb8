import { type GuestAddress, toGuestAddress } from "./address.js";
import { GuestMemoryError } from "./error.js";
import type { GuestMemory } from "./guest-memory.js";

/**
 * A scalar field type in a fixed little-endian layout.
 * - `"u8"`, `"u16"`, `"u32"`: a number.
 * - `"u64"`: a bigint.
 * - `"addr"`: a u64 that the guest wrote and that must be a guest address or
 *   length: read as two u32 halves and returned as a number, rejected with
 *   `"AddressTooLarge"` if ≥ 2^52 (never rounded).
 */
export type ScalarType = "u8" | "u16" | "u32" | "u64" | "addr";

/** A scalar field: its type and byte offset in the layout. */
export interface ScalarField {
  /** The field's type. */
  readonly type: ScalarType;
  /** Byte offset in the structure. */
  readonly offset: number;
}

/** A fixed-length byte array field (read as a copy, written from a Uint8Array). */
export interface BytesField {
  /** Marks a byte array. */
  readonly type: "bytes";
  /** Byte offset in the structure. */
  readonly offset: number;
  /** Length in bytes (> 0). */
  readonly length: number;
}

/** One field of a {@link Layout}. */
export type FieldSpec = ScalarField | BytesField;

/** The JS type of a field's value. */
export type FieldValue<F extends FieldSpec> = F extends BytesField
  ? Uint8Array
  : F["type"] extends "u64"
    ? bigint
    : number;

/**
 * A fixed, little-endian structure layout (a C struct with explicit offsets),
 * made with {@link defineLayout}.
 */
export interface Layout<F extends Readonly<Record<string, FieldSpec>>> {
  /** A name for messages. */
  readonly name: string;
  /** Total size in bytes (including padding). */
  readonly size: number;
  /** The fields by name. */
  readonly fields: F;
}

/** The object `readObj` returns and `writeObj` takes for a layout. */
export type LayoutValue<L extends Layout<Readonly<Record<string, FieldSpec>>>> = {
  -readonly [K in keyof L["fields"]]: FieldValue<L["fields"][K]>;
};

const WIDTH: Record<ScalarType, number> = { u8: 1, u16: 2, u32: 4, u64: 8, addr: 8 };

function width(f: FieldSpec): number {
  return f.type === "bytes" ? f.length : WIDTH[f.type];
}

/**
 * Describes a fixed layout, checking that every field lies inside `size` and
 * that no two fields overlap.
 *
 * @example
 * // struct virtq_desc (virtio 1.2, 2.7.5)
 * const VirtqDesc = defineLayout("virtq_desc", 16, {
 *   addr: { type: "addr", offset: 0 },
 *   len: { type: "u32", offset: 8 },
 *   flags: { type: "u16", offset: 12 },
 *   next: { type: "u16", offset: 14 },
 * });
 * @throws {@link GuestMemoryError} `"InvalidArgument"` for a bad size, a field
 *   outside the layout, an unknown type, or overlapping fields.
 */
export function defineLayout<const F extends Readonly<Record<string, FieldSpec>>>(
  name: string,
  size: number,
  fields: F,
): Layout<F> {
  if (!(Number.isSafeInteger(size) && size > 0)) {
    throw new GuestMemoryError("InvalidArgument", `layout ${name}: size ${size} is not a positive integer`);
  }
  const spans: [number, number, string][] = [];
  for (const [key, f] of Object.entries(fields)) {
    if (f.type !== "bytes" && !(f.type in WIDTH)) {
      throw new GuestMemoryError("InvalidArgument", `layout ${name}.${key}: unknown type ${String(f.type)}`);
    }
    const w = width(f);
    if (!(Number.isSafeInteger(f.offset) && f.offset >= 0 && Number.isSafeInteger(w) && w > 0 && f.offset + w <= size)) {
      throw new GuestMemoryError("InvalidArgument", `layout ${name}.${key}: [${f.offset}, +${w}) is not inside ${size} bytes`);
    }
    spans.push([f.offset, f.offset + w, key]);
  }
  spans.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < spans.length; i++) {
    const [s, , k] = spans[i] as [number, number, string];
    const [, e, pk] = spans[i - 1] as [number, number, string];
    if (s < e) throw new GuestMemoryError("InvalidArgument", `layout ${name}: fields ${pk} and ${k} overlap`);
  }
  return Object.freeze({ name, size, fields: Object.freeze(fields) });
}

/**
 * Reads a structure from guest memory. The whole structure is copied out once
 * (so each field is read exactly once, consistent with itself), then decoded.
 *
 * @throws {@link GuestMemoryError} range errors if `[addr, addr + size)` is not
 *   backed; `"AddressTooLarge"` if an `"addr"` field is ≥ 2^52.
 */
export function readObj<L extends Layout<Readonly<Record<string, FieldSpec>>>>(
  mem: GuestMemory,
  addr: GuestAddress,
  layout: L,
): LayoutValue<L> {
  const buf = new Uint8Array(layout.size);
  mem.read(addr, buf);
  const dv = new DataView(buf.buffer);
  const out: Record<string, number | bigint | Uint8Array> = {};
  for (const [key, f] of Object.entries(layout.fields)) {
    const o = f.offset;
    switch (f.type) {
      case "u8":
        out[key] = dv.getUint8(o);
        break;
      case "u16":
        out[key] = dv.getUint16(o, true);
        break;
      case "u32":
        out[key] = dv.getUint32(o, true);
        break;
      case "u64":
        out[key] = dv.getBigUint64(o, true);
        break;
      case "addr": {
        const lo = dv.getUint32(o, true);
        const hi = dv.getUint32(o + 4, true);
        try {
          out[key] = toGuestAddress(lo, hi);
        } catch (e) {
          throw new GuestMemoryError("AddressTooLarge", `${layout.name}.${key} at 0x${(addr + o).toString(16)}: ${(e as Error).message}`, {
            addr: addr + o,
            len: 8,
          });
        }
        break;
      }
      case "bytes":
        out[key] = buf.slice(o, o + f.length);
        break;
    }
  }
  return out as LayoutValue<L>;
}

/**
 * Encodes a structure (padding as zeros) and writes it to guest memory in one
 * all-or-nothing copy. Every field is checked before anything is written.
 *
 * @throws {@link GuestMemoryError} `"InvalidArgument"` if a field is missing or
 *   its value is out of its type's range (or an `"addr"` ≥ 2^52, or a `"bytes"`
 *   value of the wrong length); range errors if the target is not backed.
 */
export function writeObj<L extends Layout<Readonly<Record<string, FieldSpec>>>>(
  mem: GuestMemory,
  addr: GuestAddress,
  layout: L,
  value: LayoutValue<L>,
): void {
  const buf = new Uint8Array(layout.size);
  const dv = new DataView(buf.buffer);
  const v = value as Record<string, unknown>;
  for (const [key, f] of Object.entries(layout.fields)) {
    const x = v[key];
    const bad = (): GuestMemoryError =>
      new GuestMemoryError("InvalidArgument", `${layout.name}.${key}: ${String(x)} is not a valid ${f.type}`);
    const o = f.offset;
    switch (f.type) {
      case "u8":
        if (typeof x !== "number" || (x & 0xff) !== x) throw bad();
        dv.setUint8(o, x);
        break;
      case "u16":
        if (typeof x !== "number" || (x & 0xffff) !== x) throw bad();
        dv.setUint16(o, x, true);
        break;
      case "u32":
        if (typeof x !== "number" || x >>> 0 !== x) throw bad();
        dv.setUint32(o, x, true);
        break;
      case "u64":
        if (typeof x !== "bigint" || x < 0n || x > 0xffff_ffff_ffff_ffffn) throw bad();
        dv.setBigUint64(o, x, true);
        break;
      case "addr":
        if (typeof x !== "number" || !(x >= 0 && x < 2 ** 52 && Number.isInteger(x))) throw bad();
        dv.setUint32(o, x % 2 ** 32, true);
        dv.setUint32(o + 4, Math.floor(x / 2 ** 32), true);
        break;
      case "bytes":
        if (!(x instanceof Uint8Array) || x.length !== f.length) throw bad();
        buf.set(x, o);
        break;
    }
  }
  mem.write(addr, buf);
}
