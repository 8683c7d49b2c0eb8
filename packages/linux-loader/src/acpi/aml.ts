import { LoaderError } from "../error.js";

// AML encoding, ACPI 6.5 chapter 20 ("ACPI Machine Language Specification")
// and chapter 6.4 (resource data types). Every function returns bytes.

/** Encoded AML bytes. */
export type Aml = Uint8Array;

function cat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.byteLength;
  }
  return out;
}

/**
 * PkgLength (20.2.4): the length of the package *including* the PkgLength
 * bytes themselves, in 1 to 4 bytes.
 *
 * @throws LoaderError `InvalidArgument` above 2^28 - 1 bytes.
 */
export function pkgLength(bodyLen: number): Uint8Array {
  for (let n = 1; n <= 4; n++) {
    const total = bodyLen + n;
    if (n === 1 && total < 0x40) return Uint8Array.of(total);
    if (n > 1 && total < 2 ** (4 + 8 * (n - 1))) {
      const b = new Uint8Array(n);
      b[0] = ((n - 1) << 6) | (total & 0xf);
      for (let i = 1; i < n; i++) b[i] = Math.floor(total / 2 ** (4 + 8 * (i - 1))) & 0xff;
      return b;
    }
  }
  throw new LoaderError("InvalidArgument", `AML package of ${bodyLen} bytes is too long`);
}

function nameSeg(seg: string): number[] {
  if (!/^[A-Z_][A-Z0-9_]{0,3}$/.test(seg)) {
    throw new LoaderError("InvalidArgument", `"${seg}" is not an AML name segment (1-4 of A-Z, 0-9, _; not starting with a digit)`);
  }
  return [...seg.padEnd(4, "_")].map((c) => c.charCodeAt(0));
}

/**
 * NameString (20.2.2): `"\\_SB_.COM1"`, `"_HID"`, `"^FOO"`.
 *
 * @throws LoaderError `InvalidArgument` for a malformed name.
 */
export function nameString(name: string): Uint8Array {
  const out: number[] = [];
  let rest = name;
  if (rest.startsWith("\\")) {
    out.push(0x5c);
    rest = rest.slice(1);
  } else {
    while (rest.startsWith("^")) {
      out.push(0x5e);
      rest = rest.slice(1);
    }
  }
  const segs = rest === "" ? [] : rest.split(".");
  if (segs.length === 0) out.push(0x00);
  else if (segs.length === 1) out.push(...nameSeg(segs[0]!));
  else if (segs.length === 2) out.push(0x2e, ...segs.flatMap(nameSeg));
  else if (segs.length < 256) out.push(0x2f, segs.length, ...segs.flatMap(nameSeg));
  else throw new LoaderError("InvalidArgument", `AML name ${name} has too many segments`);
  return Uint8Array.from(out);
}

/**
 * An integer constant with the shortest encoding (ZeroOp, OneOp, BytePrefix…QWordPrefix).
 *
 * @throws LoaderError `InvalidArgument` for a negative or non-integer value or one above 2^64 - 1.
 */
export function integer(v: number | bigint): Aml {
  // Checked before BigInt(), which throws a RangeError for 1.5, NaN or Infinity.
  if (typeof v === "number" && !Number.isSafeInteger(v)) throw new LoaderError("InvalidArgument", `AML integer ${v} is not a safe integer`);
  const n = BigInt(v);
  if (n < 0n || n >= 1n << 64n) throw new LoaderError("InvalidArgument", `AML integer ${v} is out of range`);
  if (n === 0n) return Uint8Array.of(0x00);
  if (n === 1n) return Uint8Array.of(0x01);
  const [prefix, size] = n <= 0xffn ? [0x0a, 1] : n <= 0xffffn ? [0x0b, 2] : n <= 0xffff_ffffn ? [0x0c, 4] : [0x0e, 8];
  const b = new Uint8Array(1 + size);
  b[0] = prefix;
  for (let i = 0; i < size; i++) b[1 + i] = Number((n >> BigInt(8 * i)) & 0xffn);
  return b;
}

