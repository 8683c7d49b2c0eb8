import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { GuestMemoryError } from "./error.js";
import { readFromFd, readFromFdAsync, writeToFd, writeToFdAsync } from "./fd-io.js";
import { GuestMemoryArrayBuffer } from "./guest-memory-array-buffer.js";
import { GuestMemoryMmap } from "./guest-memory-mmap.js";
import { sliceRange } from "./slices.js";

const dir = mkdtempSync(join(tmpdir(), "vm-memory-fd-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const pattern = Buffer.from(Array.from({ length: 0x3000 }, (_, i) => (i * 7 + 3) & 0xff));

function file(name: string, content: Buffer): number {
  const p = join(dir, name);
  writeFileSync(p, content);
  return openSync(p, "r+");
}

async function code(fn: () => unknown): Promise<string> {
  try {
    await fn();
    return "none";
  } catch (e) {
    return e instanceof GuestMemoryError ? e.code : `other: ${String(e)}`;
  }
}

for (const [name, make] of [
  ["ArrayBuffer", () => GuestMemoryArrayBuffer.fromRanges([{ start: 0x1000, size: 0x1000 }, { start: 0x2000, size: 0x2000 }, { start: 0x8000, size: 0x1000 }], { dirtyTracking: true })],
  ["mmap", () => GuestMemoryMmap.fromRanges([{ start: 0x1000, size: 0x1000 }, { start: 0x2000, size: 0x2000 }, { start: 0x8000, size: 0x1000 }], { dirtyTracking: true })],
] as const) {
  describe(`fd copies (${name})`, () => {
    it("reads a file into guest memory across contiguous regions, marking pages dirty", () => {
      const mem = make();
      const fd = file(`in-${name}`, pattern);
      try {
        expect(readFromFd(mem, fd, 0x1800, 0x2000, 0x100)).toBe(0x2000);
        const got = new Uint8Array(0x2000);
        mem.read(0x1800, got);
        expect(Buffer.from(got).equals(pattern.subarray(0x100, 0x2100))).toBe(true);
        expect([...(mem as GuestMemoryArrayBuffer).dirtyPages()]).toEqual([0x1000, 0x2000, 0x3000]);
      } finally {
        closeSync(fd);
      }
    });
    it("stops at end of file and says how much it read", () => {
      const mem = make();
      const fd = file(`eof-${name}`, pattern.subarray(0, 0x100));
      try {
        expect(readFromFd(mem, fd, 0x8000, 0x1000, 0)).toBe(0x100);
        expect(mem.readU8(0x80ff)).toBe(pattern[0xff]);
        expect(mem.readU8(0x8100)).toBe(0);
      } finally {
        closeSync(fd);
      }
    });
    it("uses and advances the fd position when position is null", () => {
      const mem = make();
      const fd = file(`pos-${name}`, pattern);
      try {
        readFromFd(mem, fd, 0x1000, 0x10);
        readFromFd(mem, fd, 0x1010, 0x10);
        const got = new Uint8Array(0x20);
        mem.read(0x1000, got);
        expect(Buffer.from(got).equals(pattern.subarray(0, 0x20))).toBe(true);
      } finally {
        closeSync(fd);
      }
    });
    it("writes guest memory to a file", () => {
      const mem = make();
      mem.write(0x1000, pattern);
      const p = join(dir, `out-${name}`);
      const fd = openSync(p, "w+");
      try {
        expect(writeToFd(mem, fd, 0x1000, 0x3000, 0)).toBe(0x3000);
      } finally {
        closeSync(fd);
      }
      expect(readFileSync(p).equals(pattern)).toBe(true);
    });
    it("checks the whole range before any I/O", async () => {
      const mem = make();
      const fd = file(`range-${name}`, pattern);
      try {
        expect(await code(() => readFromFd(mem, fd, 0x3800, 0x1000, 0))).toBe("OutOfBounds");
        expect(await code(() => readFromFd(mem, fd, 0x5000, 1, 0))).toBe("Hole");
        expect(await code(() => writeToFd(mem, fd, 0x8800, 0x900, 0))).toBe("OutOfBounds");
        expect(await code(() => readFromFd(mem, fd, 0x1000, 1, -1))).toBe("InvalidArgument");
        expect(await code(() => readFromFdAsync(mem, fd, 0x3800, 0x1000, 0))).toBe("OutOfBounds");
        expect(mem.readU8(0x3800)).toBe(0); // nothing was read
        expect(readFileSync(join(dir, `range-${name}`)).equals(pattern)).toBe(true); // nothing written
      } finally {
        closeSync(fd);
      }
    });
    it("wraps fs errors as Io with the cause", async () => {
      const mem = make();
      const fd = file(`ro-${name}`, pattern);
      closeSync(fd);
      const e = await (async () => {
        try {
          readFromFd(mem, fd, 0x1000, 0x10, 0);
        } catch (x) {
          return x as GuestMemoryError;
        }
        return undefined;
      })();
      expect(e?.code).toBe("Io");
      expect((e?.cause as { code: string }).code).toBe("EBADF");
    });
    it("async read and write", async () => {
      const mem = make();
      const fd = file(`async-${name}`, pattern);
      try {
        expect(await readFromFdAsync(mem, fd, 0x1000, 0x3000, 0)).toBe(0x3000);
        mem.writeU32(0x1000, 0xaabbccdd);
        expect(await writeToFdAsync(mem, fd, 0x1000, 4, 0x10)).toBe(4);
      } finally {
        closeSync(fd);
      }
      const back = readFileSync(join(dir, `async-${name}`));
      expect(back.readUInt32LE(0x10)).toBe(0xaabbccdd);
      expect(back.subarray(0x14).equals(pattern.subarray(0x14))).toBe(true);
    });
  });
}

describe("sliceRange", () => {
  it("returns one view per region crossed", () => {
    const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x10 }, { start: 0x10, size: 0x10 }]);
    expect(sliceRange(mem, 0x8, 0x10).map((v) => v.length)).toEqual([8, 8]);
    expect(sliceRange(mem, 0x8, 0)).toEqual([]);
  });
});
