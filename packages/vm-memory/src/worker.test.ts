import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { beforeAll, describe, expect, it } from "vitest";
import { GuestMemoryArrayBuffer } from "./guest-memory-array-buffer.js";
import { GuestMemoryMmap } from "./guest-memory-mmap.js";
import { GuestMemoryError } from "./error.js";

const pkg = join(dirname(fileURLToPath(import.meta.url)), "..");
const entry = pathToFileURL(join(pkg, "dist", "index.js")).href;
const mmapEntry = pathToFileURL(join(pkg, "dist", "mmap.js")).href;

/** Worker entry files must be real JS: build dist/ if it is missing or older than src/. */
beforeAll(() => {
  const dist = join(pkg, "dist", "mmap.js");
  const newest = Math.max(...readdirSync(join(pkg, "src")).map((f) => statSync(join(pkg, "src", f)).mtimeMs));
  if (!existsSync(dist) || statSync(dist).mtimeMs < newest) {
    execFileSync(join(pkg, "node_modules", ".bin", "tsc"), ["-p", "tsconfig.build.json"], { cwd: pkg, stdio: "inherit" });
  }
}, 120_000);

async function roundTrip(
  kind: "mmap" | "arraybuffer",
  mem: GuestMemoryMmap | GuestMemoryArrayBuffer,
  base: number,
): Promise<{ seen: number; hole: string; regions: number; hostAddress: bigint | null }> {
  const w = new Worker(new URL("../test/worker-fixture.mjs", import.meta.url), { workerData: { entry, mmapEntry, kind }, execArgv: [] });
  try {
    const reply = new Promise<{ seen: number; hole: string; regions: number; hostAddress: bigint | null }>((resolve, reject) => {
      w.once("message", resolve);
      w.once("error", reject);
    });
    w.postMessage({ transferable: mem.toTransferable(), base });
    return await reply;
  } finally {
    await w.terminate();
  }
}

describe("worker-thread sharing", () => {
  it("a GuestMemoryMmap rebuilt in a worker writes the same mapping, and dirty bits", async () => {
    const mem = GuestMemoryMmap.fromRanges(
      [
        { start: 0x100000, size: 0x2000 },
        { start: 0x102000, size: 0x1000 },
      ],
      { dirtyTracking: true },
    );
    try {
      mem.writeU32(0x100000, 0xc0ffee);
      mem.clearDirty();
      const r = await roundTrip("mmap", mem, 0x100000);
      expect(r.seen).toBe(0xc0ffee);
      expect(r.hole).toBe("Hole");
      expect(r.regions).toBe(2);
      expect(r.hostAddress).toBe(mem.regions[0]?.hostAddress);
      expect(mem.readU64(0x101000)).toBe(0x1122334455667788n);
      expect(mem.readU32(0x102000)).toBe(0x04030201);
      expect(mem.loadU16Acquire(0x102ffe)).toBe(0xbeef);
      expect([...mem.dirtyPages()]).toEqual([0x101000, 0x102000]);
    } finally {
      mem.close();
    }
  });
  it("a SharedArrayBuffer-backed GuestMemoryArrayBuffer too", async () => {
    const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x3000 }]);
    mem.writeU32(0, 7);
    const r = await roundTrip("arraybuffer", mem, 0);
    expect(r.seen).toBe(7);
    expect(r.hostAddress).toBeNull();
    expect(mem.readU64(0x1000)).toBe(0x1122334455667788n);
  });
  it("refuses to share non-shared buffers, and malformed descriptions", () => {
    const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x1000 }], { shared: false });
    expect(() => mem.toTransferable()).toThrow(GuestMemoryError);
    expect(() => GuestMemoryMmap.fromTransferable({ kind: "arraybuffer", regions: [] })).toThrow(GuestMemoryError);
    expect(() =>
      GuestMemoryArrayBuffer.fromTransferable({
        kind: "arraybuffer",
        regions: [{ start: 0, size: 0x2000, buffer: new SharedArrayBuffer(0x1000), byteOffset: 0 }],
      }),
    ).toThrow(GuestMemoryError);
  });
  it("refuses a description with a missing or non-object region as InvalidArgument, not a TypeError", () => {
    for (const bad of [null, undefined, 5, "region"]) {
      let err: unknown;
      try {
        GuestMemoryArrayBuffer.fromTransferable({ kind: "arraybuffer", regions: [bad as never] });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(GuestMemoryError);
      expect((err as GuestMemoryError).code).toBe("InvalidArgument");
    }
  });
});
