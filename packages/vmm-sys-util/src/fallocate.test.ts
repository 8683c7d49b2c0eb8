import { closeSync, fstatSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { VmmSysError, fallocate, type FallocateMode } from "./index.js";

const dir = mkdtempSync(join(tmpdir(), "vsu-falloc-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function fileWith(bytes: number, fill: number): number {
  const fd = openSync(join(dir, `f${Math.random()}`), "w+");
  writeSync(fd, Buffer.alloc(bytes, fill), 0, bytes, 0);
  return fd;
}

function readAt(fd: number, off: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  readSync(fd, b, 0, len, off);
  return b;
}

describe("fallocate", () => {
  it("punchHole zeroes the range, keeps the size and frees blocks", () => {
    const fd = fileWith(1 << 20, 0xab);
    const before = fstatSync(fd).blocks;
    fallocate(fd, 4096, 512 * 1024, "punchHole");
    expect(fstatSync(fd).size).toBe(1 << 20);
    expect(fstatSync(fd).blocks).toBeLessThan(before);
    expect(readAt(fd, 4096, 512 * 1024).every((b) => b === 0)).toBe(true);
    expect(readAt(fd, 0, 4096).every((b) => b === 0xab)).toBe(true);
    expect(readAt(fd, 4096 + 512 * 1024, 4096).every((b) => b === 0xab)).toBe(true);
    closeSync(fd);
  });

  it("zeroRange zeroes the range and keeps the size (or reports EOPNOTSUPP where the fs cannot)", () => {
    const fd = fileWith(64 * 1024, 0x5a);
    try {
      fallocate(fd, 100, 1000, "zeroRange");
      expect(readAt(fd, 100, 1000).every((b) => b === 0)).toBe(true);
      expect(readAt(fd, 0, 100).every((b) => b === 0x5a)).toBe(true);
      expect(readAt(fd, 1100, 100).every((b) => b === 0x5a)).toBe(true);
    } catch (e) {
      expect(e).toMatchObject({ code: "EOPNOTSUPP" });
    }
    expect(fstatSync(fd).size).toBe(64 * 1024);
    closeSync(fd);
  });

  it("allocate grows the file", () => {
    const fd = fileWith(4096, 1);
    fallocate(fd, 0, 1 << 16, "allocate");
    expect(fstatSync(fd).size).toBe(1 << 16);
    closeSync(fd);
  });

  it("rejects bad arguments before the call and reports errno on failure", () => {
    const fd = fileWith(4096, 1);
    for (const [o, l, m] of [
      [-1, 1, "punchHole"],
      [0, 0, "punchHole"],
      [0, 1.5, "punchHole"],
      [2 ** 53, 1, "punchHole"],
      [0, 1, "explode"],
    ] as [number, number, FallocateMode][]) {
      expect(() => fallocate(fd, o, l, m)).toThrow(VmmSysError);
      try {
        fallocate(fd, o, l, m);
      } catch (e) {
        expect((e as VmmSysError).code).toBe("InvalidArgument");
      }
    }
    const ro = openSync(join(dir, "ro"), "w+");
    closeSync(ro);
    const rofd = openSync(join(dir, "ro"), "r");
    expect(() => fallocate(rofd, 0, 4096, "punchHole")).toThrow(expect.objectContaining({ code: "EBADF" }));
    closeSync(rofd);
    closeSync(fd);
  });
});
