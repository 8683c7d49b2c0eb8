import { MAX_GUEST_ADDRESS, Reader, hex } from "./bytes.js";
import { LoaderError } from "./error.js";
import { commitWrites, type GuestWrite } from "./guest-writes.js";
import type { GuestMemory } from "./memory.js";
import { firstOverlap, overlaps } from "./ranges.js";

// ELF constants from the System V ABI (elf.h).
const PT_LOAD = 1;
const PT_NOTE = 4;
const EM_386 = 3;
const EM_X86_64 = 62;
const ET_EXEC = 2;
/** XEN_ELFNOTE_PHYS32_ENTRY, xen/include/public/elfnote.h: the 32-bit PVH entry point. */
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;

/** A loadable segment (PT_LOAD) as the loader uses it. */
export interface ElfSegment {
  /** Physical load address (`p_paddr`). */
  readonly paddr: number;
  /** Offset of the file bytes. */
  readonly offset: number;
  /** Bytes copied from the file. */
  readonly fileSize: number;
  /** Bytes occupied in memory (`memSize - fileSize` are zeroed). */
  readonly memSize: number;
}

/** Where an ELF kernel went and how to enter it. */
export interface ElfLoad {
  /** `e_entry` (for a Linux vmlinux, the physical address of startup_64). */
  readonly entry: number;
  /** The PVH 32-bit entry from XEN_ELFNOTE_PHYS32_ENTRY, if the image has one. */
  readonly pvhEntry: number | undefined;
  /** Lowest loaded address. */
  readonly start: number;
  /** First address after the highest segment. */
  readonly end: number;
}

/**
 * A parsed and validated ELF kernel (ELF64 x86-64 or ELF32 i386, little
 * endian, ET_EXEC), such as a Linux `vmlinux` or a PVH micro-guest.
 *
 * All 64-bit header values are checked as bigints before they become
 * numbers: offsets and sizes must lie inside the file, and addresses + sizes
 * inside the 2^52 guest address space.
 */
export class Elf {
  /** The whole file. */
  readonly bytes: Uint8Array;
  /** 64 for ELFCLASS64, 32 for ELFCLASS32. */
  readonly bits: 32 | 64;
  /** `e_entry`. */
  readonly entry: number;
  /** PT_LOAD segments with a non-zero memory size, in file order. */
  readonly segments: readonly ElfSegment[];
  /** The PVH entry from the XEN_ELFNOTE_PHYS32_ENTRY note, when present. */
  readonly pvhEntry: number | undefined;

  private constructor(bytes: Uint8Array, bits: 32 | 64, entry: number, segments: ElfSegment[], pvhEntry: number | undefined) {
    this.bytes = bytes;
    this.bits = bits;
    this.entry = entry;
    this.segments = segments;
    this.pvhEntry = pvhEntry;
  }

