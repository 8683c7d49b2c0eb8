// Regression tests for linux-loader defects of issue 14 (items 15, 16).
import { describe, expect, it } from "vitest";
import { BootParams, BzImage, Elf, LoaderError } from "../src/index.js";
import { makeBzImage, makeElf, pvhNote } from "./fixtures.js";

function code(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(LoaderError);
    return (e as LoaderError).code;
  }
  return "no error";
}

const seg = { paddr: 0x200000n, filesz: 0x100n, memsz: 0x200n };

describe("ELF entry points and segments (item 15)", () => {
  it("e_entry outside every PT_LOAD (0, 0xfee00000, just past the end) is refused", () => {
    for (const entry of [0n, 0xfee00000n, 0x200200n]) {
      expect(code(() => Elf.parse(makeElf({ entry, segments: [seg] }))), entry.toString(16)).toBe("InvalidElf");
    }
    expect(Elf.parse(makeElf({ entry: 0x2001ffn, segments: [seg] })).entry).toBe(0x2001ff);
  });

  it("a PVH entry outside every PT_LOAD is refused", () => {
    expect(code(() => Elf.parse(makeElf({ segments: [seg], notes: [pvhNote(0x100)] })))).toBe("InvalidElf");
    expect(Elf.parse(makeElf({ segments: [seg], notes: [pvhNote(0x200010)] })).pvhEntry).toBe(0x200010);
  });

  it("segments into [0xa0000, 0x100000) are refused (the e820 map has no RAM there)", () => {
    for (const paddr of [0xa0000n, 0xfff00n, 0x9ff00n]) {
      expect(code(() => Elf.parse(makeElf({ segments: [{ paddr, filesz: 0x10n, memsz: 0x200n }] }))), paddr.toString(16)).toBe("OutOfGuestMemory");
    }
    expect(Elf.parse(makeElf({ segments: [{ paddr: 0x9fe00n, filesz: 0x10n, memsz: 0x200n }] })).segments).toHaveLength(1);
  });

  it("p_memsz 0 with p_filesz > 0 is an error, not a silently dropped segment", () => {
    expect(code(() => Elf.parse(makeElf({ segments: [seg, { paddr: 0x300000n, filesz: 0x10n, memsz: 0n }] })))).toBe("InvalidElf");
  });
});

describe("the zero page does not inherit loader-owned fields (item 16)", () => {
  it("ramdisk_image/size, setup_data, hardware_subarch(_data) and cmd_line_ptr from the file are zeroed", () => {
    const img = makeBzImage();
    const v = new DataView(img.buffer);
    v.setUint32(0x218, 0x1234000, true); // ramdisk_image
    v.setUint32(0x21c, 0x1000, true); // ramdisk_size
    v.setUint32(0x228, 0x20000, true); // cmd_line_ptr
    v.setUint32(0x23c, 2, true); // hardware_subarch = Xen
    v.setBigUint64(0x240, 0x5000n, true); // hardware_subarch_data
    v.setBigUint64(0x250, 0x6000n, true); // setup_data
    const h = BootParams.fromBzImage(BzImage.parse(img)).header;
    expect({
      ramdisk_image: h.ramdisk_image, ramdisk_size: h.ramdisk_size, cmd_line_ptr: h.cmd_line_ptr,
      hardware_subarch: h.hardware_subarch, hardware_subarch_data: h.hardware_subarch_data, setup_data: h.setup_data,
    }).toEqual({ ramdisk_image: 0, ramdisk_size: 0, cmd_line_ptr: 0, hardware_subarch: 0, hardware_subarch_data: 0n, setup_data: 0n });
  });
});
