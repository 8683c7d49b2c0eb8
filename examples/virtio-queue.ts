// packages/virtio-queue/README.md, ts/js code block 1: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { GuestMemoryArrayBuffer } from "@ts-vmm/vm-memory";
import { VirtqueueError } from "@ts-vmm/virtio-queue";
import { MockSplitQueue } from "@ts-vmm/virtio-queue/mock";

const mem = GuestMemoryArrayBuffer.fromRanges([{ start: 0, size: 0x10_0000 }]);

// Guest side: rings at 0x1000, one request (8 bytes in, 16 bytes out).
const driver = new MockSplitQueue(mem, 256, { base: 0x1000, eventIdx: true });
mem.write(0x8_0000, new TextEncoder().encode("ping-123"));
driver.addChain([
  { addr: 0x8_0000, len: 8 },
  { addr: 0x9_0000, len: 16, writable: true },
]);

// Device side: a Queue configured the way a transport would (the mock does it here).
const queue = driver.createQueue();
if (!queue.isValid(mem)) throw new Error("queue not usable: DEVICE_NEEDS_RESET");
for (;;) {
  let chain;
  try {
    chain = queue.popDescriptorChain(mem);
  } catch (e) {
    if (!(e instanceof VirtqueueError)) throw e;
    if (e.head !== undefined) queue.addUsed(mem, e.head, 0); // malformed chain: hand it back empty
    else break; // the ring itself is broken: set DEVICE_NEEDS_RESET
    continue;
  }
  if (chain === undefined) break;
  const request = chain.readAll(mem, 4096);
  const reply = new TextEncoder().encode(`pong ${new TextDecoder().decode(request)}`);
  const written = chain.writeFrom(mem, reply.subarray(0, chain.writableLength));
  queue.addUsed(mem, chain.head, written);
}
if (queue.needsNotification(mem)) console.log("inject the interrupt");

console.log(driver.takeUsed()); // [ { id: 0, len: 13 } ]
console.log(new TextDecoder().decode(mem.slice(0x9_0000, 13))); // pong ping-123
