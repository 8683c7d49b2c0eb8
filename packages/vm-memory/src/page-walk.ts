// x86-64 4-level and 5-level paging, after the Intel SDM Vol. 3A, chapter 4
// ("Paging"): 4.5 (4-level and 5-level paging, table formats 4-15 .. 4-20),
// 4.6 (access rights) and 3.3.7.1 (canonical addressing).
import { GuestMemoryError } from "./error.js";
import type { GuestMemory } from "./guest-memory.js";

/** Options of {@link translate}: the paging-relevant bits of the vCPU state. */
export interface TranslateOptions {
  /** CR4.LA57: 5-level paging (57-bit linear addresses). Default false. */
  readonly la57?: boolean;
  /** EFER.NXE: bit 63 of entries is XD (execute-disable); otherwise it is reserved. Default true. */
  readonly nxe?: boolean;
  /** CR0.WP: supervisor writes honour read-only pages. Default true. */
  readonly wp?: boolean;
  /** The access is made in user mode (CPL 3). Default false (supervisor). */
  readonly user?: boolean;
  /**
   * Check that this kind of access is allowed (SDM 4.6); a denied access gives
   * the fault `"Protection"`. Without it only the translation is checked.
   */
  readonly access?: "read" | "write" | "execute";
  /** MAXPHYADDR, the CPU's physical address width, in [32, 52]. Default 52. */
  readonly maxPhysAddr?: number;
  /** 1 GiB pages supported (CPUID PDPE1GB). Otherwise PS in a PDPTE is reserved. Default true. */
  readonly pdpe1gb?: boolean;
}

/** A successful translation. */
export interface TranslateOk {
  /** Discriminant: the translation succeeded. */
  readonly ok: true;
  /** The guest physical address. */
  readonly gpa: number;
  /** Size of the page that maps it: 4096, 2 MiB or 1 GiB. */
  readonly pageSize: number;
  /** Writes are allowed for the access mode given (`user`, `wp`). */
  readonly writable: boolean;
  /** U/S is set at every level: the page is accessible from user mode. */
  readonly user: boolean;
  /** Instruction fetches are allowed for the access mode given (no XD at any level when NXE is on). */
  readonly executable: boolean;
  /** Guest physical address of the leaf entry that mapped the page. */
  readonly entryAddr: number;
}

/**
 * Why a translation failed:
 * - `"NotPresent"`: an entry at `level` has P = 0;
 * - `"ReservedBit"`: an entry at `level` (or CR3 at the top level) has a reserved bit set;
 * - `"NonCanonical"`: the address is not canonical for the paging mode (level = top level);
 * - `"MemoryError"`: the table at `level` is not in guest memory;
 * - `"Protection"`: the access given in `options.access` is not allowed (level 1..3: the leaf).
 */
export type TranslateFaultKind = "NotPresent" | "ReservedBit" | "NonCanonical" | "MemoryError" | "Protection";

/** A failed translation: what and at which level (5 = PML5, 4 = PML4, 3 = PDPT, 2 = PD, 1 = PT). */
export interface TranslateFault {
  /** Discriminant: the translation failed. */
  readonly ok: false;
  /** What failed. */
  readonly fault: TranslateFaultKind;
  /** The paging level where it failed (5..1). */
  readonly level: number;
  /** Guest physical address of the entry that faulted, when there is one. */
  readonly entryAddr?: number;
}

/** The result of {@link translate}. */
export type TranslateResult = TranslateOk | TranslateFault;

const TWO_32 = 2 ** 32;
const U64 = (1n << 64n) - 1n;

/**
 * Walks the guest's page tables to translate a guest virtual (linear) address
 * to a guest physical address, for VM introspection and debugging. Read-only:
 * it never sets accessed/dirty bits. Large pages (2 MiB, 1 GiB) are handled,
 * and U/S, R/W and XD are accumulated over all levels. Protection keys, SMEP,
 * SMAP and PAT are not modelled.
 *
 * Every entry is a hostile value: a fault result is returned, never thrown.
 *
 * @param mem - guest memory holding the tables.
 * @param cr3 - the CR3 value (bits 11..0 and 63..52 are ignored).
 * @param gva - the linear address, as a u64 (bigint in [-2^63, 2^64) or a non-negative safe integer).
 * @throws {@link GuestMemoryError} `"InvalidArgument"` only for caller errors:
 *   `gva`/`cr3` out of the 64-bit range, or a bad `maxPhysAddr`.
 */
