import { describe, expect, it } from "vitest";
import type { GuestMemory } from "@ts-vmm/vm-memory";
import { makeMemory } from "../test/memory.js";
import { MockPackedQueue, MockSplitQueue } from "./mock/index.js";

/** Wraps a memory and records every accessor call with its address. */
function recording(mem: GuestMemory): { mem: GuestMemory; log: [string, number][] } {
  const log: [string, number][] = [];
  const proxy = new Proxy(mem, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== "function" || typeof prop !== "string") return v;
      return (...args: unknown[]) => {
        log.push([prop, args[0] as number]);
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { mem: proxy, log };
}

describe("memory ordering of ring accesses", () => {
  it("split: avail idx is loaded with acquire first; the used idx is stored with release last", () => {
    const real = makeMemory(0x40000);
    const mock = new MockSplitQueue(real, 8, { base: 0x1000 });
    const q = mock.createQueue();
    const head = mock.addChain([{ addr: 0x8000, len: 4, writable: true }]);
    const { mem, log } = recording(real);
    const c = q.popDescriptorChain(mem)!;
    expect(log[0]).toEqual(["loadU16Acquire", mock.availRing + 2]);
    // Nothing outside the avail ring and the descriptor table was touched while popping.
    for (const [, addr] of log) {
      const inAvail = addr >= mock.availRing && addr < mock.availRing + 6 + 2 * 8;
      const inTable = addr >= mock.descTable && addr < mock.descTable + 16 * 8;
      expect(inAvail || inTable).toBe(true);
    }
    log.length = 0;
    q.addUsed(mem, c.head, 4);
    expect(log).toEqual([
      ["writeU32", mock.usedRing + 4],
      ["writeU32", mock.usedRing + 8],
      ["storeU16Release", mock.usedRing + 2],
    ]);
    expect(head).toBe(c.head);
  });

  it("packed: head flags are loaded with acquire first; used flags are stored with release last", () => {
    const real = makeMemory(0x40000);
    const mock = new MockPackedQueue(real, 8, { base: 0x1000 });
    const q = mock.createQueue();
    const id = mock.addChain([
      { addr: 0x8000, len: 4 },
      { addr: 0x9000, len: 4, writable: true },
    ]);
    const { mem, log } = recording(real);
    q.popDescriptorChain(mem);
    expect(log[0]).toEqual(["loadU16Acquire", mock.descRing + 14]);
    log.length = 0;
    q.addUsed(mem, id, 4);
    expect(log.at(-1)).toEqual(["storeU16Release", mock.descRing + 14]);
    expect(log.slice(0, -1).map((e) => e[0])).toEqual(["writeU32", "writeU16"]);
  });
});
