import { GuestMemoryArrayBuffer } from "@ts-vmm/vm-memory";
import { describe, expect, it } from "vitest";
import { makeBzImage, makeElf, memHash, memory, pvhNote } from "../test/fixtures.js";
import { BootParams } from "./boot-params.js";
import { Cmdline } from "./cmdline.js";
import { LoaderError } from "./error.js";
import { IOAPIC_ID } from "./layout.js";
import { loadLinux, planLinuxBoot, type LinuxBootOptions } from "./linux-boot.js";

const MB = 1 << 20;

function failsWith(size: number, opts: LinuxBootOptions): string {
  const mem = memory(size);
  const before = memHash(mem);
  try {
    loadLinux(mem, opts);
    return "no error";
  } catch (e) {
    if (!(e instanceof LoaderError)) throw e;
    expect(memHash(mem)).toBe(before); // validate first, then write: nothing landed
    return e.code;
  } 
}

describe("MP table and MADT describe the same IOAPIC", () => {
  it("planLinuxBoot writes both with the IOAPIC ID IOAPIC_ID", () => {
    const b = planLinuxBoot(memory(64 * MB), { kernel: makeBzImage({ kernelSize: 0x10000, initSize: 0x400000 }), cpus: 4, mptable: true });
    const mp = b.writes.find((w) => w.what.startsWith("MP table"))!.data.subarray(16);
    const mpIoapic = mp.subarray(44 + 4 * 20 + 8);
    expect(mpIoapic[0]).toBe(2); // MP IOAPIC entry
    const madt = b.writes.find((w) => w.what === "ACPI MADT")!.data;
    let madtId: number | undefined;
    for (let o = 44; o < madt.byteLength; o += madt[o + 1]!) if (madt[o] === 1) madtId = madt[o + 2];
    expect(madtId).toBe(IOAPIC_ID);
    expect(mpIoapic[1]).toBe(madtId); // before: MP table 4 (= cpus), MADT 0
  });
});

describe("planLinuxBoot passes cmosRtc to the FADT", () => {
  it("CMOS RTC Not Present (IAPC_BOOT_ARCH bit 5) only with cmosRtc: false", () => {
    const kernel = makeBzImage({ kernelSize: 0x10000, initSize: 0x400000 });
    const bootArch = (o: Partial<LinuxBootOptions>): number => {
      const fadt = planLinuxBoot(memory(64 * MB), { kernel, ...o }).writes.find((w) => w.what === "ACPI FADT")!.data;
      return new DataView(fadt.buffer, fadt.byteOffset, fadt.byteLength).getUint16(109, true) & (1 << 5);
    };
    expect([bootArch({}), bootArch({ cmosRtc: true }), bootArch({ cmosRtc: false })]).toEqual([0, 0, 1 << 5]);
  });
});

describe("loadLinux with a bzImage", () => {
  const kernel = makeBzImage({ kernelSize: 0x10000, initSize: 0x400000 });

  it("lays out kernel, zero page, command line, initrd, tables and CPU state", () => {
    const mem = memory(64 * MB);
    const initrd = new Uint8Array(0x12345).fill(0xab);
    const b = loadLinux(mem, { kernel, initrd, cmdline: "console=ttyS0", virtioMmio: [{ addr: 0xd0000000, irq: 5 }] });
    expect(b.protocol).toBe("linux64");
    expect(b.entry).toBe(0x100200);
    expect(b.initrd).toEqual({ addr: Math.floor((64 * MB - 0x12345) / 4096) * 4096, size: 0x12345 });
    const zp = new Uint8Array(4096);
    mem.read(0x7000, zp);
    const bp = BootParams.from(zp);
    expect(bp.header).toMatchObject({ cmd_line_ptr: 0x20000, ramdisk_image: b.initrd!.addr, ramdisk_size: 0x12345, type_of_loader: 0xff });
    expect(bp.e820).toEqual(b.e820);
    expect(new DataView(zp.buffer).getBigUint64(0x70, true)).toBe(0xe0000n);
    const cmd = new Uint8Array(14);
    mem.read(0x20000, cmd);
    expect(Buffer.from(cmd).toString("latin1")).toBe("console=ttyS0\0");
    const rsdp = new Uint8Array(8);
    mem.read(0xe0000, rsdp);
    expect(Buffer.from(rsdp).toString("latin1")).toBe("RSD PTR ");
    const mp = new Uint8Array(4);
    mem.read(0x9fc00, mp);
    expect(Buffer.from(mp).toString("latin1")).toBe("_MP_");
    expect(b.cpu.regs.rsi).toBe(0x7000n);
    expect(mem.readU64(0x9000) & ~0xfffn).toBe(0xa000n);
  });

  it("announces virtio-mmio devices on the command line when ACPI is off", () => {
    const b = planLinuxBoot(memory(64 * MB), { kernel, cmdline: new Cmdline(100).add("quiet"), acpi: false, virtioMmio: [{ addr: 0xd0000000, irq: 5 }] });
    expect(b.cmdline).toBe("quiet virtio_mmio.device=4K@0xd0000000:5");
    expect(b.rsdpAddr).toBeUndefined();
  });

  it("refuses, writing nothing: initrd too large, command line too long, too little RAM, PVH of a bzImage", () => {
    expect(failsWith(64 * MB, { kernel, initrd: new Uint8Array(60 * MB) })).toBe("InitrdTooLarge");
    expect(failsWith(64 * MB, { kernel: makeBzImage({ initrdAddrMax: 0x1ffffff }), initrd: new Uint8Array(0x1800000) })).toBe("InitrdTooLarge");
    expect(failsWith(64 * MB, { kernel: makeBzImage({ cmdlineSize: 10 }), cmdline: "console=ttyS0" })).toBe("CmdlineTooLong");
    expect(failsWith(16 * MB, { kernel })).toBe("OutOfGuestMemory"); // runtime start 16 MiB + init_size
    expect(failsWith(64 * MB, { kernel, protocol: "pvh" })).toBe("Unsupported");
    expect(failsWith(64 * MB, { kernel, cmdline: "a\u0001" })).toBe("CmdlineInvalid");
  });

  it("places the initrd below initrd_addr_max", () => {
    const b = planLinuxBoot(memory(256 * MB), { kernel: makeBzImage({ initrdAddrMax: 0x3ffffff }), initrd: new Uint8Array(0x1000) });
    expect(b.initrd).toEqual({ addr: 0x4000000 - 0x1000, size: 0x1000 });
  });

  it("refuses memory that is not laid out as ramRegions() says", () => {
    const odd = GuestMemoryArrayBuffer.fromRanges([{ start: 0x100000, size: 63 * MB }], { shared: false });
    expect(() => planLinuxBoot(odd, { kernel })).toThrow(expect.objectContaining({ code: "InvalidArgument" }));
  });
});

