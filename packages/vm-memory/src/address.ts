import { GuestMemoryError } from "./error.js";

/**
 * A guest physical address: an integer in [0, 2^52). Guest physical addresses
 * on x86-64 are at most 52 bits wide, so a JS number holds one exactly.
 */
export type GuestAddress = number;

/** 2^52: the first number that is not a valid {@link GuestAddress}. */
export const GUEST_ADDRESS_LIMIT = 2 ** 52;

const TWO_32 = 2 ** 32;
/** 2^(52-32): the high half of a valid 64-bit value must be below this. */
const HI_LIMIT = 2 ** 20;

/**
 * Turns a guest-written 64-bit value, given as its two u32 halves, into a
 * {@link GuestAddress}, refusing anything ≥ 2^52 instead of rounding it.
 *
 * @param lo - bits 31..0, an integer in [0, 2^32).
 * @param hi - bits 63..32, an integer in [0, 2^32).
 * @returns `hi * 2^32 + lo`, exact.
 * @throws {@link GuestMemoryError} `"AddressTooLarge"` if the value is ≥ 2^52;
 *   `"InvalidArgument"` if a half is not an integer in [0, 2^32).
 */
export function toGuestAddress(lo: number, hi: number): GuestAddress {
  if (!(lo >= 0 && lo < TWO_32 && Number.isInteger(lo) && hi >= 0 && hi < TWO_32 && Number.isInteger(hi))) {
    throw new GuestMemoryError("InvalidArgument", `u64 halves must be integers in [0, 2^32): lo=${lo} hi=${hi}`);
  }
  if (hi >= HI_LIMIT) {
    throw new GuestMemoryError(
      "AddressTooLarge",
      `64-bit value 0x${hi.toString(16).padStart(8, "0")}${lo.toString(16).padStart(8, "0")} is not below 2^52`,
    );
  }
  return hi * TWO_32 + lo;
}

/**
 * Turns a 64-bit bigint (for example one read with `readU64`) into a
 * {@link GuestAddress}, refusing anything outside [0, 2^52).
 *
 * @throws {@link GuestMemoryError} `"AddressTooLarge"` if `v` ≥ 2^52;
 *   `"InvalidArgument"` if `v` is negative.
 */
export function bigintToGuestAddress(v: bigint): GuestAddress {
  if (v < 0n) throw new GuestMemoryError("InvalidArgument", `negative address ${v}`);
  if (v >= 1n << 52n) throw new GuestMemoryError("AddressTooLarge", `0x${v.toString(16)} is not below 2^52`);
  return Number(v);
}

/**
 * Checks that `addr` is a valid {@link GuestAddress}.
 *
 * @throws {@link GuestMemoryError} `"AddressTooLarge"` if `addr` ≥ 2^52
 *   (including +Infinity); `"InvalidArgument"` if it is negative, fractional or NaN.
 */
export function checkGuestAddress(addr: number): void {
  if (addr >= 0 && addr < GUEST_ADDRESS_LIMIT && Number.isInteger(addr)) return;
  if (addr >= GUEST_ADDRESS_LIMIT) {
    throw new GuestMemoryError("AddressTooLarge", `address ${addr} is not below 2^52`, { addr });
  }
  throw new GuestMemoryError("InvalidArgument", `address ${String(addr)} is not a non-negative integer`);
}

/**
 * Checks that `len` is a valid length: a non-negative integer no larger than 2^52.
 *
 * @throws {@link GuestMemoryError} `"InvalidArgument"` otherwise.
 */
export function checkLength(len: number): void {
  if (len >= 0 && len <= GUEST_ADDRESS_LIMIT && Number.isInteger(len)) return;
  throw new GuestMemoryError("InvalidArgument", `length ${String(len)} is not an integer in [0, 2^52]`, { len });
}
