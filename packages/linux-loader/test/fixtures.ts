import { createHash } from "node:crypto";
import { GuestMemoryArrayBuffer, type GuestMemory } from "@ts-vmm/vm-memory";
import { ramRegions } from "../src/index.js";

/** Guest memory laid out as the loader expects, in plain ArrayBuffers. */
export function memory(size: number): GuestMemoryArrayBuffer {
  return GuestMemoryArrayBuffer.fromRanges(ramRegions(size), { shared: false });
}

/** sha256 of all of guest memory, to prove nothing was written. */
export function memHash(mem: GuestMemory): string {
  const h = createHash("sha256");
  for (const r of mem.regions) {
    const buf = new Uint8Array(Math.min(r.size, 1 << 20));
    for (let a = r.start; a < r.start + r.size; a += buf.byteLength) {
      const n = Math.min(buf.byteLength, r.start + r.size - a);
      const view = buf.subarray(0, n);
      mem.read(a, view);
      h.update(view);
    }
  }
  return h.digest("hex");
}

export interface BzOptions {
  version?: number;
  setupSects?: number;
  kernelSize?: number;
  loadflags?: number;
  xloadflags?: number;
  relocatable?: number;
  kernelAlignment?: number;
  cmdlineSize?: number;
  initrdAddrMax?: number;
  initSize?: number;
  prefAddress?: bigint;
  code32Start?: number;
}

/** A synthetic bzImage: setup sectors with a valid header, then a patterned protected-mode kernel. */
export function makeBzImage(o: BzOptions = {}): Uint8Array {
  const setupSects = o.setupSects ?? 4;
  const kernelSize = o.kernelSize ?? 0x4000;
  const fileSetup = setupSects === 0 ? 4 : setupSects;
  const b = new Uint8Array((fileSetup + 1) * 512 + kernelSize);
  const v = new DataView(b.buffer);
  b[0x1f1] = setupSects;
  v.setUint32(0x1f4, kernelSize / 16, true);
  v.setUint16(0x1fa, 0xffff, true);
  v.setUint16(0x1fe, 0xaa55, true);
  b[0x200] = 0xeb;
  b[0x201] = 0x6a; // header ends at 0x26c
  v.setUint32(0x202, 0x53726448, true);
  v.setUint16(0x206, o.version ?? 0x20f, true);
  b[0x211] = o.loadflags ?? 1;
  v.setUint32(0x214, o.code32Start ?? 0x100000, true);
  v.setUint32(0x22c, o.initrdAddrMax ?? 0x7fffffff, true);
  v.setUint32(0x230, o.kernelAlignment ?? 0x200000, true);
  b[0x234] = o.relocatable ?? 1;
  b[0x235] = 21;
  v.setUint16(0x236, o.xloadflags ?? 0x7f, true);
  v.setUint32(0x238, o.cmdlineSize ?? 2047, true);
  v.setBigUint64(0x258, o.prefAddress ?? 0x1000000n, true);
  v.setUint32(0x260, o.initSize ?? 0x100000, true);
  for (let i = (fileSetup + 1) * 512; i < b.length; i++) b[i] = (i * 7 + 3) & 0xff;
  return b;
}

export interface ElfSeg {
  type?: number;
  paddr: bigint;
  offset?: bigint;
  filesz: bigint;
  memsz: bigint;
  data?: Uint8Array;
}
export interface Note {
  name: string;
  type: number;
  desc: Uint8Array;
}

const align4 = (n: number): number => (n + 3) & ~3;

/** Encodes ELF notes (namesz, descsz, type, name, desc, 4-byte aligned). */
export function encodeNotes(notes: readonly Note[]): Uint8Array {
  const parts: number[] = [];
  for (const n of notes) {
    const name = [...n.name].map((c) => c.charCodeAt(0)).concat([0]);
    const hdr = new Uint8Array(12);
    const v = new DataView(hdr.buffer);
    v.setUint32(0, name.length, true);
    v.setUint32(4, n.desc.byteLength, true);
    v.setUint32(8, n.type, true);
    parts.push(...hdr, ...name, ...new Array(align4(name.length) - name.length).fill(0), ...n.desc, ...new Array(align4(n.desc.length) - n.desc.length).fill(0));
  }
  return Uint8Array.from(parts);
}