describe("loadLinux with an ELF", () => {
  const segments = [{ paddr: 0x200000n, filesz: 0x1000n, memsz: 0x2000n }];

  it("uses PVH when the image has the note: start_info, module list, memory map", () => {
    const mem = memory(32 * MB);
    const b = loadLinux(mem, { kernel: makeElf({ segments, notes: [pvhNote(0x200100)] }), initrd: new Uint8Array(0x3000).fill(1), cmdline: "x=1" });
    expect(b.protocol).toBe("pvh");
    expect(b.cpu.regs).toMatchObject({ rip: 0x200100n, rbx: 0x6000n });
    expect(mem.readU32(0x6000)).toBe(0x336ec578);
    expect(mem.readU32(0x6004)).toBe(1);
    expect(mem.readU32(0x600c)).toBe(1);
    expect(mem.readU64(0x6010)).toBe(0x6040n);
    expect(mem.readU64(0x6018)).toBe(0x20000n);
    expect(mem.readU64(0x6020)).toBe(0xe0000n);
    expect(mem.readU64(0x6028)).toBe(0x6100n);
    expect(mem.readU32(0x6030)).toBe(b.e820.length);
    expect(mem.readU64(0x6040)).toBe(BigInt(b.initrd!.addr));
    expect(mem.readU64(0x6048)).toBe(0x3000n);
    expect(mem.readU64(0x6100 + 24 * (b.e820.length - 1) + 8)).toBe(BigInt(b.e820.at(-1)!.size));
  });

  it("uses the 64-bit protocol without the note, or when asked", () => {
    const b = planLinuxBoot(memory(32 * MB), { kernel: makeElf({ entry: 0x200040n, segments }) });
    expect(b.protocol).toBe("linux64");
    expect(b.cpu.regs.rip).toBe(0x200040n);
    expect(planLinuxBoot(memory(32 * MB), { kernel: makeElf({ segments, notes: [pvhNote(0x200100)] }), protocol: "linux64" }).protocol).toBe("linux64");
    expect(failsWith(32 * MB, { kernel: makeElf({ segments }), protocol: "pvh" })).toBe("Unsupported");
  });

  it("refuses segments over the loader's own structures, past memory, or in the MMIO hole", () => {
    expect(failsWith(32 * MB, { kernel: makeElf({ segments: [{ paddr: 0x9000n, filesz: 0x10n, memsz: 0x10n }] }) })).toBe("Overlap");
    expect(failsWith(32 * MB, { kernel: makeElf({ segments: [{ paddr: BigInt(32 * MB - 0x800), filesz: 0x10n, memsz: 0x1000n }] }) })).toBe("OutOfGuestMemory");
    expect(failsWith(32 * MB, { kernel: makeElf({ segments: [{ paddr: 0xc0000000n, filesz: 0x10n, memsz: 0x10n }] }) })).toBe("InMmioHole");
    expect(failsWith(32 * MB, { kernel: makeElf({ segments, notes: [pvhNote(0x200100, 5)] }) })).toBe("PvhNoteSize");
  });
});
