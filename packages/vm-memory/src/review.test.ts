// Regression tests for the vm-memory defects of issue 14 (item 13).
import { openSync, closeSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { GuestMemoryArrayBuffer } from "./guest-memory-array-buffer.js";
import { GuestMemoryError } from "./error.js";
import { readFromFd } from "./fd-io.js";
import { sliceRange } from "./slices.js";
import { GuestMemoryReadable, GuestMemoryWritable } from "./streams.js";

function code(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(GuestMemoryError);
    return (e as GuestMemoryError).code;
  }
  return "no error";
}

describe("a bigint address is a typed error on every path (item 13)", () => {
  it("scalar, block and atomic accessors throw GuestMemoryError, not TypeError", () => {
    const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x10000 }], { shared: true });
    mem.readU8(0); // warm the last-hit region: the fast path is taken first
    const a = 0x100n as unknown as number;
    const calls: (() => unknown)[] = [
      () => mem.readU8(a), () => mem.readU16(a), () => mem.readU32(a), () => mem.readU64(a),
      () => mem.writeU8(a, 1), () => mem.writeU16(a, 1), () => mem.writeU32(a, 1), () => mem.writeU64(a, 1n),
      () => mem.read(a, new Uint8Array(4)), () => mem.write(a, new Uint8Array(4)), () => mem.slice(a, 4),
      () => mem.loadU16Acquire(a), () => mem.storeU16Release(a, 1), () => mem.loadU32Acquire(a), () => mem.storeU32Release(a, 1),
      () => mem.readU64Split(a), () => mem.readU64AsAddress(a),
    ];
    for (const [i, c] of calls.entries()) expect(code(c), `call ${i}`).toBe("InvalidArgument");
    expect(mem.checkRange(a, 4)).toBe(false);
    expect(mem.findRegion(a)).toBeUndefined();
  });
});

describe("after close: Closed, not Hole (item 13)", () => {
  it("sliceRange, readFromFd and the streams report Closed", () => {
    const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x10000 }], { shared: false });
    mem.close();
    expect(code(() => sliceRange(mem, 0, 16))).toBe("Closed");
    const fd = openSync("/dev/zero", "r");
    try {
      expect(code(() => readFromFd(mem, fd, 0, 16))).toBe("Closed");
    } finally {
      closeSync(fd);
    }
    expect(code(() => new GuestMemoryReadable(mem, 0, 16))).toBe("Closed");
    expect(code(() => new GuestMemoryWritable(mem, 0, 16))).toBe("Closed");
    expect(code(() => mem.readU8(0))).toBe("Closed");
  });
});
