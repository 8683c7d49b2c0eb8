// CRC-64/XZ (also called CRC-64/GO-ECMA): the ECMA-182 polynomial reflected
// (0xC96C5795D7870F42), initial value and final xor all ones, as xz and Go's
// hash/crc64 (ECMA table) compute it. Check value: crc64("123456789") ===
// 0x995DC9BBDF1939FAn. Slice-by-8 over two u32 halves: eight 256-entry tables
// (table k advances a byte through k more zero bytes) fold 8 input bytes per
// step, ~4x the byte-at-a-time loop (~0.1 ms for a 170 KiB state file here);
// BigInt per byte would cost ~50x more.

const POLY_LO = 0xd7870f42;
const POLY_HI = 0xc96c5795;

/**
 * TABLE_LO/HI[k * 256 + i]: the low/high half of table k's entry i. Built on the first
 * {@link crc64} call, not at load: only snapshots use it, and at the top level of the CLI's
 * run bundle its ~4,000 interpreted steps (u32 values above 2^31 are heap numbers there)
 * cost every start of `ts-vmm run` ~1.5 ms here (DESIGN.md, start-up).
 */
let tables: { readonly lo: Uint32Array; readonly hi: Uint32Array } | undefined;

function buildTables(): { readonly lo: Uint32Array; readonly hi: Uint32Array } {
  const TABLE_LO = new Uint32Array(8 * 256);
  const TABLE_HI = new Uint32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let lo = i >>> 0;
    let hi = 0;
    for (let k = 0; k < 8; k++) {
      const carry = lo & 1;
      lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0;
      hi = hi >>> 1;
      if (carry) {
        lo = (lo ^ POLY_LO) >>> 0;
        hi = (hi ^ POLY_HI) >>> 0;
      }
    }
    TABLE_LO[i] = lo;
    TABLE_HI[i] = hi;
  }
  for (let k = 1; k < 8; k++) {
    for (let i = 0; i < 256; i++) {
      // T_k[i] = (T_{k-1}[i] >> 8) ^ T_0[T_{k-1}[i] & 0xff]
      const plo = TABLE_LO[(k - 1) * 256 + i]!, phi = TABLE_HI[(k - 1) * 256 + i]!;
      const t = plo & 0xff;
      TABLE_LO[k * 256 + i] = (((plo >>> 8) | ((phi & 0xff) << 24)) ^ TABLE_LO[t]!) >>> 0;
      TABLE_HI[k * 256 + i] = ((phi >>> 8) ^ TABLE_HI[t]!) >>> 0;
    }
  }
  return { lo: TABLE_LO, hi: TABLE_HI };
}

/**
 * CRC-64/XZ of `data`, continuing from `prev` (the result of an earlier call
 * over the preceding bytes; default: a fresh CRC).
 */
export function crc64(data: Uint8Array, prev = 0n): bigint {
  let lo = Number(~prev & 0xffff_ffffn) >>> 0;
  let hi = Number((~prev >> 32n) & 0xffff_ffffn) >>> 0;
  const n = data.length;
  tables ??= buildTables();
  const TL = tables.lo, TH = tables.hi;
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const a = (lo ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24))) >>> 0;
    const b = (hi ^ (data[i + 4]! | (data[i + 5]! << 8) | (data[i + 6]! << 16) | (data[i + 7]! << 24))) >>> 0;
    const i7 = 7 * 256 + (a & 0xff), i6 = 6 * 256 + ((a >>> 8) & 0xff), i5 = 5 * 256 + ((a >>> 16) & 0xff), i4 = 4 * 256 + (a >>> 24);
    const i3 = 3 * 256 + (b & 0xff), i2 = 2 * 256 + ((b >>> 8) & 0xff), i1 = 256 + ((b >>> 16) & 0xff), i0 = b >>> 24;
    lo = (TL[i7]! ^ TL[i6]! ^ TL[i5]! ^ TL[i4]! ^ TL[i3]! ^ TL[i2]! ^ TL[i1]! ^ TL[i0]!) >>> 0;
    hi = (TH[i7]! ^ TH[i6]! ^ TH[i5]! ^ TH[i4]! ^ TH[i3]! ^ TH[i2]! ^ TH[i1]! ^ TH[i0]!) >>> 0;
  }
  for (; i < n; i++) {
    const t = (lo ^ data[i]!) & 0xff;
    lo = ((lo >>> 8) | ((hi & 0xff) << 24)) >>> 0;
    hi = hi >>> 8;
    lo = (lo ^ TL[t]!) >>> 0;
    hi = (hi ^ TH[t]!) >>> 0;
  }
  return ~((BigInt(hi) << 32n) | BigInt(lo)) & 0xffff_ffff_ffff_ffffn;
}
