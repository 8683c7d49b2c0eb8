// Worker side of worker.test.ts. Plain JS: it imports the built package (dist/).
import { parentPort, workerData } from "node:worker_threads";

const { GuestMemoryArrayBuffer } = await import(workerData.entry);
const { GuestMemoryMmap } = await import(workerData.mmapEntry);
const Cls = workerData.kind === "mmap" ? GuestMemoryMmap : GuestMemoryArrayBuffer;

parentPort.on("message", (msg) => {
  const mem = Cls.fromTransferable(msg.transferable);
  // what the main thread wrote before posting
  const seen = mem.readU32(msg.base);
  // write through every path: scalar, bulk, atomic
  mem.writeU64(msg.base + 0x1000, 0x1122334455667788n);
  mem.write(msg.base + 0x2000, Uint8Array.of(1, 2, 3, 4));
  mem.storeU16Release(msg.base + 0x2ffe, 0xbeef);
  let hole = "none";
  try {
    mem.readU8(msg.base + mem.size + 0x100000);
  } catch (e) {
    hole = e.code;
  }
  parentPort.postMessage({ seen, hole, regions: mem.regions.length, hostAddress: mem.regions[0].hostAddress ?? null });
});
