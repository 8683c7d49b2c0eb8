/** Little-endian field access over a byte buffer. @internal */
export function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Reads u64 as bigint. @internal */
export function u64(dv: DataView, off: number): bigint {
  return dv.getBigUint64(off, true);
}

/** Writes a bigint (masked to 64 bits). @internal */
export function setU64(dv: DataView, off: number, v: bigint): void {
  dv.setBigUint64(off, BigInt.asUintN(64, v), true);
}
