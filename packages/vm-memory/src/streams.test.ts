import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, expect, it } from "vitest";
import { GuestMemoryError } from "./error.js";
import { GuestMemoryArrayBuffer } from "./guest-memory-array-buffer.js";
import { GuestMemoryReadable, GuestMemoryWritable } from "./streams.js";

const mem = (): GuestMemoryArrayBuffer =>
  GuestMemoryArrayBuffer.fromRanges([
    { start: 0x1000, size: 0x1000 },
    { start: 0x2000, size: 0x1000 },
  ]);
const data = Buffer.from(Array.from({ length: 0x1800 }, (_, i) => (i * 13) & 0xff));

function collect(r: Readable): Promise<Buffer[]> {
  const chunks: Buffer[] = [];
  return new Promise((resolve, reject) => {
    r.on("data", (c: Buffer) => chunks.push(c));
    r.on("end", () => resolve(chunks));
    r.on("error", reject);
  });
}

describe("GuestMemoryWritable", () => {
  it("pipes a stream into guest memory across regions", async () => {
    const m = mem();
    const w = new GuestMemoryWritable(m, 0x1400, 0x1800);
    await pipeline(Readable.from([data.subarray(0, 0x100), data.subarray(0x100, 0x1000), data.subarray(0x1000)]), w);
    expect(w.bytesWritten).toBe(0x1800);
    const back = new Uint8Array(0x1800);
    m.read(0x1400, back);
    expect(Buffer.from(back).equals(data)).toBe(true);
  });
  it("refuses a chunk that overflows the window, writing none of it", async () => {
    const m = mem();
    const w = new GuestMemoryWritable(m, 0x1000, 0x10);
    const err = await pipeline(Readable.from([Buffer.alloc(8, 1), Buffer.alloc(9, 2)]), w).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GuestMemoryError);
    expect((err as GuestMemoryError).code).toBe("OutOfBounds");
    expect(w.bytesWritten).toBe(8);
    expect(m.readU8(0x1008)).toBe(0);
  });
  it("checks the window when made", () => {
    expect(() => new GuestMemoryWritable(mem(), 0x2800, 0x1000)).toThrow(expect.objectContaining({ code: "OutOfBounds" }));
    expect(() => new GuestMemoryWritable(mem(), 0x3000, 1)).toThrow(expect.objectContaining({ code: "Hole" }));
  });
});

describe("GuestMemoryReadable", () => {
  it("reads guest memory out as views, chunked at region ends", async () => {
    const m = mem();
    m.write(0x1400, data);
    const chunks = await collect(new GuestMemoryReadable(m, 0x1400, 0x1800, { chunkSize: 0x800 }));
    expect(chunks.map((c) => c.length)).toEqual([0x800, 0x400, 0x800, 0x400]);
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
    // zero-copy: the chunk aliases guest memory
    m.writeU8(0x1400, 0xaa);
    expect(chunks[0]?.[0]).toBe(0xaa);
  });
  it("pushes copies with copy: true", async () => {
    const m = mem();
    const chunks = await collect(new GuestMemoryReadable(m, 0x1000, 0x10, { copy: true }));
    m.writeU8(0x1000, 0xaa);
    expect(chunks[0]?.[0]).toBe(0);
  });
  it("pipes into a Writable with backpressure", async () => {
    const m = mem();
    m.write(0x1000, data);
    const got: Buffer[] = [];
    const sink = new Writable({
      highWaterMark: 1,
      write(c: Buffer, _e, cb) {
        got.push(Buffer.from(c));
        setImmediate(cb);
      },
    });
    await pipeline(new GuestMemoryReadable(m, 0x1000, 0x1800, { chunkSize: 0x100 }), sink);
    expect(Buffer.concat(got).equals(data)).toBe(true);
  });
  it("checks its range and options when made", () => {
    expect(() => new GuestMemoryReadable(mem(), 0x2800, 0x1000)).toThrow(expect.objectContaining({ code: "OutOfBounds" }));
    expect(() => new GuestMemoryReadable(mem(), 0x1000, 1, { chunkSize: 0 })).toThrow(
      expect.objectContaining({ code: "InvalidArgument" }),
    );
  });
  it("an empty range ends at once", async () => {
    expect(await collect(new GuestMemoryReadable(mem(), 0x1000, 0))).toEqual([]);
  });
});
