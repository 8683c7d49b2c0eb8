// KVM's binary statistics file (KVM_GET_STATS_FD), as laid out in
// include/uapi/linux/kvm.h:
//
//   struct kvm_stats_header {            // at file offset 0, 24 bytes
//     u32 flags; u32 name_size; u32 num_desc; u32 id_offset; u32 desc_offset; u32 data_offset;
//   };
//   struct kvm_stats_desc {              // num_desc of them at desc_offset, each 16 + name_size bytes
//     u32 flags; s16 exponent; u16 size; u32 offset; u32 bucket_size; char name[name_size];
//   };
//
// The id string (name_size bytes) sits at id_offset; the data block at
// data_offset holds `size` u64s per descriptor, at `data_offset + offset`.
// Every offset and count here comes from the kernel and is checked before use.
import { KvmError } from "../errors.js";

/** Bytes of struct kvm_stats_header. */
export const STATS_HEADER_BYTES = 24;
/** Bytes of struct kvm_stats_desc before its name. */
export const STATS_DESC_FIXED_BYTES = 16;
/** Largest name_size accepted (the kernel uses KVM_STATS_NAME_SIZE, 48). */
export const STATS_MAX_NAME_SIZE = 1024;
/** Most descriptors accepted (the kernel has about 50 per vCPU on x86). */
export const STATS_MAX_DESCRIPTORS = 4096;
/** Most u64s one descriptor may hold (a histogram's buckets). */
export const STATS_MAX_VALUES = 4096;
/** Largest data block accepted, in bytes. */
export const STATS_MAX_DATA_BYTES = 1 << 20;

/** How a statistic changes (KVM_STATS_TYPE_*). */
export type KvmStatType = "cumulative" | "instant" | "peak" | "linear-hist" | "log-hist" | "unknown";
/** What a statistic counts (KVM_STATS_UNIT_*). */
export type KvmStatUnit = "none" | "bytes" | "seconds" | "cycles" | "boolean" | "unknown";
/** The base of a statistic's exponent (KVM_STATS_BASE_*). */
export type KvmStatBase = "pow10" | "pow2" | "unknown";

const TYPES: readonly KvmStatType[] = ["cumulative", "instant", "peak", "linear-hist", "log-hist"];
const UNITS: readonly KvmStatUnit[] = ["none", "bytes", "seconds", "cycles", "boolean"];
const BASES: readonly KvmStatBase[] = ["pow10", "pow2"];

/** One statistic of a KVM stats file (struct kvm_stats_desc), decoded. */
export interface KvmStatDescriptor {
  /** The statistic's name, e.g. `exits` or `halt_exits` (NUL-terminated in the file). */
  readonly name: string;
  /** The raw `flags` word (type in bits 0-3, unit in 4-7, base in 8-11). */
  readonly flags: number;
  /** `cumulative` counters only grow, `instant` values go up and down, `peak` is a high-water mark; the two `*-hist` are histograms. */
  readonly type: KvmStatType;
  /** The unit of the value. */
  readonly unit: KvmStatUnit;
  /** The base of {@link KvmStatDescriptor.exponent}. */
  readonly base: KvmStatBase;
  /** The value means `value * base^exponent` units (e.g. -9 with pow10 and seconds: nanoseconds). */
  readonly exponent: number;
  /** Number of u64 values: 1 for a plain statistic, the bucket count for a histogram. */
  readonly size: number;
  /** Byte offset of the values inside the data block (a multiple of 8). */
  readonly offset: number;
  /** Width of each bucket of a `linear-hist` (0 otherwise). */
  readonly bucketSize: number;
}

/** struct kvm_stats_header, decoded. */
export interface KvmStatsHeader {
  /** `flags` (0 today). */
  readonly flags: number;
  /** `name_size`: bytes of the id string and of each descriptor's name field. */
  readonly nameSize: number;
  /** `num_desc`: descriptors in the file. */
  readonly numDesc: number;
  /** `id_offset`: file offset of the id string. */
  readonly idOffset: number;
  /** `desc_offset`: file offset of the first descriptor. */
  readonly descOffset: number;
  /** `data_offset`: file offset of the data block. */
  readonly dataOffset: number;
}

const bad = (message: string): KvmError => new KvmError("InvalidStats", `KVM stats file: ${message}`);

/**
 * Decodes struct kvm_stats_header and checks its sizes and counts against this
 * module's limits (not yet against the file: the caller reads what it names).
 * @throws {@link KvmError} `InvalidStats` for a short header, a name_size of 0 or above
 *   {@link STATS_MAX_NAME_SIZE}, or more than {@link STATS_MAX_DESCRIPTORS} descriptors.
 */
export function decodeStatsHeader(buf: Uint8Array): KvmStatsHeader {
  if (buf.byteLength < STATS_HEADER_BYTES) throw bad(`header of ${buf.byteLength} bytes, expected ${STATS_HEADER_BYTES}`);
  const dv = new DataView(buf.buffer, buf.byteOffset, STATS_HEADER_BYTES);
  const h: KvmStatsHeader = {
    flags: dv.getUint32(0, true),
    nameSize: dv.getUint32(4, true),
    numDesc: dv.getUint32(8, true),
    idOffset: dv.getUint32(12, true),
    descOffset: dv.getUint32(16, true),
    dataOffset: dv.getUint32(20, true),
  };
  if (h.nameSize === 0 || h.nameSize > STATS_MAX_NAME_SIZE) throw bad(`name_size ${h.nameSize} outside 1..${STATS_MAX_NAME_SIZE}`);
  if (h.numDesc > STATS_MAX_DESCRIPTORS) throw bad(`${h.numDesc} descriptors, at most ${STATS_MAX_DESCRIPTORS} accepted`);
  return h;
}

