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
});