/** A synthetic ELF64 (or ELF32) x86 executable with the given segments and notes. */
export function makeElf(opts: { bits?: 32 | 64; entry?: bigint; segments: ElfSeg[]; notes?: Note[] }): Uint8Array {
  const w = (opts.bits ?? 64) === 64;
  const ehsize = w ? 64 : 52;
  const phent = w ? 56 : 32;
  const notes = opts.notes ? encodeNotes(opts.notes) : undefined;
  const phnum = opts.segments.length + (notes ? 1 : 0);
  let dataOff = ehsize + phent * phnum;
  const blobs: { off: number; data: Uint8Array }[] = [];
  const segs = opts.segments.map((s) => {
    const data = s.data ?? new Uint8Array(Number(s.filesz > 0x100000n ? 0n : s.filesz)).map((_, i) => (i * 13 + 1) & 0xff);
    const off = s.offset ?? BigInt(dataOff);
    if (s.offset === undefined) {
      blobs.push({ off: dataOff, data });
      dataOff += data.byteLength;
    }
    return { ...s, offset: off };
  });
  let noteOff = 0;
  if (notes) {
    noteOff = dataOff;
    blobs.push({ off: dataOff, data: notes });
    dataOff += notes.byteLength;
  }
  const b = new Uint8Array(dataOff);
  const v = new DataView(b.buffer);
  v.setUint32(0, 0x464c457f, true);
  b[4] = w ? 2 : 1;
  b[5] = 1;
  b[6] = 1;
  v.setUint16(16, 2, true);
  v.setUint16(18, w ? 62 : 3, true);
  v.setUint32(20, 1, true);
  // Default entry: the start of the first PT_LOAD (the loader refuses an entry outside every segment).
  const entry = opts.entry ?? opts.segments.find((s) => (s.type ?? 1) === 1)?.paddr ?? 0x100000n;
  if (w) {
    v.setBigUint64(24, entry, true);
    v.setBigUint64(32, BigInt(ehsize), true);
    v.setUint16(52, ehsize, true);
    v.setUint16(54, phent, true);
    v.setUint16(56, phnum, true);
  } else {
    v.setUint32(24, Number(entry), true);
    v.setUint32(28, ehsize, true);
    v.setUint16(40, ehsize, true);
    v.setUint16(42, phent, true);
    v.setUint16(44, phnum, true);
  }
  const all = [...segs.map((s) => ({ type: s.type ?? 1, ...s })), ...(notes ? [{ type: 4, paddr: 0n, offset: BigInt(noteOff), filesz: BigInt(notes.byteLength), memsz: BigInt(notes.byteLength) }] : [])];
  all.forEach((s, i) => {
    const o = ehsize + i * phent;
    v.setUint32(o, s.type, true);
    if (w) {
      v.setBigUint64(o + 8, s.offset, true);
      v.setBigUint64(o + 16, s.paddr, true);
      v.setBigUint64(o + 24, s.paddr, true);
      v.setBigUint64(o + 32, s.filesz, true);
      v.setBigUint64(o + 40, s.memsz, true);
    } else {
      v.setUint32(o + 4, Number(s.offset), true);
      v.setUint32(o + 8, Number(s.paddr), true);
      v.setUint32(o + 12, Number(s.paddr), true);
      v.setUint32(o + 16, Number(s.filesz), true);
      v.setUint32(o + 20, Number(s.memsz), true);
    }
  });
  for (const bl of blobs) b.set(bl.data, bl.off);
  return b;
}

/** A PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) with a `size`-byte descriptor. */
export function pvhNote(entry: number, size = 8): Note {
  const desc = new Uint8Array(size);
  if (size >= 4) new DataView(desc.buffer).setUint32(0, entry, true);
  return { name: "Xen", type: 18, desc };
}
