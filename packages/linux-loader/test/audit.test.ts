// Adversarial audit: hand-crafted hostile images and caller inputs. Each case
// must end in a LoaderError (never another exception) and leave guest memory
// exactly as it was.
import { describe, expect, it } from "vitest";
import { BootParams, BzImage, Elf, LoaderError, acpi, loadLinux, mptable, planLinuxBoot, pvh, type E820Entry, type LinuxBootOptions } from "../src/index.js";
import { makeBzImage, makeElf, memHash, memory, pvhNote } from "./fixtures.js";

const MiB = 1 << 20;

/** Runs `f`, expects a LoaderError (of `code` if given), and returns it. */
function loaderError(f: () => unknown, code?: string): LoaderError {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err, "expected a LoaderError").toBeInstanceOf(LoaderError);
  if (code !== undefined) expect((err as LoaderError).code).toBe(code);
  expect((err as LoaderError).message.length).toBeGreaterThan(10);
  return err as LoaderError;
}

/** loadLinux must refuse with a LoaderError and write nothing. */
function refusesUntouched(opts: LinuxBootOptions, code?: string, size = 32 * MiB): LoaderError {
  const mem = memory(size);
  const before = memHash(mem);
  const e = loaderError(() => loadLinux(mem, opts), code);
  expect(memHash(mem)).toBe(before);
  return e;
}

function patch(b: Uint8Array, f: (v: DataView) => void): Uint8Array {
  const c = b.slice();
  f(new DataView(c.buffer));
  return c;
}

const okElf = (): Uint8Array => makeElf({ segments: [{ paddr: 0x100000n, filesz: 0x100n, memsz: 0x200n }] });

