// Round trip of one forwarded MMIO access between a vCPU-style worker (blocked
// in Atomics.wait) and the device-owner thread, two ways:
//   waitAsync: the owner waits with Atomics.waitAsync on the mailbox (what the VMM uses);
//   message:   the worker posts a message, the owner answers in the mailbox and notifies.
// Run after `pnpm --filter @ts-vmm/vmm-reference build`: node bench/mmio-mailbox.mjs [N]
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { MmioMailboxClient, MmioMailboxServer, MMIO_MAILBOX_BYTES } from "../dist/devices/mmio-mailbox.js";

const N = Number(process.argv[2] ?? 20000);

if (!isMainThread) {
  const { sab, stop, mode, n } = workerData;
  const stopCells = new Int32Array(stop);
  const data = new Uint8Array(4);
  const t0 = performance.now();
  if (mode === "waitAsync") {
    const c = new MmioMailboxClient(sab, stopCells);
    for (let i = 0; i < n; i++) c.call(0xd0001000, false, data);
  } else {
    const cells = new Int32Array(sab);
    for (let i = 0; i < n; i++) {
      Atomics.store(cells, 0, 1);
      parentPort.postMessage(i);
      while (Atomics.load(cells, 0) === 1) Atomics.wait(cells, 0, 1, 50);
    }
  }
  parentPort.postMessage({ done: performance.now() - t0 });
} else {
  const run = (mode) =>
    new Promise((resolve) => {
      const sab = new SharedArrayBuffer(MMIO_MAILBOX_BYTES);
      const stop = new SharedArrayBuffer(4);
      let server;
      if (mode === "waitAsync") server = new MmioMailboxServer(sab, (r) => r.data.fill(0x42));
      const cells = new Int32Array(sab);
      const w = new Worker(new URL(import.meta.url), { workerData: { sab, stop, mode, n: N } });
      w.on("message", (m) => {
        if (typeof m === "number") {
          Atomics.store(cells, 0, 2);
          Atomics.notify(cells, 0);
          return;
        }
        server?.close();
        void w.terminate();
        resolve((m.done / N) * 1000);
      });
    });
  const res = { waitAsync: [], message: [] };
  for (let i = 0; i < 5; i++) for (const m of ["waitAsync", "message"]) res[m].push(await run(m));
  const med = (a) => a.sort((x, y) => x - y)[a.length >> 1];
  console.log(JSON.stringify({ bench: "mmio-mailbox", n: N, waitAsync_us: +med(res.waitAsync).toFixed(2), message_us: +med(res.message).toFixed(2) }));
}
