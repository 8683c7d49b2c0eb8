// packages/vmm-sys-util/README.md, ts/js code block 1: the same code, run by scripts/consumer-check.sh
// against the packed packages (scripts/check-examples.mjs fails when the two drift).
import { Worker } from "node:worker_threads";
import { EventFd, FdWatcher, MmapRegion } from "@ts-vmm/vmm-sys-util";

// 64 MiB of guest memory backed by a memfd.
const mem = MmapRegion.memfd(64 << 20, { name: "guest-ram" });
console.log(`host address 0x${mem.address.toString(16)}, memfd ${mem.fd}`);

// A doorbell: the worker writes the eventfd, the main thread's loop wakes up.
const doorbell = new EventFd();
const watcher = FdWatcher.watch(doorbell.fd, { readable: true }, () => {
  const kicks = doorbell.tryRead();
  const u32 = new Uint32Array(mem.buffer);
  console.log(`doorbell x${kicks}, worker wrote ${Atomics.load(u32, 0).toString(16)}`);
  watcher.close();
  doorbell.close();
  mem.close(); // the worker may still hold the buffer: the mapping stays until it drops it
});

// The same memory in a worker, zero copies (the SharedArrayBuffer is shared, not copied).
new Worker(
  `const { workerData } = require("node:worker_threads");
   const { writeSync } = require("node:fs");
   Atomics.store(new Uint32Array(workerData.buffer), 0, 0xcafe);
   const one = Buffer.alloc(8); one.writeBigUInt64LE(1n);
   writeSync(workerData.fd, one); // eventfd write: 8-byte counter increment`,
  { eval: true, workerData: { buffer: mem.buffer, fd: doorbell.fd } },
);
