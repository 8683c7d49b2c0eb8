// A minimal ELF64 executable for tests: one PT_LOAD segment with `code` at
// 1 MiB, entered there in 32-bit protected mode (no PVH note needed by our loader).
export const TINY_LOAD = 0x100000;

export function tinyElf(code: readonly number[]): Uint8Array {
  const off = 0x1000;
  const out = new Uint8Array(off + code.length);
  const v = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]); // \x7fELF, 64-bit, little endian, version 1
  v.setUint16(16, 2, true); // ET_EXEC
  v.setUint16(18, 62, true); // EM_X86_64
  v.setUint32(20, 1, true);
  v.setBigUint64(24, BigInt(TINY_LOAD), true); // e_entry
  v.setBigUint64(32, 64n, true); // e_phoff
  v.setUint16(52, 64, true); // e_ehsize
  v.setUint16(54, 56, true); // e_phentsize
  v.setUint16(56, 1, true); // e_phnum
  const ph = 64;
  v.setUint32(ph, 1, true); // PT_LOAD
  v.setUint32(ph + 4, 7, true); // RWX
  v.setBigUint64(ph + 8, BigInt(off), true);
  v.setBigUint64(ph + 16, BigInt(TINY_LOAD), true);
  v.setBigUint64(ph + 24, BigInt(TINY_LOAD), true);
  v.setBigUint64(ph + 32, BigInt(code.length), true);
  v.setBigUint64(ph + 40, BigInt(code.length), true);
  out.set(code, off);
  return out;
}

/** `jmp $`: a guest that runs until stopped. */
export const SPIN = [0xeb, 0xfe];
/** `out 0xf4, al` with al = v: leaves through the debug-exit port. */
export const exitWith = (v: number): number[] => [0xb0, v & 0xff, 0xe6, 0xf4];
