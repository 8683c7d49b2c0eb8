import { BALLOON_STAT_BYTES } from "./constants.js";

/**
 * The statistics tags a driver may report (§5.5.6.3; tags 10-15 are Linux's
 * extensions, Linux 6.12+), by name. Values are bytes for memory amounts and
 * counts for events, as the driver reports them.
 */
export const BALLOON_STAT_TAGS = {
  swapIn: 0,
  swapOut: 1,
  majorFaults: 2,
  minorFaults: 3,
  freeMemory: 4,
  totalMemory: 5,
  availableMemory: 6,
  diskCaches: 7,
  hugetlbAllocations: 8,
  hugetlbFailures: 9,
  oomKills: 10,
  allocStalls: 11,
  asyncScans: 12,
  directScans: 13,
  asyncReclaims: 14,
  directReclaims: 15,
} as const;

/** The name of a statistics tag (a key of {@link BALLOON_STAT_TAGS}). */
export type BalloonStatName = keyof typeof BALLOON_STAT_TAGS;

/** The values of one statistics buffer, by tag name (absent: the driver did not report it). */
export type BalloonStatValues = Partial<Record<BalloonStatName, bigint>>;

/** The latest statistics the driver reported. */
export interface BalloonStats {
  /** When the device read them (`Date.now()`). */
  readonly updatedAt: number;
  /** The values (u64, as bigint: a guest may send any 64-bit value). */
  readonly values: BalloonStatValues;
}

const NAMES: readonly BalloonStatName[] = (() => {
  const out: BalloonStatName[] = [];
  for (const [name, tag] of Object.entries(BALLOON_STAT_TAGS)) out[tag] = name as BalloonStatName;
  return out;
})();

/** What {@link parseStats} found. @internal */
export interface ParsedStats {
  readonly values: BalloonStatValues;
  /** Entries with a tag this device does not know (ignored, as the spec asks). */
  readonly unknownTags: number;
  /** Bytes after the last whole 10-byte entry (ignored). */
  readonly trailingBytes: number;
}

/**
 * Parses a copy of a statistics buffer: packed `{ le16 tag; le64 val; }`
 * entries, in any order; a later entry with the same tag wins. Never throws.
 * @internal
 */
export function parseStats(bytes: Uint8Array): ParsedStats {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const values: { -readonly [K in BalloonStatName]?: bigint } = {};
  let unknownTags = 0;
  const whole = bytes.length - (bytes.length % BALLOON_STAT_BYTES);
  for (let at = 0; at < whole; at += BALLOON_STAT_BYTES) {
    const name = NAMES[dv.getUint16(at, true)];
    if (name === undefined) unknownTags++;
    else values[name] = dv.getBigUint64(at + 2, true);
  }
  return { values, unknownTags, trailingBytes: bytes.length - whole };
}

/** Statistics as plain JSON (decimal strings), for persist. @internal */
export function statsToJson(s: BalloonStats): { updatedAt: number; values: Record<string, string> } {
  const values: Record<string, string> = {};
  for (const [k, v] of Object.entries(s.values)) values[k] = v.toString();
  return { updatedAt: s.updatedAt, values };
}

/** The inverse of {@link statsToJson}; undefined if malformed. @internal */
export function statsFromJson(j: unknown): BalloonStats | undefined {
  if (typeof j !== "object" || j === null) return undefined;
  const { updatedAt, values } = j as { updatedAt?: unknown; values?: unknown };
  if (typeof updatedAt !== "number" || !Number.isFinite(updatedAt) || typeof values !== "object" || values === null) return undefined;
  const out: { -readonly [K in BalloonStatName]?: bigint } = {};
  for (const [k, v] of Object.entries(values)) {
    if (!Object.hasOwn(BALLOON_STAT_TAGS, k) || typeof v !== "string" || !/^\d{1,20}$/.test(v)) return undefined;
    const n = BigInt(v);
    if (n >= 1n << 64n) return undefined;
    out[k as BalloonStatName] = n;
  }
  return { updatedAt, values: out };
}