describe("hostile ELF images", () => {
  it("e_phnum huge, e_phentsize wrong, e_phoff past EOF", () => {
    refusesUntouched({ kernel: patch(okElf(), (v) => v.setUint16(56, 0xffff, true)) }, "Truncated");
    refusesUntouched({ kernel: patch(okElf(), (v) => v.setUint16(54, 32, true)) }, "InvalidElf");
    refusesUntouched({ kernel: patch(okElf(), (v) => v.setBigUint64(32, 0xffff_ffff_ffff_fff0n, true)) }, "Overflow");
    refusesUntouched({ kernel: patch(okElf(), (v) => v.setBigUint64(32, 1n << 62n, true)) }, "Overflow");
  });

  it("p_offset + p_filesz past EOF or wrapping, p_filesz > p_memsz, p_memsz 2^63, p_paddr + p_memsz wrapping 2^64", () => {
    const seg = (s: { paddr?: bigint; offset?: bigint; filesz?: bigint; memsz?: bigint }): Uint8Array =>
      makeElf({ segments: [{ paddr: s.paddr ?? 0x100000n, filesz: s.filesz ?? 0x10n, memsz: s.memsz ?? 0x10n, ...(s.offset === undefined ? {} : { offset: s.offset }) }] });
    refusesUntouched({ kernel: seg({ offset: 0x1000n, filesz: 0x10n }) });
    refusesUntouched({ kernel: seg({ offset: 0xffff_ffff_ffff_fff0n, filesz: 0x20n, memsz: 0x20n }) }, "Overflow");
    refusesUntouched({ kernel: patch(seg({}), (v) => v.setBigUint64(64 + 40, 0x8n, true)) }, "InvalidElf");
    refusesUntouched({ kernel: patch(seg({}), (v) => v.setBigUint64(64 + 40, 1n << 63n, true)) }, "Overflow");
    refusesUntouched({ kernel: patch(seg({}), (v) => v.setBigUint64(64 + 24, 0xffff_ffff_ffff_f000n, true)) }, "Overflow");
    refusesUntouched({ kernel: patch(seg({}), (v) => v.setBigUint64(64 + 40, 0xffff_ffff_ffff_ffffn, true)) }, "Overflow");
  });

  it("overlapping PT_LOADs", () => {
    const k = makeElf({
      segments: [
        { paddr: 0x100000n, filesz: 0x100n, memsz: 0x2000n },
        { paddr: 0x101000n, filesz: 0x100n, memsz: 0x100n },
      ],
    });
    refusesUntouched({ kernel: k }, "InvalidElf");
  });

  it("65535 PT_NOTE headers over one 64 KiB block of notes parse in bounded time (was ~30 s)", () => {
    const ehsize = 64;
    const phnum = 65535;
    const blockOff = BigInt(ehsize + 56 * phnum); // the PT_LOAD's zeroed data: 5461 empty 12-byte notes
    const note = { type: 4, paddr: 0n, offset: blockOff, filesz: 65532n, memsz: 0n, data: new Uint8Array(0) };
    const k = makeElf({ segments: [{ paddr: 0x100000n, filesz: 65536n, memsz: 65536n, data: new Uint8Array(65536) }, ...Array.from({ length: phnum - 1 }, () => note)] });
    expect(k.byteLength).toBeGreaterThan(3_600_000);
    const t0 = performance.now();
    const e = Elf.parse(k);
    const ms = performance.now() - t0;
    expect(e.segments).toHaveLength(1);
    expect(ms).toBeLessThan(1500);
    // Distinct but overlapping PT_NOTE ranges that add up past the file length are refused.
    const small = makeElf({
      segments: [
        { paddr: 0x100000n, filesz: 4096n, memsz: 4096n, data: new Uint8Array(4096) },
        { type: 4, paddr: 0n, offset: BigInt(ehsize + 56 * 3), filesz: 4092n, memsz: 0n },
        { type: 4, paddr: 0n, offset: BigInt(ehsize + 56 * 3 + 12), filesz: 4080n, memsz: 0n },
      ],
    });
    expect(loaderError(() => Elf.parse(small), "InvalidElf").message).toMatch(/PT_NOTE/);
  });

  it("PT_NOTE with namesz / descsz near 2^32, and PVH notes of size 4, 8 and others", () => {
    const noteElf = (namesz: number, descsz: number): Uint8Array => {
      const k = makeElf({ segments: [{ paddr: 0x100000n, filesz: 0x10n, memsz: 0x10n }], notes: [pvhNote(0x100000, 8)] });
      // The note header sits at the note segment's offset (second program header).
      const v = new DataView(k.buffer);
      const noteOff = Number(v.getBigUint64(64 + 56 + 8, true));
      v.setUint32(noteOff, namesz, true);
      v.setUint32(noteOff + 4, descsz, true);
      return k;
    };
    for (const [n, d] of [[0xffff_ffff, 8], [4, 0xffff_ffff], [0xffff_fffd, 0xffff_fffd], [4, 0xffff_fffc]] as const) {
      refusesUntouched({ kernel: noteElf(n, d) }, "InvalidElf");
    }
    const mem = memory(32 * MiB);
    for (const size of [4, 8]) {
      const k = makeElf({ segments: [{ paddr: 0x100000n, filesz: 0x10n, memsz: 0x10n }], notes: [pvhNote(0x100000, size)] });
      expect(Elf.parse(k).pvhEntry).toBe(0x100000);
      expect(loadLinux(mem, { kernel: k }).protocol).toBe("pvh");
    }
    for (const size of [0, 2, 6, 12, 16]) {
      const k = makeElf({ segments: [{ paddr: 0x100000n, filesz: 0x10n, memsz: 0x10n }], notes: [pvhNote(0x100000, size)] });
      refusesUntouched({ kernel: k }, "PvhNoteSize");
    }
  });

  it("ELF32 with a 64-bit machine, big-endian, non-x86 machine, wrong class", () => {
    refusesUntouched({ kernel: patch(okElf(), (v) => v.setUint8(5, 2)) }, "InvalidElf");
    refusesUntouched({ kernel: patch(okElf(), (v) => v.setUint16(18, 183, true)) }, "InvalidElf");
    refusesUntouched({ kernel: patch(okElf(), (v) => v.setUint8(4, 3)) }, "InvalidElf");
    refusesUntouched({ kernel: patch(okElf(), (v) => v.setUint8(4, 1)) });
    const e32 = makeElf({ bits: 32, segments: [{ paddr: 0x100000n, filesz: 0x10n, memsz: 0x10n }] });
    refusesUntouched({ kernel: patch(e32, (v) => v.setUint16(18, 62, true)) }, "InvalidElf");
  });

  it("a 64-bit-protocol boot of an ELF32 without a PVH note is refused (32-bit code cannot run at a long-mode entry)", () => {
    const e32 = makeElf({ bits: 32, segments: [{ paddr: 0x100000n, filesz: 0x10n, memsz: 0x10n }] });
    refusesUntouched({ kernel: e32 }, "Unsupported");
    const e32pvh = makeElf({ bits: 32, segments: [{ paddr: 0x100000n, filesz: 0x10n, memsz: 0x10n }], notes: [pvhNote(0x100000, 4)] });
    refusesUntouched({ kernel: e32pvh, protocol: "linux64" }, "Unsupported");
  });

  it("every truncation of a valid ELF is a LoaderError", () => {
    const k = makeElf({ segments: [{ paddr: 0x100000n, filesz: 0x40n, memsz: 0x80n }], notes: [pvhNote(0x100000, 8)] });
    const mem = memory(4 * MiB);
    for (let n = 0; n < k.byteLength; n++) loaderError(() => planLinuxBoot(mem, { kernel: k.subarray(0, n) }));
  });
});

