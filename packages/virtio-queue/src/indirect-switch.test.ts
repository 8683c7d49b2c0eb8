import { describe, expect, it } from "vitest";
import { makeMemory } from "../test/memory.js";
import { MockPackedQueue, MockSplitQueue } from "./mock/index.js";
import { Queue, VirtqueueError, type QueueState } from "./index.js";

function popError(q: Queue, mem: Parameters<Queue["popDescriptorChain"]>[0]): VirtqueueError {
  try {
    q.popDescriptorChain(mem);
  } catch (e) {
    expect(e).toBeInstanceOf(VirtqueueError);
    return e as VirtqueueError;
  }
  throw new Error("pop did not fail");
}

function refuseIndirect(q: Queue): void {
  q.setReady(false);
  expect(q.setIndirectDesc(false)).toBe(true);
  q.setReady(true);
}

describe("indirect descriptors switch (VIRTIO_F_INDIRECT_DESC)", () => {
  it("is on by default and after reset; refused while ready", () => {
    const q = new Queue(8);
    expect(q.indirectDesc).toBe(true);
    expect(q.setIndirectDesc(false)).toBe(true);
    expect(q.indirectDesc).toBe(false);
    q.setReady(true);
    expect(q.setIndirectDesc(true)).toBe(false);
    expect(q.lastError?.code).toBe("QueueReady");
    expect(q.indirectDesc).toBe(false);
    q.reset();
    expect(q.indirectDesc).toBe(true);
  });

  it("split: an indirect chain is consumed with IndirectNotNegotiated when off, direct chains still work", () => {
    const mem = makeMemory(0x40000);
    const mock = new MockSplitQueue(mem, 8, { base: 0x1000 });
    const q = mock.createQueue();
    refuseIndirect(q);
    const h = mock.addChain([{ addr: 0x8000, len: 16 }, { addr: 0x9000, len: 16, writable: true }], { indirect: true });
    const err = popError(q, mem);
    expect(err.code).toBe("IndirectNotNegotiated");
    expect(err.head).toBe(h);
    const d = mock.addChain([{ addr: 0x8000, len: 16 }]);
    expect(q.popDescriptorChain(mem)?.head).toBe(d);
  });

  it("split: the same indirect chain pops when on", () => {
    const mem = makeMemory(0x40000);
    const mock = new MockSplitQueue(mem, 8, { base: 0x1000 });
    const q = mock.createQueue();
    mock.addChain([{ addr: 0x8000, len: 16 }, { addr: 0x9000, len: 16, writable: true }], { indirect: true });
    const c = q.popDescriptorChain(mem);
    expect(c?.indirect).toBe(true);
    expect(c?.descriptors.length).toBe(2);
  });

  it("packed: an indirect buffer is consumed with IndirectNotNegotiated when off", () => {
    const mem = makeMemory(0x40000);
    const mock = new MockPackedQueue(mem, 8, { base: 0x1000 });
    const q = mock.createQueue();
    refuseIndirect(q);
    const id = mock.addChain([{ addr: 0x8000, len: 16 }], { indirect: true });
    const err = popError(q, mem);
    expect(err.code).toBe("IndirectNotNegotiated");
    expect(err.head).toBe(id);
  });

  it("is saved and restored; a state without the field means on; a non-boolean is refused", () => {
    const q = new Queue(8);
    q.setIndirectDesc(false);
    const s = q.state();
    expect(s.indirectDesc).toBe(false);
    expect(Queue.fromState(s).indirectDesc).toBe(false);
    const { indirectDesc: _drop, ...old } = s;
    expect(Queue.fromState(old as QueueState).indirectDesc).toBe(true);
    expect(() => Queue.fromState({ ...s, indirectDesc: 1 } as unknown as QueueState)).toThrow(VirtqueueError);
  });
});