  /**
   * Parses and validates an ELF image.
   *
   * @throws LoaderError `Truncated`, `BadMagic` (no `\x7fELF`), `InvalidElf`
   * (wrong class, endianness, machine, type or header sizes; p_filesz >
   * p_memsz; overlapping segments; malformed note), `Overflow` (a 64-bit
   * offset + size or address + size that overflows the file or 2^52),
   * `PvhNoteSize` (a PHYS32_ENTRY note whose descriptor is not 4 or 8 bytes).
   */
  static parse(bytes: Uint8Array): Elf {
    const r = new Reader(bytes, "ELF image");
    r.need(0, 16, "e_ident");
    if (r.u32(0, "magic") !== 0x464c457f) throw new LoaderError("BadMagic", "not an ELF file: no \\x7fELF magic");
    const cls = r.u8(4, "EI_CLASS");
    if (cls !== 1 && cls !== 2) throw new LoaderError("InvalidElf", `EI_CLASS ${cls} is neither ELFCLASS32 nor ELFCLASS64`);
    const bits = cls === 2 ? 64 : 32;
    if (r.u8(5, "EI_DATA") !== 1) throw new LoaderError("InvalidElf", "the ELF image is not little-endian");
    const w = bits === 64;
    r.need(0, w ? 64 : 52, "the ELF header");
    const type = r.u16(16, "e_type");
    if (type !== ET_EXEC) throw new LoaderError("InvalidElf", `e_type ${type} is not ET_EXEC`);
    const machine = r.u16(18, "e_machine");
    if (machine !== (w ? EM_X86_64 : EM_386)) {
      throw new LoaderError("InvalidElf", `e_machine ${machine} is not ${w ? "x86-64 (62)" : "i386 (3)"}`);
    }
    const entryRaw = w ? r.u64(24, "e_entry") : BigInt(r.u32(24, "e_entry"));
    const phoff = w ? r.u64(32, "e_phoff") : BigInt(r.u32(28, "e_phoff"));
    const phentsize = r.u16(w ? 54 : 42, "e_phentsize");
    const phnum = r.u16(w ? 56 : 44, "e_phnum");
    const wantEnt = w ? 56 : 32;
    if (phentsize !== wantEnt) throw new LoaderError("InvalidElf", `e_phentsize ${phentsize} is not ${wantEnt}`);
    if (phnum === 0) throw new LoaderError("InvalidElf", "the ELF image has no program headers");
    const fileLen = BigInt(bytes.byteLength);
    if (phoff + BigInt(phnum * phentsize) > fileLen) {
      throw new LoaderError(phoff > fileLen ? "Overflow" : "Truncated", `program headers at ${hex(phoff)} (${phnum} × ${phentsize}) run past the end of the file`);
    }
    const entry = toAddr(entryRaw, "e_entry");
    const segments: ElfSegment[] = [];
    let pvhEntry: number | undefined;
    // PT_NOTE walks are bounded: a repeated (offset, size) pair is walked once, and the
    // bytes walked over all PT_NOTE headers may not exceed the file (issue 14: 65535
    // headers over one block of notes took 27 s for a 3.7 MB file).
    const notesSeen = new Set<string>();
    let noteBytes = 0n;
    for (let i = 0; i < phnum; i++) {
      const o = Number(phoff) + i * phentsize;
      const ptype = r.u32(o, "p_type");
      const offset = w ? r.u64(o + 8, "p_offset") : BigInt(r.u32(o + 4, "p_offset"));
      const paddr = w ? r.u64(o + 24, "p_paddr") : BigInt(r.u32(o + 12, "p_paddr"));
      const filesz = w ? r.u64(o + 32, "p_filesz") : BigInt(r.u32(o + 16, "p_filesz"));
      const memsz = w ? r.u64(o + 40, "p_memsz") : BigInt(r.u32(o + 20, "p_memsz"));
      if (ptype !== PT_LOAD && ptype !== PT_NOTE) continue;
      if (offset + filesz > fileLen) {
        throw new LoaderError(
          offset + filesz >= 1n << 64n || offset > fileLen ? "Overflow" : "Truncated",
          `program header ${i}: ${filesz} bytes at file offset ${hex(offset)} run past the end of the file (${bytes.byteLength} bytes)`,
        );
      }
      if (ptype === PT_NOTE) {
        const key = `${offset}:${filesz}`;
        if (notesSeen.has(key)) continue;
        notesSeen.add(key);
        noteBytes += filesz;
        if (noteBytes > fileLen) {
          throw new LoaderError("InvalidElf", `program header ${i}: the PT_NOTE segments cover more bytes (${noteBytes}) than the file has (${bytes.byteLength}): they overlap`);
        }
        const found = findPvhEntry(r, Number(offset), Number(filesz));
        if (found !== undefined) pvhEntry = found;
        continue;
      }
      if (memsz === 0n && filesz === 0n) continue;
      if (filesz > memsz) throw new LoaderError("InvalidElf", `program header ${i}: p_filesz ${hex(filesz)} exceeds p_memsz ${hex(memsz)}`);
      if (paddr + memsz > BigInt(MAX_GUEST_ADDRESS)) {
        throw new LoaderError("Overflow", `program header ${i}: p_paddr ${hex(paddr)} + p_memsz ${hex(memsz)} exceeds the 2^52 guest address space`);
      }
      // Exact as numbers: paddr + memsz ≤ 2^52 was checked above.
      if (overlaps(Number(paddr), Number(paddr + memsz), LEGACY_HOLE_START, LEGACY_HOLE_END)) {
        throw new LoaderError(
          "OutOfGuestMemory",
          `program header ${i}: [${hex(paddr)}, +${hex(memsz)}) overlaps [0xa0000, 0x100000), which the e820 map reserves (VGA and BIOS)`,
        );
      }
      segments.push({ paddr: Number(paddr), offset: Number(offset), fileSize: Number(filesz), memSize: Number(memsz) });
    }
    if (segments.length === 0) throw new LoaderError("InvalidElf", "the ELF image has no loadable segment");
    // The entry points must be code the loader loads (entry 0 or 0xfee00000 were accepted).
    const inSegment = (a: number): boolean => segments.some((s) => a >= s.paddr && a < s.paddr + s.memSize);
    if (!inSegment(entry)) throw new LoaderError("InvalidElf", `e_entry ${hex(entry)} is not inside a PT_LOAD segment`);
    if (pvhEntry !== undefined && !inSegment(pvhEntry)) {
      throw new LoaderError("InvalidElf", `the PVH entry ${hex(pvhEntry)} is not inside a PT_LOAD segment`);
    }
    const clash = firstOverlap(segments, (s) => s.paddr, (s) => s.paddr + s.memSize);
    if (clash) throw new LoaderError("InvalidElf", `segments at ${hex(clash[0].paddr)} and ${hex(clash[1].paddr)} overlap`);
    return new Elf(bytes, bits, entry, segments, pvhEntry);
  }