describe("hostile bzImages", () => {
  it("setup_sects 0 and 255, syssize lying", () => {
    const mem = memory(32 * MiB);
    expect(BzImage.parse(makeBzImage({ setupSects: 0 })).setupSects).toBe(4);
    loadLinux(mem, { kernel: makeBzImage({ setupSects: 0 }) });
    refusesUntouched({ kernel: patch(makeBzImage(), (v) => v.setUint8(0x1f1, 255)) }, "Truncated");
    refusesUntouched({ kernel: patch(makeBzImage(), (v) => v.setUint32(0x1f4, 0xffff_ffff, true)) }, "Truncated");
  });

  it("a header claiming protocol 2.15, truncated right after the header", () => {
    const b = makeBzImage();
    refusesUntouched({ kernel: b.subarray(0, 0x26c) }, "Truncated");
    const mem = memory(4 * MiB);
    for (let n = 0; n < 0x26c; n++) loaderError(() => planLinuxBoot(mem, { kernel: b.subarray(0, n) }));
    // The kernel is there but shorter than syssize says.
    refusesUntouched({ kernel: b.subarray(0, b.byteLength - 1) }, "Truncated");
  });

  it("init_size huge, kernel_alignment not a power of two or huge, pref_address huge, cmdline_size 0", () => {
    refusesUntouched({ kernel: makeBzImage({ initSize: 0xffff_ffff }) }, "OutOfGuestMemory");
    refusesUntouched({ kernel: makeBzImage({ kernelAlignment: 0x300000 }) }, "InvalidHeader");
    refusesUntouched({ kernel: makeBzImage({ kernelAlignment: 0 }) }, "InvalidHeader");
    refusesUntouched({ kernel: makeBzImage({ kernelAlignment: 0x8000_0000 }) }, "OutOfGuestMemory");
    refusesUntouched({ kernel: makeBzImage({ prefAddress: 0xffff_ffff_ffff_ffffn }) }, "OutOfGuestMemory");
    refusesUntouched({ kernel: makeBzImage({ cmdlineSize: 0 }) }, "InvalidHeader");
  });

  it("a non-relocatable kernel whose pref_address would put its decompression area over the boot structures below 1 MiB", () => {
    // It would decompress over the zero page, page tables and GDT it is about to read.
    refusesUntouched({ kernel: makeBzImage({ relocatable: 0, prefAddress: 0x1000n }) }, "InvalidHeader");
    refusesUntouched({ kernel: makeBzImage({ relocatable: 0, prefAddress: 0x80000n }) }, "InvalidHeader");
    const mem = memory(32 * MiB);
    expect(loadLinux(mem, { kernel: makeBzImage({ relocatable: 0, prefAddress: 0x100000n, initSize: 0x100000 }) }).entry).toBe(0x100200);
  });

  it("initrd_addr_max below the kernel, or 0", () => {
    const initrd = new Uint8Array(0x10000).fill(1);
    refusesUntouched({ kernel: makeBzImage({ initrdAddrMax: 0x80000 }), initrd }, "InitrdTooLarge");
    refusesUntouched({ kernel: makeBzImage({ initrdAddrMax: 0 }), initrd }, "InitrdTooLarge");
  });

  it("cmdline_size larger than the 64 KiB the layout gives the command line", () => {
    const long = "a".repeat(0x10000);
    const e = refusesUntouched({ kernel: makeBzImage({ cmdlineSize: 0xffff_ffff }), cmdline: long }, "CmdlineTooLong");
    expect(e.message).toMatch(/65535/);
  });
});

