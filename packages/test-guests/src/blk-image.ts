import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import type { GuestResults } from "./results.js";

const MASK = (1n << 64n) - 1n;
const SECTOR = 512;

/**
 * The micro-guest's blk data pattern (guest/blk.c `blk_pat`): the 8-byte
 * little-endian word `word` (0..63) of sector `sector`, for the run's seed and
 * a variant (0 = data that must be on the disk, 1 = a write the device had to
 * refuse, 2 = a write to the read-only disk). A splitmix64 finaliser over
 * seed, sector, word index and variant, so every word of every sector differs.
 */
export function blkPattern(seed: bigint, sector: bigint, word: bigint, variant: bigint): bigint {
  let z = (seed + ((sector * 64n + word) * 0x9e3779b97f4a7c15n) + variant * 0xd1b54a32d192ed03n) & MASK;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK;
  return z ^ (z >> 31n);
}

/** The 512 bytes the guest writes to `sector` with this seed and variant. */
export function blkSectorImage(seed: bigint, sector: bigint, variant: bigint): Buffer {
  const b = Buffer.alloc(SECTOR);
  for (let k = 0n; k < 64n; k++) b.writeBigUInt64LE(blkPattern(seed, sector, k, variant), Number(k) * 8);
  return b;
}

/** A range of sectors the guest reported (`RESULT <key>=<sector>:<count>`). */
export interface SectorRange {
  readonly sector: bigint;
  readonly count: number;
}

/** The ranges of every `RESULT <key>=` line, in order. */
export function reportedRanges(results: GuestResults, key: string): SectorRange[] {
  return results.all
    .filter((r) => r.key === key)
    .map((r) => {
      const m = /^(\d+):(\d+)$/.exec(r.value);
      if (!m) throw new RangeError(`RESULT ${key}=${r.value} is not <sector>:<count>`);
      return { sector: BigInt(m[1]!), count: Number(m[2]) };
    });
}

/** Options of {@link blkImageProblems}. */
export interface BlkImageCheck {
  /**
   * Which records to check: `"blk"` (default) reads `blk.wrote=` (must hold
   * variant 0) and `blk.refused=` (must not hold variant 1); `"blk.ro"` reads
   * `blk.ro.refused=` (must not hold variant 2) for the read-only disk.
   */
  readonly disk?: "blk" | "blk.ro";
  /** Minimum number of written ranges required (default 18 for `"blk"`: sector 0, the end, 16 slices). */
  readonly minRanges?: number;
}

/**
 * Reads the disk image after the run and checks it against what the guest
 * said it wrote: every sector of every `blk.wrote=` range must hold the seed's
 * pattern (so a device that kept writes in memory, wrote to the wrong offset
 * or dropped them fails), refused writes must not have landed, and the
 * written ranges must reach sector 0 and the last sector of the disk.
 * Returns the problems found (empty if the image is as the guest left it).
 */
export function blkImageProblems(results: GuestResults, imagePath: string, options: BlkImageCheck = {}): string[] {
  const problems: string[] = [];
  const disk = options.disk ?? "blk";
  const seedText = results.values["seed"];
  if (seedText === undefined || !/^\d+$/.test(seedText)) return [`no "RESULT seed=" line`];
  const seed = BigInt(seedText);
  const fd = openSync(imagePath, "r");
  try {
    const sectors = BigInt(fstatSync(fd).size) / 512n;
    const read = (s: bigint): Buffer => {
      const b = Buffer.alloc(SECTOR);
      const n = readSync(fd, b, 0, SECTOR, Number(s) * SECTOR);
      if (n !== SECTOR) throw new RangeError(`short read of sector ${s} from ${imagePath}`);
      return b;
    };
    const check = (key: string, variant: bigint, mustHold: boolean): SectorRange[] => {
      const ranges = reportedRanges(results, key);
      for (const { sector, count } of ranges) {
        for (let i = 0n; i < BigInt(count); i++) {
          const s = sector + i;
          if (s >= sectors) {
            problems.push(`${key} names sector ${s}, past the image's ${sectors} sectors`);
            continue;
          }
          const same = read(s).equals(blkSectorImage(seed, s, variant));
          if (mustHold && !same) problems.push(`sector ${s} (${key}=${sector}:${count}) does not hold the guest's data`);
          if (!mustHold && same) problems.push(`sector ${s} holds the data of a write that was refused (${key}=${sector}:${count})`);
        }
      }
      return ranges;
    };
    if (disk === "blk.ro") {
      if (check("blk.ro.refused", 2n, false).length === 0) problems.push(`no "RESULT blk.ro.refused=" line`);
      return problems;
    }
    const wrote = check("blk.wrote", 0n, true);
    check("blk.refused", 1n, false);
    if (wrote.length < (options.minRanges ?? 18)) problems.push(`only ${wrote.length} written ranges reported`);
    if (!wrote.some((r) => r.sector === 0n)) problems.push("sector 0 was not written");
    if (!wrote.some((r) => r.sector + BigInt(r.count) === sectors)) problems.push("the last sector was not written");
  } finally {
    closeSync(fd);
  }
  return problems;
}
