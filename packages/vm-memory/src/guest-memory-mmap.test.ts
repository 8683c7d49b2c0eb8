import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { GuestMemoryError } from "./error.js";
import { GuestMemoryMmap, MAX_REGION_SIZE } from "./guest-memory-mmap.js";
import { writeToFd } from "./fd-io.js";

const dir = mkdtempSync(join(tmpdir(), "vm-memory-mmap-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function err(fn: () => unknown): GuestMemoryError {
  try {
    fn();
  } catch (e) {
    if (e instanceof GuestMemoryError) return e;
    throw e;
  }
  throw new Error("did not throw");
}

describe("GuestMemoryMmap", () => {
  it("maps memfd-backed regions with host addresses and fds", () => {
    const mem = GuestMemoryMmap.fromRanges([
      { start: 0, size: 0x10000 },
      { start: 0x100000, size: 0x4000 },
    ]);
    try {
      expect(mem.size).toBe(0x14000);
      for (const r of mem.regions) {
        expect(typeof r.hostAddress).toBe("bigint");
        expect(Number((r.hostAddress as bigint) % 4096n)).toBe(0);
        expect(r.fd).toBeGreaterThanOrEqual(0);
        expect(r.bytes.buffer).toBeInstanceOf(SharedArrayBuffer);
      }
      mem.writeU64(0x100ff8, 0xfeedfacecafebeefn);
      expect(mem.readU64(0x100ff8)).toBe(0xfeedfacecafebeefn);
      expect(err(() => mem.readU8(0x10000)).code).toBe("Hole");
      expect(err(() => mem.readU32(0x103ffe)).code).toBe("OutOfBounds");
      // the memfd really backs the region: read it back through the fd
      const fd = mem.regions[1]?.fd as number;
      const b = Buffer.alloc(8);
      readSync(fd, b, 0, 8, 0xff8);
      expect(b.readBigUInt64LE()).toBe(0xfeedfacecafebeefn);
    } finally {
      mem.close();
    }
  });
  it("maps anonymous memory, zero-filled", () => {
    const mem = GuestMemoryMmap.fromRanges([{ start: 0x1000, size: 0x2000 }], { backing: "anonymous" });
    expect(mem.regions[0]?.fd).toBeNull();
    expect(mem.regions[0]?.bytes.every((b) => b === 0)).toBe(true);
    mem.close();
  });
  it("accepts transparent huge page advice", () => {
    const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 4 << 20 }], { madviseHugepage: true, backing: "anonymous" });
    mem.writeU32(0x200000, 1);
    expect(mem.readU32(0x200000)).toBe(1);
    mem.close();
  });
  it("reports hugetlb without configured huge pages as Mmap with the errno as cause", () => {
    let mem: GuestMemoryMmap | undefined;
    try {
      mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 2 << 20 }], { hugetlb: true });
    } catch (e) {
      expect(e).toBeInstanceOf(GuestMemoryError);
      expect((e as GuestMemoryError).code).toBe("Mmap");
      expect(((e as GuestMemoryError).cause as { code: string }).code).toMatch(/^E[A-Z]+$/);
      return;
    }
    // huge pages are configured on this machine: the mapping must work
    mem.writeU8(0, 1);
    expect(mem.readU8(0)).toBe(1);
    mem.close();
  });
  it("refuses unaligned, empty and overlapping ranges before mapping", () => {
    expect(err(() => GuestMemoryMmap.fromRanges([{ start: 0x800, size: 0x1000 }])).code).toBe("InvalidArgument");
    expect(err(() => GuestMemoryMmap.fromRanges([{ start: 0, size: 0x1001 }])).code).toBe("InvalidArgument");
    expect(err(() => GuestMemoryMmap.fromRanges([{ start: 0, size: 0 }])).code).toBe("InvalidArgument");
    expect(
      err(() =>
        GuestMemoryMmap.fromRanges([
          { start: 0, size: 0x2000 },
          { start: 0x1000, size: 0x1000 },
        ]),
      ).code,
    ).toBe("Overlap");
    expect(err(() => GuestMemoryMmap.fromRanges([{ start: 2 ** 52 - 0x1000, size: 0x2000 }])).code).toBe("AddressTooLarge");
    expect(err(() => GuestMemoryMmap.fromRanges([{ start: 0, size: 0x1000 }], { backing: "x" as "memfd" })).code).toBe(
      "InvalidArgument",
    );
  });
  it("maps a file shared (writes reach the file) and private (they do not)", () => {
    const path = join(dir, "image.bin");
    const img = Buffer.alloc(0x3000);
    img.write("snapshot", 0x1000);
    writeFileSync(path, img);
    const fd = openSync(path, "r+");
    try {
      const priv = GuestMemoryMmap.fromFile(fd, [{ start: 0x10000, size: 0x3000 }], { shared: false });
      expect(priv.regions[0]?.fd).toBe(fd);
      const s = new Uint8Array(8);
      priv.read(0x11000, s);
      expect(Buffer.from(s).toString()).toBe("snapshot");
      priv.write(0x11000, Buffer.from("PRIVATE!"));
      priv.close();
      expect(readFileSync(path).subarray(0x1000, 0x1008).toString()).toBe("snapshot");

      const shared = GuestMemoryMmap.fromRanges([{ start: 0, size: 0x2000, file: { fd, offset: 0x1000 } }]);
      expect(shared.regions[0]?.fileOffset).toBe(0x1000);
      shared.write(0, Buffer.from("SHARED!!"));
      shared.close();
      expect(readFileSync(path).subarray(0x1000, 0x1008).toString()).toBe("SHARED!!");
    } finally {
      closeSync(fd);
    }
  });
  it("refuses a file shorter than the range (would SIGBUS) with Mmap/MappingPastEof", () => {
    const path = join(dir, "short.bin");
    writeFileSync(path, Buffer.alloc(0x1000));
    const fd = openSync(path, "r+");
    try {
      const e = err(() => GuestMemoryMmap.fromFile(fd, [{ start: 0, size: 0x2000 }]));
      expect(e.code).toBe("Mmap");
      expect((e.cause as { code: string }).code).toBe("MappingPastEof");
    } finally {
      closeSync(fd);
    }
  });
  it("round-trips a snapshot: write regions to a file, map it back", () => {
    const mem = GuestMemoryMmap.fromRanges([
      { start: 0, size: 0x2000 },
      { start: 0x10000, size: 0x1000 },
    ]);
    mem.writeU32(0x1ffc, 0x11111111);
    mem.writeU32(0x10ffc, 0x22222222);
    const path = join(dir, "snap.bin");
    const fd = openSync(path, "w+");
    try {
      for (const r of mem.regions) writeToFd(mem, fd, r.start, r.size);
      const back = GuestMemoryMmap.fromFile(fd, mem.regions, { shared: false });
      expect(back.readU32(0x1ffc)).toBe(0x11111111);
      expect(back.readU32(0x10ffc)).toBe(0x22222222);
      back.close();
    } finally {
      closeSync(fd);
      mem.close();
    }
  });
  it("maps a guest_memfd-style fd shared (a memfd stands in here)", () => {
    const src = GuestMemoryMmap.fromRanges([{ start: 0, size: 0x5000 }]);
    const fd = src.regions[0]?.fd as number;
    const gm = GuestMemoryMmap.fromGuestMemfd(fd, [
      { start: 0x100000, size: 0x1000, offset: 0x3000 },
      { start: 0x200000, size: 0x1000 },
    ]);
    gm.writeU32(0x100000, 0xabcd);
    expect(src.readU32(0x3000)).toBe(0xabcd); // same pages through two mappings
    src.writeU32(0x4000, 0x1234); // the second range follows the first in the file: offset 0x4000
    expect(gm.readU32(0x200000)).toBe(0x1234);
    gm.close();
    src.close();
  });
  it("close stops access and is idempotent", () => {
    const mem = GuestMemoryMmap.fromRanges([{ start: 0, size: 0x1000 }]);
    const view = mem.slice(0, 16);
    mem.close();
    mem.close();
    expect(err(() => mem.readU8(0)).code).toBe("Closed");
    expect(err(() => mem.toTransferable()).code).toBe("Closed");
    // the mapping itself lives as long as the view: reading it does not crash
    expect(view[0]).toBe(0);
  });
});

