import { hex } from "./bytes.js";
import { LoaderError } from "./error.js";
import { layout, type RamRegion } from "./layout.js";
import { firstOverlap, isGuestRange } from "./ranges.js";

/** e820 entry types (ACPI "address range types"). */
export const E820Type = {
  Ram: 1,
  Reserved: 2,
  Acpi: 3,
  Nvs: 4,
  Unusable: 5,
} as const;
/** One of {@link E820Type}'s values. */
export type E820TypeValue = (typeof E820Type)[keyof typeof E820Type];

/** One e820 entry: `[addr, addr + size)` of `type`. Numbers: addresses fit in 52 bits. */
export interface E820Entry {
  readonly addr: number;
  readonly size: number;
  readonly type: E820TypeValue;
}

/** The zero page holds at most 128 e820 entries (E820_MAX_ENTRIES_ZEROPAGE, asm/bootparam.h). */
export const E820_MAX_ENTRIES = 128;

/** Ranges below 1 MiB that our layout reserves (MP table in the EBDA, ACPI tables in the BIOS area). */
export const DEFAULT_RESERVED: readonly E820Entry[] = [
  { addr: layout.ebda, size: layout.legacyHoleStart - layout.ebda, type: E820Type.Reserved },
  { addr: layout.acpi, size: layout.acpiEnd - layout.acpi, type: E820Type.Reserved },
];

/**
 * Builds a sorted, non-overlapping e820 map from RAM regions and ranges
 * carved out of them. RAM inside `[0xa0000, 0x100000)` (the legacy VGA and
 * BIOS window) is never reported as RAM; a `reserved` range replaces any RAM
 * under it. Adjacent RAM entries are merged.
 *
 * @param ram - guest RAM (usually {@link ramRegions})
 * @param reserved - ranges to report with their own type (default {@link DEFAULT_RESERVED})
 * @throws LoaderError `InvalidArgument` for a negative or non-integer range,
 * `Overlap` when two `reserved` ranges overlap, `TooManyEntries` above 128 entries.
 */
export function buildE820(ram: readonly RamRegion[], reserved: readonly E820Entry[] = DEFAULT_RESERVED): E820Entry[] {
  for (const r of [...ram.map((x) => ({ addr: x.start, size: x.size })), ...reserved]) {
    if (!isGuestRange(r.addr, r.size)) {
      throw new LoaderError("InvalidArgument", `memory range ${r.addr}+${r.size} is not a valid guest range`);
    }
  }
  const clash = firstOverlap(reserved, (r) => r.addr, (r) => r.addr + r.size);
  if (clash) throw new LoaderError("Overlap", `reserved e820 range at ${hex(clash[1].addr)} overlaps the one at ${hex(clash[0].addr)}`);
  const res = [...reserved].filter((r) => r.size > 0).sort((a, b) => a.addr - b.addr);
  // Holes in RAM: the reserved ranges plus the legacy window.
  const cuts = [...res.map((r) => [r.addr, r.addr + r.size] as const), [layout.legacyHoleStart, layout.acpiEnd] as const].sort(
    (a, b) => a[0] - b[0],
  );
  const out: E820Entry[] = [];
  for (const region of [...ram].sort((a, b) => a.start - b.start)) {
    let pieces: [number, number][] = [[region.start, region.start + region.size]];
    for (const [cs, ce] of cuts) {
      const next: [number, number][] = [];
      for (const [s, e] of pieces) {
        if (ce <= s || cs >= e) next.push([s, e]);
        else {
          if (s < cs) next.push([s, cs]);
          if (ce < e) next.push([ce, e]);
        }
      }
      pieces = next;
    }
    for (const [s, e] of pieces) if (e > s) out.push({ addr: s, size: e - s, type: E820Type.Ram });
  }
  out.push(...res);
  out.sort((a, b) => a.addr - b.addr);
  const merged: E820Entry[] = [];
  for (const e of out) {
    const last = merged[merged.length - 1];
    if (last && last.type === e.type && last.addr + last.size === e.addr) {
      merged[merged.length - 1] = { addr: last.addr, size: last.size + e.size, type: e.type };
    } else merged.push(e);
  }
  if (merged.length > E820_MAX_ENTRIES) {
    throw new LoaderError("TooManyEntries", `the e820 map has ${merged.length} entries; the zero page holds ${E820_MAX_ENTRIES}`);
  }
  return merged;
}

/**
 * Checks entries a caller hands to a table writer (zero page, PVH memory map):
 * integer address and size with `addr + size` inside 2^52, a 32-bit type.
 *
 * @throws LoaderError `InvalidArgument` naming the first bad entry.
 */
export function checkE820Entries(entries: readonly E820Entry[]): void {
  entries.forEach((e, i) => {
    if (!isGuestRange(e.addr, e.size) || !Number.isInteger(e.type) || e.type < 0 || e.type > 0xffff_ffff) {
      throw new LoaderError("InvalidArgument", `memory map entry ${i} (${String(e.addr)}+${String(e.size)}, type ${String(e.type)}) is not a valid guest range`);
    }
  });
}

/**
 * The RAM entries of an e820 map that lie below `limit`, as `[start, end)`
 * pairs, for placing the initrd and other blobs.
 */
export function ramBelow(map: readonly E820Entry[], limit: number): [number, number][] {
  const out: [number, number][] = [];
  for (const e of map) {
    if (e.type !== E820Type.Ram) continue;
    const end = Math.min(e.addr + e.size, limit);
    if (end > e.addr) out.push([e.addr, end]);
  }
  return out;
}
