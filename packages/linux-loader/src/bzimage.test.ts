import { describe, expect, it } from "vitest";
import { makeBzImage, memHash, memory } from "../test/fixtures.js";
import { BzImage } from "./bzimage.js";
import { LoaderError } from "./error.js";

function code(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof LoaderError) return e.code;
    throw e;
  }
  return "no error";
}

describe("BzImage.parse", () => {
  it("decodes the header fields", () => {
    const bz = BzImage.parse(makeBzImage({ initSize: 0x3000000 }));
    expect(bz.version).toBe(0x20f);
    expect(bz.header.kernel_alignment).toBe(0x200000);
    expect(bz.header.pref_address).toBe(0x1000000n);
    expect(bz.header.init_size).toBe(0x3000000);
    expect(bz.headerEnd).toBe(0x26c);
    expect(bz.kernelOffset).toBe(5 * 512);
    expect(bz.setupHeaderBytes.byteLength).toBe(0x26c - 0x1f1);
  });

  it("reads setup_sects 0 as 4", () => {
    const bz = BzImage.parse(makeBzImage({ setupSects: 0 }));
    expect(bz.setupSects).toBe(4);
    expect(bz.kernelOffset).toBe(2560);
  });

  it("refuses bad images with typed errors", () => {
    const bad = (patch: (b: Uint8Array, v: DataView) => void, o = {}): string => {
      const b = makeBzImage(o);
      patch(b, new DataView(b.buffer));
      return code(() => BzImage.parse(b));
    };
    expect(bad((_b, v) => v.setUint16(0x1fe, 0x1234, true))).toBe("BadMagic");
    expect(bad((_b, v) => v.setUint32(0x202, 0x12345678, true))).toBe("BadMagic");
    expect(bad(() => undefined, { version: 0x205 })).toBe("ProtocolTooOld");
    expect(bad(() => undefined, { loadflags: 0 })).toBe("Unsupported");
    expect(bad(() => undefined, { xloadflags: 0 })).toBe("Unsupported");
    expect(bad(() => undefined, { kernelAlignment: 0x300000 })).toBe("InvalidHeader");
    expect(bad(() => undefined, { cmdlineSize: 0 })).toBe("InvalidHeader");
    expect(bad((_b, v) => v.setUint32(0x1f4, 0x10000000, true))).toBe("Truncated");
    expect(bad((b) => (b[0x201] = 0x10))).toBe("InvalidHeader");
    expect(code(() => BzImage.parse(makeBzImage().subarray(0, 0x200)))).toBe("Truncated");
    expect(code(() => BzImage.parse(makeBzImage().subarray(0, 0x250)))).toBe("Truncated");
    expect(code(() => BzImage.parse(makeBzImage().subarray(0, 5 * 512)))).toBe("Truncated");
    expect(code(() => BzImage.parse(new Uint8Array(0)))).toBe("Truncated");
  });

  it("names the problem in the message", () => {
    expect(() => BzImage.parse(makeBzImage({ version: 0x204 }))).toThrow(/2\.04 is older than 2\.06/);
  });
});

describe("BzImage.load", () => {
  it("copies the protected-mode kernel to 1 MiB and reports the 64-bit entry", () => {
    const img = makeBzImage({ kernelSize: 0x8000 });
    const mem = memory(64 << 20);
    const load = BzImage.parse(img).load(mem);
    expect(load).toMatchObject({ loadAddress: 0x100000, entry64: 0x100200, end: 0x108000 });
    expect(load).not.toHaveProperty("entry32"); // no 32-bit entry: the package boots only the 64-bit protocol
    expect(load.runtimeStart).toBe(0x1000000); // max(align(1 MiB, 2 MiB), pref_address)
    const got = new Uint8Array(0x8000);
    mem.read(0x100000, got);
    expect(Buffer.compare(got, img.subarray(5 * 512))).toBe(0);
  });

  it("accepts another aligned address for a relocatable kernel and refuses it otherwise", () => {
    expect(BzImage.parse(makeBzImage()).plan({ loadAddress: 0x400000 }).load.entry64).toBe(0x400200);
    expect(code(() => BzImage.parse(makeBzImage({ relocatable: 0 })).plan({ loadAddress: 0x400000 }))).toBe("Unsupported");
    expect(code(() => BzImage.parse(makeBzImage()).plan({ loadAddress: 0x400001 }))).toBe("InvalidArgument");
    expect(code(() => BzImage.parse(makeBzImage()).plan({ loadAddress: 0x1000 }))).toBe("InvalidArgument");
  });

  it("leaves memory untouched when the kernel does not fit", () => {
    const mem = memory(2 << 20);
    const before = memHash(mem);
    expect(code(() => BzImage.parse(makeBzImage({ kernelSize: 0x200000 })).load(mem))).toBe("OutOfGuestMemory");
    expect(memHash(mem)).toBe(before);
  });
});
