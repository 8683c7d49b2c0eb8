import { describe, expect, it } from "vitest";
import { makeBzImage } from "../test/fixtures.js";
import { BootParams, ZP } from "./boot-params.js";
import { BzImage } from "./bzimage.js";
import { E820Type } from "./e820.js";
import { HDR } from "./setup-header.js";

describe("BootParams", () => {
  it("copies the setup header to 0x1f1 and marks the loader", () => {
    const img = makeBzImage();
    const bp = BootParams.fromBzImage(BzImage.parse(img));
    expect(bp.bytes.subarray(0x1f1, 0x210)).toEqual(img.subarray(0x1f1, 0x210));
    expect(bp.bytes.subarray(0x212, 0x26c)).toEqual(img.subarray(0x212, 0x26c));
    expect(bp.header.type_of_loader).toBe(0xff);
    expect(bp.header.loadflags & 1).toBe(1);
    expect(bp.bytes.subarray(0x26c).every((b) => b === 0)).toBe(true);
  });

  it("splits 64-bit addresses into the low field and the ext_ field", () => {
    const bp = BootParams.minimal().setCmdline(0x1_2345_6000).setRamdisk(0x2_0000_1000, 0x1_0000_0010).setAcpiRsdp(0xe0000);
    const v = new DataView(bp.bytes.buffer);
    expect(v.getUint32(HDR.cmd_line_ptr, true)).toBe(0x2345_6000);
    expect(v.getUint32(ZP.ext_cmd_line_ptr, true)).toBe(1);
    expect(v.getUint32(HDR.ramdisk_image, true)).toBe(0x1000);
    expect(v.getUint32(ZP.ext_ramdisk_image, true)).toBe(2);
    expect(v.getUint32(HDR.ramdisk_size, true)).toBe(0x10);
    expect(v.getUint32(ZP.ext_ramdisk_size, true)).toBe(1);
    expect(v.getBigUint64(ZP.acpi_rsdp_addr, true)).toBe(0xe0000n);
    expect(bp.cmdlineAddr).toBe(0x1_2345_6000);
  });

  it("writes the e820 table as 20-byte entries and reads it back", () => {
    const map = [
      { addr: 0, size: 0x9fc00, type: E820Type.Ram },
      { addr: 0x1_0000_0000, size: 0x4000_0000, type: E820Type.Ram },
    ];
    const bp = BootParams.minimal().setE820(map);
    expect(bp.bytes[ZP.e820_entries]).toBe(2);
    expect(new DataView(bp.bytes.buffer).getBigUint64(ZP.e820_table + 20, true)).toBe(0x1_0000_0000n);
    expect(BootParams.from(bp.bytes).e820).toEqual(map);
    expect(() => bp.setE820(Array(129).fill(map[0]))).toThrow(expect.objectContaining({ code: "TooManyEntries" }));
  });

  it("minimal() carries what the kernel reads on the vmlinux path", () => {
    const h = BootParams.minimal().header;
    expect(h).toMatchObject({ boot_flag: 0xaa55, header: 0x53726448, type_of_loader: 0xff, kernel_alignment: 0x1000000 });
  });

  it("refuses values that do not fit", () => {
    expect(() => BootParams.minimal().setField("vid_mode", 0x10000)).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    expect(() => BootParams.minimal().setCmdline(2 ** 53)).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
    expect(BootParams.minimal().setField("vid_mode", 0x301).header.vid_mode).toBe(0x301);
    expect(() => BootParams.from(new Uint8Array(100))).toThrow(expect.objectContaining({ code: "Truncated" }));
  });
});
