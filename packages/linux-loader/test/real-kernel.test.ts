import { readFileSync } from "node:fs";
import { debianKernel, describeWith, type DebianKernel } from "@ts-vmm/test-utils";
import { beforeAll, expect, it } from "vitest";
import { BzImage, Elf, LoaderError, XLoadFlags, loadLinux, planLinuxBoot } from "../src/index.js";
import { memHash, memory } from "./fixtures.js";

const MB = 1 << 20;

describeWith({ tools: ["apt-get", "dpkg-deb", "zstd"] }, "the Debian 6.12 cloud kernel", () => {
  let k: DebianKernel;
  let bz: Uint8Array;
  let vmlinux: Uint8Array;
  beforeAll(async () => {
    k = await debianKernel();
    bz = new Uint8Array(readFileSync(k.bzImage));
    vmlinux = new Uint8Array(readFileSync(k.vmlinux));
  }, 600_000);

  it("parses the bzImage header", () => {
    const img = BzImage.parse(bz);
    expect(img.version).toBeGreaterThanOrEqual(0x20f);
    expect(img.header.xloadflags & XLoadFlags.Kernel64).toBe(1);
    expect(img.header.relocatable_kernel).toBe(1);
    expect(img.header.kernel_alignment).toBe(0x200000);
    expect(img.header.cmdline_size).toBe(2047);
    expect(img.header.pref_address).toBe(0x1000000n);
    expect(img.payload.subarray(0, 4)).toEqual(Uint8Array.of(0x28, 0xb5, 0x2f, 0xfd)); // zstd
  });

  it("parses the vmlinux: PT_LOAD segments at 16 MiB and the PVH entry", () => {
    const e = Elf.parse(vmlinux);
    expect(e.bits).toBe(64);
    expect(e.segments[0]!.paddr).toBe(0x1000000);
    expect(e.pvhEntry).toBeGreaterThan(0x1000000);
    expect(e.pvhEntry).toBeLessThan(0x2000000);
  });

  it("needs RAM for the decompressed kernel: refuses 64 MiB, boots in 128 MiB", () => {
    const small = memory(64 * MB);
    const before = memHash(small);
    expect(() => loadLinux(small, { kernel: bz })).toThrow(expect.objectContaining({ code: "OutOfGuestMemory" }));
    expect(memHash(small)).toBe(before);
    const b = planLinuxBoot(memory(128 * MB), { kernel: bz });
    expect(b.entry).toBe(0x100200);
  });

  it("refuses an initrd that would overlap the decompressed kernel, writing nothing", () => {
    const mem = memory(128 * MB);
    const before = memHash(mem);
    let err: unknown;
    try {
      loadLinux(mem, { kernel: bz, initrd: new Uint8Array(60 * MB) });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LoaderError);
    expect((err as LoaderError).code).toBe("InitrdTooLarge");
    expect(memHash(mem)).toBe(before);
  });

  it("refuses the vmlinux where its segments do not fit", () => {
    expect(() => planLinuxBoot(memory(32 * MB), { kernel: vmlinux })).toThrow(expect.objectContaining({ code: "OutOfGuestMemory" }));
  });
});