describe("hostile command lines", () => {
  const k = (): Uint8Array => makeBzImage({ cmdlineSize: 16 });
  it("NUL, control characters and non-ASCII", () => {
    refusesUntouched({ kernel: k(), cmdline: "a\0b" }, "CmdlineInvalid");
    refusesUntouched({ kernel: k(), cmdline: "a\nb" }, "CmdlineInvalid");
    refusesUntouched({ kernel: k(), cmdline: "caf\u00e9" }, "CmdlineInvalid");
    refusesUntouched({ kernel: k(), cmdline: "\u{1f600}" }, "CmdlineInvalid");
    refusesUntouched({ kernel: k(), cmdline: "a=\"b" }, "CmdlineInvalid");
  });
  it("an init argument with a double quote is refused when added (it would not round-trip through parse)", async () => {
    const { Cmdline } = await import("../src/index.js");
    const c = new Cmdline(2047).add("console", "ttyS0");
    expect(() => c.addInitArg('a"b')).toThrow(expect.objectContaining({ code: "CmdlineInvalid" }) as Error);
    expect(c.toString()).toBe("console=ttyS0");
    c.addInitArg("single");
    expect(Cmdline.parse(c.toString(), 2047).toString()).toBe(c.toString());
  });
  it("quoted init arguments keep their quotes: the guest's init gets the same argv", async () => {
    const { Cmdline } = await import("../src/index.js");
    const line = 'console=ttyS0 -- "hello world" x ""';
    expect(Cmdline.parse(line, 2047).toString()).toBe(line);
    const mem = memory(32 * MiB);
    const b = loadLinux(mem, { kernel: makeBzImage(), cmdline: line });
    const got = new Uint8Array(line.length);
    mem.read(b.cmdlineAddr, got);
    expect(Buffer.from(got).toString("latin1")).toBe(line);
  });
  it("a quote inside a word (which the kernel keeps in the value) is refused, not silently re-quoted", async () => {
    const { Cmdline } = await import("../src/index.js");
    for (const bad of ['a=b"c d"', 'a"b"', 'a="b"c', 'a=b="c d"', '"a"=b', '-- x"y z"']) {
      refusesUntouched({ kernel: makeBzImage(), cmdline: bad }, "CmdlineInvalid");
    }
    for (const good of ['a="b c"', '"a=b c"', 'a=""', '-- "x y"', 'x="" y']) {
      expect(() => Cmdline.parse(good, 2047), good).not.toThrow();
    }
    expect(Cmdline.parse('"a=b c"', 2047).get("a")).toBe("b c");
  });
  it("exactly the limit, and one over", () => {
    const mem = memory(32 * MiB);
    const b = loadLinux(mem, { kernel: k(), cmdline: "x".repeat(16) });
    expect(b.cmdline.length).toBe(16);
    const got = new Uint8Array(17);
    mem.read(b.cmdlineAddr, got);
    expect(got[16]).toBe(0);
    refusesUntouched({ kernel: k(), cmdline: "x".repeat(17) }, "CmdlineTooLong");
  });
});

