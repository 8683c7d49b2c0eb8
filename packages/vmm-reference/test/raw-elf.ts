// Hand-assembled guests entered by linux-loader's 64-bit protocol at CPL0 (shared by the audit and device tests).

/** Where rawElf() loads its code. */
export const LOAD = 0x100000;

/** A minimal ELF64 x86-64 executable: one PT_LOAD of `code` at 1 MiB (no PVH note: entered in long mode). */
export function rawElf(code: readonly number[], data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const body = new Uint8Array(code.length + data.byteLength);
  body.set(code, 0);
  body.set(data, code.length);
  const off = 0x1000;
  const b = new Uint8Array(off + body.byteLength);
  const v = new DataView(b.buffer);
  v.setUint32(0, 0x464c457f, true);
  b[4] = 2;
  b[5] = 1;
  b[6] = 1;
  v.setUint16(16, 2, true); // ET_EXEC
  v.setUint16(18, 62, true); // EM_X86_64
  v.setUint32(20, 1, true);
  v.setBigUint64(24, BigInt(LOAD), true);
  v.setBigUint64(32, 64n, true);
  v.setUint16(52, 64, true);
  v.setUint16(54, 56, true);
  v.setUint16(56, 1, true);
  v.setUint32(64, 1, true); // PT_LOAD
  v.setUint32(68, 7, true);
  v.setBigUint64(64 + 8, BigInt(off), true);
  v.setBigUint64(64 + 16, BigInt(LOAD), true);
  v.setBigUint64(64 + 24, BigInt(LOAD), true);
  v.setBigUint64(64 + 32, BigInt(body.byteLength), true);
  v.setBigUint64(64 + 40, BigInt(body.byteLength), true);
  b.set(body, off);
  return b;
}

export const le32 = (n: number): number[] => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
/** out 0xf4, al with al = v */
export const exitByte = (v: number): number[] => [0xb0, v & 0xff, 0xe6, 0xf4];