export function translate(
  mem: GuestMemory,
  cr3: bigint | number,
  gva: bigint | number,
  options: TranslateOptions = {},
): TranslateResult {
  const la57 = options.la57 ?? false;
  const nxe = options.nxe ?? true;
  const wp = options.wp ?? true;
  const userMode = options.user ?? false;
  const pdpe1gb = options.pdpe1gb ?? true;
  const maxPhys = options.maxPhysAddr ?? 52;
  if (!(Number.isInteger(maxPhys) && maxPhys >= 32 && maxPhys <= 52)) {
    throw new GuestMemoryError("InvalidArgument", `maxPhysAddr ${maxPhys} is not in [32, 52]`);
  }
  const va = toU64(gva, "gva");
  const cr = toU64(cr3, "cr3");
  const top = la57 ? 5 : 4;

  // Canonical: bits 63..(va bits - 1) all equal (SDM 3.3.7.1).
  const vaBits = la57 ? 57n : 48n;
  const upper = va >> (vaBits - 1n);
  if (upper !== 0n && upper !== (1n << (65n - vaBits)) - 1n) return { ok: false, fault: "NonCanonical", level: top };

  // Reserved physical-address bits M..51, as a mask over the high u32 of an entry.
  const rsvdHi = maxPhys >= 52 ? 0 : (0xfffff & ~((1 << (maxPhys - 32)) - 1)) >>> 0;

  const crLo = Number(cr & 0xffff_ffffn);
  const crHi = Number((cr >> 32n) & 0xfffffn);
  if ((crHi & rsvdHi) !== 0) return { ok: false, fault: "ReservedBit", level: top };
  let table = (crHi & 0xfffff) * TWO_32 + ((crLo & 0xfffff000) >>> 0);

  const vaLo = Number(va & 0xffff_ffffn);
  let allRw = true;
  let allUs = true;
  let anyXd = false;

  for (let level = top; level >= 1; level--) {
    const shift = 12 + 9 * (level - 1);
    const index = Number((va >> BigInt(shift)) & 0x1ffn);
    const entryAddr = table + index * 8;
    let lo: number;
    let hi: number;
    try {
      const e = mem.readU64Split(entryAddr);
      lo = e.lo;
      hi = e.hi;
    } catch (err) {
      if (err instanceof GuestMemoryError) return { ok: false, fault: "MemoryError", level, entryAddr };
      throw err;
    }
    if ((lo & 1) === 0) return { ok: false, fault: "NotPresent", level, entryAddr };
    const ps = (lo & 0x80) !== 0;
    const xd = hi >>> 31 === 1;
    let reserved = (hi & rsvdHi) !== 0 || (!nxe && xd);
    if (level >= 4 && ps) reserved = true; // PML5E/PML4E bit 7 is reserved
    if (level === 3 && ps && !pdpe1gb) reserved = true;
    const leafSize = level === 1 ? 4096 : ps && (level === 2 || level === 3) ? 2 ** shift : 0;
    if (leafSize > 4096 && (lo & ((leafSize - 1) & ~0x1fff)) !== 0) reserved = true; // bits (shift-1)..13 of a large page
    if (reserved) return { ok: false, fault: "ReservedBit", level, entryAddr };

    allRw &&= (lo & 2) !== 0;
    allUs &&= (lo & 4) !== 0;
    anyXd ||= nxe && xd;

    if (leafSize !== 0) {
      const baseLo = (lo & ~(leafSize - 1) & 0xfffff000) >>> 0;
      const base = (hi & 0xfffff) * TWO_32 + baseLo;
      const offset = (vaLo & (leafSize - 1)) >>> 0;
      const writable = userMode ? allUs && allRw : wp ? allRw : true;
      const executable = !anyXd && (!userMode || allUs);
      const readable = !userMode || allUs;
      const access = options.access;
      if (
        (access === "write" && !writable) ||
        (access === "execute" && !executable) ||
        (access === "read" && !readable)
      ) {
        return { ok: false, fault: "Protection", level, entryAddr };
      }
      return { ok: true, gpa: base + offset, pageSize: leafSize, writable, user: allUs, executable, entryAddr };
    }
    table = (hi & 0xfffff) * TWO_32 + ((lo & 0xfffff000) >>> 0);
  }
  /* c8 ignore next */
  throw new GuestMemoryError("InvalidArgument", "unreachable: level 1 is always a leaf");
}

function toU64(v: bigint | number, what: string): bigint {
  if (typeof v === "number") {
    if (!(Number.isSafeInteger(v) && v >= 0)) {
      throw new GuestMemoryError("InvalidArgument", `${what} ${v} is not a non-negative safe integer (use a bigint)`);
    }
    return BigInt(v);
  }
  if (typeof v !== "bigint" || v < -(1n << 63n) || v > U64) {
    throw new GuestMemoryError("InvalidArgument", `${what} ${String(v)} is not a 64-bit value`);
  }
  return v & U64;
}