describe("hostile table inputs", () => {
  const kernel = (): Uint8Array => makeBzImage();
  it("cpus 0, NaN, negative, fractional", () => {
    for (const cpus of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) refusesUntouched({ kernel: kernel(), cpus }, "InvalidArgument");
  });
  it("cpus 255, 256, 1000 with ACPI (no MP table above 32)", () => {
    const mem = memory(32 * MiB);
    for (const cpus of [255, 256, 1000]) expect(loadLinux(mem, { kernel: kernel(), cpus }).rsdpAddr).toBe(0xe0000);
    refusesUntouched({ kernel: kernel(), cpus: 255, mptable: true }, "TooManyEntries");
    refusesUntouched({ kernel: kernel(), cpus: 38, mptable: true }, "TooManyEntries");
  });
  it("a huge cpu count is refused at once, not after building millions of MADT entries", () => {
    const t0 = Date.now();
    loaderError(() => acpi.buildAcpiTables({ cpus: 0xffff_ffff }), "TooManyEntries");
    refusesUntouched({ kernel: kernel(), cpus: 2 ** 31 }, "TooManyEntries");
    expect(Date.now() - t0).toBeLessThan(1000);
  });
  it("mptable with cpus out of range", () => {
    for (const cpus of [0, -1, Number.NaN]) loaderError(() => mptable.build({ cpus }), "InvalidArgument");
    loaderError(() => mptable.build({ cpus: 1000 }), "TooManyEntries");
    // The floating pointer holds a 32-bit physical address of the table.
    for (const addr of [2 ** 33, -16, 1.5, Number.NaN, 0xffff_fff0]) loaderError(() => mptable.build({ cpus: 1, addr }), "InvalidArgument");
  });
  it("virtio-mmio devices: overlapping windows, IRQs outside the IOAPIC, windows outside the MMIO hole", () => {
    const d = (addr: number, irq: number, size?: number) => ({ addr, irq, ...(size === undefined ? {} : { size }) });
    refusesUntouched({ kernel: kernel(), virtioMmio: [d(0xd000_0000, 5), d(0xd000_0800, 6)] }, "InvalidArgument");
    refusesUntouched({ kernel: kernel(), virtioMmio: [d(0xd000_0000, 5, 0x2000), d(0xd000_1000, 6)] }, "InvalidArgument");
    refusesUntouched({ kernel: kernel(), virtioMmio: [d(0xd000_0000, 24)] }, "InvalidArgument");
    refusesUntouched({ kernel: kernel(), virtioMmio: [d(0xd000_0000, -1)] }, "InvalidArgument");
    refusesUntouched({ kernel: kernel(), virtioMmio: [d(0xd000_0000, 1.5)] }, "InvalidArgument");
    refusesUntouched({ kernel: kernel(), virtioMmio: [d(0xd000_0000, 5, 0)] }, "InvalidArgument");
    refusesUntouched({ kernel: kernel(), virtioMmio: [d(0x10_0000, 5)] }, "InvalidArgument");
    refusesUntouched({ kernel: kernel(), virtioMmio: [d(0xfec0_0000, 5)] }, "InvalidArgument");
    refusesUntouched({ kernel: kernel(), virtioMmio: [d(0x1_0000_0000, 5)] }, "InvalidArgument");
    refusesUntouched({ kernel: kernel(), virtioMmio: [d(Number.NaN, 5)] }, "InvalidArgument");
    // Same with ACPI off (command line only).
    refusesUntouched({ kernel: kernel(), acpi: false, virtioMmio: [d(0xd000_0000, 5), d(0xd000_0800, 6)] }, "InvalidArgument");
    refusesUntouched({ kernel: kernel(), acpi: false, virtioMmio: [d(0xd000_0000, 99)] }, "InvalidArgument");
    // The table builder alone takes any 32-bit window and GSI (QEMU microvm's are at 0xfeb0xxxx, GSI 45+), but not overlaps.
    acpi.buildAcpiTables({ cpus: 1, virtioMmio: [d(0xfeb0_2a00, 45, 0x200), d(0xfeb0_2c00, 46, 0x200)] });
    loaderError(() => acpi.buildAcpiTables({ cpus: 1, virtioMmio: [d(0xfeb0_2a00, 45, 0x400), d(0xfeb0_2c00, 46, 0x200)] }), "InvalidArgument");
    loaderError(() => acpi.buildAcpiTables({ cpus: 1, virtioMmio: [d(0xfee0_0000, 5)] }), "InvalidArgument");
    // _UIDs that are not integers (BigInt() of them used to throw a RangeError).
    for (const uid of [1.5, Number.NaN, -1, Number.POSITIVE_INFINITY]) {
      refusesUntouched({ kernel: kernel(), virtioMmio: [{ addr: 0xd000_0000, irq: 5, uid }] }, "InvalidArgument");
      loaderError(() => acpi.aml.integer(uid), "InvalidArgument");
    }
    // Shared IRQs are legal (virtio-mmio requests IRQF_SHARED).
    const mem = memory(32 * MiB);
    loadLinux(mem, { kernel: kernel(), virtioMmio: [d(0xd000_0000, 5), d(0xd000_1000, 5)] });
  });
});

