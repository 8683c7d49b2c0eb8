import { describe, expect, it } from "vitest";
import { makeMemory } from "../test/memory.js";
import { MockSplitQueue } from "./mock/index.js";
import { VirtqueueError } from "./index.js";

function chainOf(bufs: { addr: number; len: number; writable?: boolean }[]) {
  const mem = makeMemory(0x20000);
  const mock = new MockSplitQueue(mem, 16, { base: 0 });
  const q = mock.createQueue();
  mock.addChain(bufs);
  return { mem, chain: q.popDescriptorChain(mem)! };
}

describe("DescriptorChain buffers", () => {
  it("reads the readable part across buffers, from an offset", () => {
    const { mem, chain } = chainOf([
      { addr: 0x8000, len: 3 },
      { addr: 0x9000, len: 5 },
      { addr: 0xa000, len: 4, writable: true },
    ]);
    mem.write(0x8000, Uint8Array.of(1, 2, 3));
    mem.write(0x9000, Uint8Array.of(4, 5, 6, 7, 8));
    expect([...chain.readAll(mem)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const dest = new Uint8Array(4);
    expect(chain.readInto(mem, dest, 2)).toBe(4);
    expect([...dest]).toEqual([3, 4, 5, 6]);
    expect(chain.readInto(mem, new Uint8Array(10), 6)).toBe(2);
    expect(chain.readInto(mem, new Uint8Array(10), 100)).toBe(0);
  });

  it("readAll refuses readable parts above the limit", () => {
    const { mem, chain } = chainOf([{ addr: 0x8000, len: 0x1000 }]);
    expect(() => chain.readAll(mem, 0xfff)).toThrow(VirtqueueError);
    expect(chain.readAll(mem, 0x1000)).toHaveLength(0x1000);
  });

  it("writes across writable buffers, from an offset, and checks the length first", () => {
    const { mem, chain } = chainOf([
      { addr: 0x8000, len: 2 },
      { addr: 0x9000, len: 3, writable: true },
      { addr: 0xa000, len: 3, writable: true },
    ]);
    expect(chain.writeFrom(mem, Uint8Array.of(9, 8, 7, 6), 1)).toBe(4);
    expect([...mem.slice(0x9000, 3)]).toEqual([0, 9, 8]);
    expect([...mem.slice(0xa000, 3)]).toEqual([7, 6, 0]);
    let err: unknown;
    try {
      chain.writeFrom(mem, new Uint8Array(6), 1);
    } catch (e) {
      err = e;
    }
    expect((err as VirtqueueError).code).toBe("BufferTooSmall");
    expect([...mem.slice(0x9000, 3)]).toEqual([0, 9, 8]); // nothing written
  });

  it("writes all or nothing when a later buffer is outside guest memory", () => {
    const { mem, chain } = chainOf([
      { addr: 0x9000, len: 4, writable: true },
      { addr: 0x1_fffe, len: 4, writable: true },
    ]);
    let err: unknown;
    try {
      chain.writeFrom(mem, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8));
    } catch (e) {
      err = e;
    }
    expect((err as VirtqueueError).code).toBe("BufferOutOfBounds");
    expect((err as VirtqueueError).head).toBe(chain.head);
    expect([...mem.slice(0x9000, 4)]).toEqual([0, 0, 0, 0]);
  });

  it("readable() and writable() split the chain", () => {
    const { chain } = chainOf([
      { addr: 0x8000, len: 1, writable: true },
      { addr: 0x8100, len: 2, writable: true },
    ]);
    expect(chain.readable()).toEqual([]);
    expect(chain.writable().map((d) => d.len)).toEqual([1, 2]);
    expect(chain.readableCount).toBe(0);
  });

  it("fast paths (offset 0, the first buffer takes it all): same results and errors as the general case", () => {
    const { mem, chain } = chainOf([
      { addr: 0x8000, len: 4096 },
      { addr: 0x9000, len: 16 },
      { addr: 0xa000, len: 4096, writable: true },
      { addr: 0x1_fff0, len: 4096, writable: true },
    ]);
    const data = new Uint8Array(4096).map((_, i) => i & 0xff);
    mem.write(0x8000, data);
    mem.write(0x9000, new Uint8Array(16).fill(0xcc));
    // Shorter than, equal to, and longer than the first readable buffer.
    const a = new Uint8Array(100);
    expect(chain.readInto(mem, a)).toBe(100);
    expect(a).toEqual(data.subarray(0, 100));
    const b = new Uint8Array(4096);
    expect(chain.readInto(mem, b)).toBe(4096);
    expect(b).toEqual(data);
    const c = new Uint8Array(5000);
    expect(chain.readInto(mem, c)).toBe(4096 + 16);
    expect(c[4096]).toBe(0xcc);
    expect(c[4112]).toBe(0);
    // The first writable buffer takes the write; past it, the second (outside memory) fails.
    expect(chain.writeFrom(mem, data)).toBe(4096);
    expect(mem.slice(0xa000, 4096)).toEqual(data);
    let err: unknown;
    try {
      chain.writeFrom(mem, new Uint8Array(4096 + 17).fill(1)); // 17 bytes from 0x1fff0: past the end
    } catch (e) {
      err = e;
    }
    expect((err as VirtqueueError).code).toBe("BufferOutOfBounds");
    expect(mem.slice(0xa000, 4096)).toEqual(data); // nothing written
    expect(chain.writeFrom(mem, new Uint8Array(0))).toBe(0);
  });

  it("fast paths: a first buffer outside guest memory is BufferOutOfBounds, a bad offset InvalidArgument", () => {
    const { mem, chain } = chainOf([
      { addr: 0x1_ff00, len: 0x1000 },
      { addr: 0x1_ff00, len: 0x1000, writable: true },
    ]);
    const code = (fn: () => unknown): string | undefined => {
      try {
        fn();
      } catch (e) {
        return (e as VirtqueueError).code;
      }
      return undefined;
    };
    expect(code(() => chain.readInto(mem, new Uint8Array(0x800)))).toBe("BufferOutOfBounds");
    expect(code(() => chain.writeFrom(mem, new Uint8Array(0x800)))).toBe("BufferOutOfBounds");
    expect(code(() => chain.readInto(mem, new Uint8Array(0x10)))).toBeUndefined();
    expect(code(() => chain.readInto(mem, new Uint8Array(8), -1))).toBe("InvalidArgument");
    expect(code(() => chain.writeFrom(mem, new Uint8Array(8), 0.5))).toBe("InvalidArgument");
  });
});