/**
 * A String constant (StringPrefix 0x0D, ASCII, NUL).
 *
 * @throws LoaderError `InvalidArgument` for non-ASCII or NUL characters.
 */
export function string(s: string): Aml {
  if (!/^[\x01-\x7f]*$/.test(s)) throw new LoaderError("InvalidArgument", `AML string "${s}" must be ASCII without NUL`);
  return Uint8Array.from([0x0d, ...[...s].map((c) => c.charCodeAt(0)), 0x00]);
}

/**
 * The 32-bit compressed EISA ID of a PNP ID such as `"PNP0501"` (the value
 * the ASL `EisaId()` macro produces), as an AML integer.
 *
 * @throws LoaderError `InvalidArgument` unless the ID is three letters and four hex digits.
 */
export function eisaId(id: string): Aml {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new LoaderError("InvalidArgument", `"${id}" is not an EISA ID (AAA####)`);
  const c = (i: number): number => id.charCodeAt(i) - 0x40;
  const vendor = (c(0) << 10) | (c(1) << 5) | c(2);
  const product = parseInt(id.slice(3), 16);
  // Stored big-endian in the DWORD: vendor (2 bytes, BE), product (2 bytes, BE).
  const v = ((vendor >> 8) & 0xff) | ((vendor & 0xff) << 8) | (((product >> 8) & 0xff) << 16) | ((product & 0xff) << 24);
  return integer(v >>> 0);
}

/** DefName: `Name(name, value)`. @throws LoaderError `InvalidArgument` for a bad name. */
export function name(n: string, value: Aml): Aml {
  return cat([Uint8Array.of(0x08), nameString(n), value]);
}

/** DefScope: `Scope(name) { body }`. @throws LoaderError `InvalidArgument` for a bad name. */
export function scope(n: string, body: readonly Aml[]): Aml {
  const inner = cat([nameString(n), ...body]);
  return cat([Uint8Array.of(0x10), pkgLength(inner.byteLength), inner]);
}

/** DefDevice: `Device(name) { body }`. @throws LoaderError `InvalidArgument` for a bad name. */
export function device(n: string, body: readonly Aml[]): Aml {
  const inner = cat([nameString(n), ...body]);
  return cat([Uint8Array.of(0x5b, 0x82), pkgLength(inner.byteLength), inner]);
}

/**
 * DefMethod: `Method(name, argCount, NotSerialized) { body }`.
 *
 * @throws LoaderError `InvalidArgument` for a bad name or more than 7 arguments.
 */
export function method(n: string, argCount: number, body: readonly Aml[]): Aml {
  if (!Number.isInteger(argCount) || argCount < 0 || argCount > 7) throw new LoaderError("InvalidArgument", `method argument count ${argCount} must be 0..7`);
  const inner = cat([nameString(n), Uint8Array.of(argCount), ...body]);
  return cat([Uint8Array.of(0x14), pkgLength(inner.byteLength), inner]);
}

/** DefReturn: `Return(value)`. */
export function returnValue(value: Aml): Aml {
  return cat([Uint8Array.of(0xa4), value]);
}

/** DefBuffer: `Buffer(n) { bytes }`. */
export function buffer(bytes: Uint8Array): Aml {
  const inner = cat([integer(bytes.byteLength), bytes]);
  return cat([Uint8Array.of(0x11), pkgLength(inner.byteLength), inner]);
}

/** DefPackage: `Package(n) { elements }` (at most 255 elements). @throws LoaderError `InvalidArgument` above 255. */
export function pkg(elements: readonly Aml[]): Aml {
  if (elements.length > 255) throw new LoaderError("InvalidArgument", "an AML Package holds at most 255 elements");
  const inner = cat([Uint8Array.of(elements.length), ...elements]);
  return cat([Uint8Array.of(0x12), pkgLength(inner.byteLength), inner]);
}

// ---- Resource descriptors (ACPI 6.5, 6.4) ----

/** A resource descriptor's bytes (goes inside {@link resourceTemplate}). */
export type Resource = Uint8Array;