/** Bytes of the descriptor block a header names. */
export function statsDescBlockBytes(h: KvmStatsHeader): number {
  return h.numDesc * (STATS_DESC_FIXED_BYTES + h.nameSize);
}

/**
 * A NUL-terminated string in a `name_size` field: printable ASCII up to the
 * first NUL, which must be inside the field.
 * @throws {@link KvmError} `InvalidStats`
 */
export function decodeStatsName(field: Uint8Array, what: string): string {
  const end = field.indexOf(0);
  if (end < 0) throw bad(`${what} is not NUL-terminated within name_size`);
  let s = "";
  for (let i = 0; i < end; i++) {
    const c = field[i]!;
    if (c < 0x20 || c > 0x7e) throw bad(`${what} has a non-printable byte 0x${c.toString(16)}`);
    s += String.fromCharCode(c);
  }
  return s;
}

/**
 * Decodes the descriptor block (`block` must hold {@link statsDescBlockBytes})
 * and checks each descriptor: a non-empty unique name, 1 to
 * {@link STATS_MAX_VALUES} values, an 8-byte-aligned offset whose values end
 * inside {@link STATS_MAX_DATA_BYTES}. Unknown type, unit and base bits are
 * kept as `unknown` (a newer kernel may add some), not refused.
 * @returns the descriptors and the bytes of data block they span.
 * @throws {@link KvmError} `InvalidStats`
 */
export function decodeStatsDescriptors(h: KvmStatsHeader, block: Uint8Array): { descriptors: KvmStatDescriptor[]; dataBytes: number } {
  const each = STATS_DESC_FIXED_BYTES + h.nameSize;
  if (block.byteLength < h.numDesc * each) throw bad(`descriptor block of ${block.byteLength} bytes, ${h.numDesc} descriptors need ${h.numDesc * each}`);
  const dv = new DataView(block.buffer, block.byteOffset, block.byteLength);
  const descriptors: KvmStatDescriptor[] = [];
  const names = new Set<string>();
  let dataBytes = 0;
  for (let i = 0; i < h.numDesc; i++) {
    const at = i * each;
    const flags = dv.getUint32(at, true);
    const exponent = dv.getInt16(at + 4, true);
    const size = dv.getUint16(at + 6, true);
    const offset = dv.getUint32(at + 8, true);
    const bucketSize = dv.getUint32(at + 12, true);
    const name = decodeStatsName(block.subarray(at + STATS_DESC_FIXED_BYTES, at + each), `descriptor ${i}'s name`);
    if (name === "") throw bad(`descriptor ${i} has an empty name`);
    if (names.has(name)) throw bad(`two descriptors are named ${name}`);
    names.add(name);
    if (size === 0 || size > STATS_MAX_VALUES) throw bad(`${name}: size ${size} outside 1..${STATS_MAX_VALUES}`);
    if (offset % 8 !== 0) throw bad(`${name}: offset ${offset} is not a multiple of 8`);
    const end = offset + size * 8;
    if (end > STATS_MAX_DATA_BYTES) throw bad(`${name}: values end at byte ${end} of the data block, beyond ${STATS_MAX_DATA_BYTES}`);
    if (end > dataBytes) dataBytes = end;
    descriptors.push({
      name,
      flags,
      type: TYPES[flags & 0xf] ?? "unknown",
      unit: UNITS[(flags >>> 4) & 0xf] ?? "unknown",
      base: BASES[(flags >>> 8) & 0xf] ?? "unknown",
      exponent,
      size,
      offset,
      bucketSize,
    });
  }
  return { descriptors, dataBytes };
}

/** Whether a descriptor's values are read as an array (a histogram, or more than one value). */
export function isStatArray(d: KvmStatDescriptor): boolean {
  return d.size !== 1 || d.type === "linear-hist" || d.type === "log-hist";
}

/**
 * The values of every descriptor from a data block (`data` must hold the
 * `dataBytes` that {@link decodeStatsDescriptors} returned): a bigint for a
 * plain statistic, a bigint array for a histogram or a multi-value one.
 * @throws {@link KvmError} `InvalidStats` if `data` is shorter than a descriptor needs.
 */
export function decodeStatsData(descriptors: readonly KvmStatDescriptor[], data: Uint8Array): Record<string, bigint | bigint[]> {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out: Record<string, bigint | bigint[]> = {};
  for (const d of descriptors) {
    if (d.offset + d.size * 8 > data.byteLength) throw bad(`${d.name}: values end beyond the ${data.byteLength}-byte data block`);
    if (!isStatArray(d)) {
      out[d.name] = dv.getBigUint64(d.offset, true);
      continue;
    }
    const v: bigint[] = [];
    for (let i = 0; i < d.size; i++) v.push(dv.getBigUint64(d.offset + i * 8, true));
    out[d.name] = v;
  }
  return out;
}