describe("memory sizes", () => {
  it("2 MiB, exactly the MMIO hole start, just above 4 GiB", () => {
    const elf = makeElf({ segments: [{ paddr: 0x100000n, filesz: 0x100n, memsz: 0x100n }], notes: [pvhNote(0x100000)] });
    for (const size of [2 * MiB, 0xc000_0000, 0x1_0000_0000 + 4096, 0x1_0000_0000 + 2 * MiB]) {
      const mem = memory(size);
      const b = loadLinux(mem, { kernel: elf, initrd: new Uint8Array(8192).fill(7) });
      expect(b.initrd!.addr + b.initrd!.size).toBeLessThanOrEqual(Math.min(size, 0xc000_0000));
      const ram = b.e820.filter((e) => e.type === 1).reduce((n, e) => n + e.size, 0);
      expect(ram).toBeLessThanOrEqual(size);
    }
  });
  it("a bzImage whose init_size does not fit a 2 MiB guest", () => {
    refusesUntouched({ kernel: makeBzImage({ initSize: 0x200000 }) }, "OutOfGuestMemory", 2 * MiB);
  });
});

describe("public builders with numbers that are not integers", () => {
  it("BootParams.setField / setE820 and pvh.buildStartInfo: InvalidArgument, never a RangeError", () => {
    const bp = BootParams.minimal();
    for (const v of [1.5, Number.NaN, -1, Number.POSITIVE_INFINITY]) loaderError(() => bp.setField("cmdline_size", v), "InvalidArgument");
    const bad: E820Entry[][] = [
      [{ addr: 0.5, size: 4096, type: 1 }],
      [{ addr: 0, size: Number.NaN, type: 1 }],
      [{ addr: -4096, size: 4096, type: 1 }],
      [{ addr: 0, size: 2 ** 60, type: 1 }],
    ];
    const before = bp.bytes.slice();
    for (const map of bad) {
      loaderError(() => bp.setE820(map), "InvalidArgument");
      loaderError(
        () => pvh.buildStartInfo({ cmdlineAddr: 0, rsdpAddr: 0, modlistAddr: 0, modules: [], memmapAddr: 0x6100, memmap: map }),
        "InvalidArgument",
      );
    }
    expect(bp.bytes).toEqual(before);
  });
});