  /** The writes that load every segment (file bytes, then zeroes up to p_memsz). */
  plan(): { load: ElfLoad; writes: GuestWrite[] } {
    const writes = this.segments.map((s, i) => ({
      addr: s.paddr,
      data: this.bytes.subarray(s.offset, s.offset + s.fileSize),
      zeroFill: s.memSize - s.fileSize,
      what: `ELF segment ${i}`,
    }));
    const start = this.segments.reduce((m, s) => Math.min(m, s.paddr), Infinity);
    const end = this.segments.reduce((m, s) => Math.max(m, s.paddr + s.memSize), 0);
    return { load: { entry: this.entry, pvhEntry: this.pvhEntry, start, end }, writes };
  }

  /**
   * Validates, then loads every PT_LOAD segment at its physical address.
   *
   * @throws LoaderError `OutOfGuestMemory` / `InMmioHole` when a segment does
   * not fit; memory is then unchanged.
   */
  load(mem: GuestMemory): ElfLoad {
    const { load, writes } = this.plan();
    commitWrites(mem, writes);
    return load;
  }
}

function toAddr(v: bigint, field: string): number {
  if (v >= BigInt(MAX_GUEST_ADDRESS)) throw new LoaderError("Overflow", `${field} ${hex(v)} exceeds the 2^52 guest address space`);
  return Number(v);
}

/** The legacy VGA/BIOS range the e820 map does not give as RAM. */
const LEGACY_HOLE_START = 0xa0000;
const LEGACY_HOLE_END = 0x100000;

/** Rounds up to a multiple of 4 (arithmetic, not `& ~3`, which would wrap above 2^31). */
const align4 = (n: number): number => Math.ceil(n / 4) * 4;

/** Walks the notes in `[off, off + len)` and returns the PVH entry if there is one. */
function findPvhEntry(r: Reader, off: number, len: number): number | undefined {
  let p = off;
  const end = off + len;
  let found: number | undefined;
  while (p + 12 <= end) {
    const namesz = r.u32(p, "n_namesz");
    const descsz = r.u32(p + 4, "n_descsz");
    const type = r.u32(p + 8, "n_type");
    const nameOff = p + 12;
    const descOff = nameOff + align4(namesz);
    const next = descOff + align4(descsz);
    if (namesz > len || descsz > len || next > end) {
      throw new LoaderError("InvalidElf", `an ELF note at file offset ${hex(p)} runs past the end of its PT_NOTE segment`);
    }
    const isXen = namesz === 4 && r.u32(nameOff, "note name") === 0x006e6558; // "Xen\0"
    if (isXen && type === XEN_ELFNOTE_PHYS32_ENTRY) {
      // Linux emits the entry as a pointer-sized value (.quad on x86-64);
      // other PVH kernels use a 32-bit .long. Both are accepted.
      if (descsz !== 4 && descsz !== 8) {
        throw new LoaderError("PvhNoteSize", `the PVH entry note has a ${descsz}-byte descriptor; expected 4 or 8`);
      }
      const lo = r.u32(descOff, "PVH entry");
      const hi = descsz === 8 ? r.u32(descOff + 4, "PVH entry") : 0;
      if (hi !== 0) throw new LoaderError("Overflow", `the PVH entry ${hex((BigInt(hi) << 32n) | BigInt(lo))} is above 4 GiB`);
      found = lo;
    }
    p = next;
  }
  return found;
}