describe("ranges larger than one mapping can back", () => {
  // V8 caps typed arrays at 2^32 elements: a 5 GiB range used to fail with a
  // plain RangeError. It is now backed by contiguous regions of at most
  // MAX_REGION_SIZE (the pages are never touched, so this costs no memory).
  it("splits a 5 GiB range into contiguous regions that reads and writes span", () => {
    const GiB = 2 ** 30;
    const mem = GuestMemoryMmap.fromRanges([{ start: 0x1_0000_0000, size: 5 * GiB }], { backing: "anonymous" });
    try {
      expect(mem.regions.map((r) => [r.start, r.size])).toEqual([
        [0x1_0000_0000, MAX_REGION_SIZE],
        [0x1_0000_0000 + MAX_REGION_SIZE, MAX_REGION_SIZE],
        [0x1_0000_0000 + 2 * MAX_REGION_SIZE, GiB],
      ]);
      expect(mem.size).toBe(5 * GiB);
      expect(mem.checkRange(0x1_0000_0000, 5 * GiB)).toBe(true);
      const seam = 0x1_0000_0000 + MAX_REGION_SIZE - 4;
      mem.write(seam, Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]));
      const back = new Uint8Array(8);
      mem.read(seam, back);
      expect([...back]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      mem.writeU64(0x1_0000_0000 + 5 * GiB - 8, 0x1122334455667788n);
      expect(mem.readU64(0x1_0000_0000 + 5 * GiB - 8)).toBe(0x1122334455667788n);
      expect(err(() => mem.readU8(0x1_0000_0000 + 5 * GiB)).code).toBe("Hole");
    } finally {
      mem.close();
    }
  });

  it("advances the file offset of each piece of a file-backed range", () => {
    const path = join(dir, "big-sparse");
    const fd = openSync(path, "w+");
    try {
      const size = MAX_REGION_SIZE + 0x10000;
      // A sparse file: write one marker just past the split point.
      const marker = Buffer.from("after-split");
      ftruncateSync(fd, size);
      writeSync(fd, marker, 0, marker.length, MAX_REGION_SIZE + 16);
      const mem = GuestMemoryMmap.fromRanges([{ start: 0, size, file: { fd, shared: true } }]);
      try {
        expect(mem.regions.length).toBe(2);
        expect(mem.regions[1]!.fileOffset).toBe(MAX_REGION_SIZE);
        const got = new Uint8Array(marker.length);
        mem.read(MAX_REGION_SIZE + 16, got);
        expect(Buffer.from(got).toString()).toBe("after-split");
      } finally {
        mem.close();
      }
    } finally {
      closeSync(fd);
    }
  });
});