/**
 * I/O port descriptor (6.4.2.5), 16-bit decode: `IO(Decode16, min, max, align, len)`.
 *
 * @throws LoaderError `InvalidArgument` for values out of range.
 */
export function io(min: number, max: number, align: number, length: number): Resource {
  for (const [v, lim] of [[min, 0xffff], [max, 0xffff], [align, 0xff], [length, 0xff]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > lim) throw new LoaderError("InvalidArgument", `IO descriptor value ${v} is out of range`);
  }
  return Uint8Array.of(0x47, 0x01, min & 0xff, min >> 8, max & 0xff, max >> 8, align, length);
}

/**
 * IRQ descriptor without flags (6.4.2.1): `IRQNoFlags() { irqs }` (ISA IRQs 0..15).
 *
 * @throws LoaderError `InvalidArgument` for an IRQ above 15.
 */
export function irqNoFlags(irqs: readonly number[]): Resource {
  let mask = 0;
  for (const i of irqs) {
    if (!Number.isInteger(i) || i < 0 || i > 15) throw new LoaderError("InvalidArgument", `ISA IRQ ${i} must be 0..15`);
    mask |= 1 << i;
  }
  return Uint8Array.of(0x22, mask & 0xff, mask >> 8);
}

/**
 * 32-bit fixed memory range descriptor (6.4.3.4): `Memory32Fixed(ReadWrite|ReadOnly, base, length)`.
 *
 * @throws LoaderError `InvalidArgument` for a range that does not fit 32 bits.
 */
export function memory32Fixed(base: number, length: number, writable = true): Resource {
  if (!Number.isInteger(base) || !Number.isInteger(length) || base < 0 || length < 0 || base + length > 2 ** 32) {
    throw new LoaderError("InvalidArgument", `Memory32Fixed ${base}+${length} does not fit 32 bits`);
  }
  const b = new Uint8Array(12);
  const v = new DataView(b.buffer);
  b[0] = 0x86;
  v.setUint16(1, 9, true);
  b[3] = writable ? 1 : 0;
  v.setUint32(4, base, true);
  v.setUint32(8, length, true);
  return b;
}

/** Flags of an Extended Interrupt descriptor. */
export interface InterruptFlags {
  /** Edge triggered (default) or level triggered. */
  readonly edge?: boolean;
  /** Active low (default false: active high). */
  readonly activeLow?: boolean;
  /** Shared (default false: exclusive). */
  readonly shared?: boolean;
}

/**
 * Extended interrupt descriptor (6.4.3.6): `Interrupt(ResourceConsumer, Edge|Level, ActiveHigh|ActiveLow, Exclusive|Shared) { gsis }`.
 *
 * @throws LoaderError `InvalidArgument` without interrupts, with more than 255, or a GSI above 2^32 - 1.
 */
export function extendedInterrupt(gsis: readonly number[], flags: InterruptFlags = {}): Resource {
  if (gsis.length === 0 || gsis.length > 255) throw new LoaderError("InvalidArgument", "an Interrupt descriptor needs 1..255 interrupts");
  const b = new Uint8Array(5 + 4 * gsis.length);
  const v = new DataView(b.buffer);
  b[0] = 0x89;
  v.setUint16(1, 2 + 4 * gsis.length, true);
  b[3] = 0x01 | ((flags.edge ?? true) ? 0x02 : 0) | (flags.activeLow ? 0x04 : 0) | (flags.shared ? 0x08 : 0);
  b[4] = gsis.length;
  gsis.forEach((g, i) => {
    if (!Number.isInteger(g) || g < 0 || g > 0xffff_ffff) throw new LoaderError("InvalidArgument", `GSI ${g} is out of range`);
    v.setUint32(5 + 4 * i, g, true);
  });
  return b;
}

/** `ResourceTemplate() { … }`: a Buffer of descriptors closed by an End Tag (checksum 0). */
export function resourceTemplate(resources: readonly Resource[]): Aml {
  return buffer(cat([...resources, Uint8Array.of(0x79, 0x00)]));
}

/** Concatenates AML fragments (a TermList). */
export function termList(items: readonly Aml[]): Aml {
  return cat(items);
}
