// The vCPU worker's entry where the build made the worker's CommonJS bundle
// (dist/vcpu-worker.run.cjs): runs it with a V8 code cache (code-cache.ts),
// written right after its top level ran where none was accepted. The build
// bundles this file as dist/vcpu-worker.entry.cjs, so the worker's isolate
// starts without Node's ES module loader too (worker-pool.ts starts it).
// A worker the `ts-vmm` binary prestarted with `bundleFromParent` (worker-pool.ts) first waits for
// the bundle's bytes and cache header from the main thread (which takes the hash from a
// stamp or computes it, code-cache.ts): ~2 ms less on the way to the first KVM_RUN here.
import { fileURLToPath } from "node:url";
import { parentPort, workerData } from "node:worker_threads";
import { runCachedBundle } from "./code-cache.js";
import { mark } from "./startup-trace.js";
import type { VcpuWorkerBundle, VcpuWorkerPrestart } from "./worker-pool.js";

mark("worker thread started");
const file = fileURLToPath(new URL("./vcpu-worker.run.cjs", import.meta.url));
const wd = workerData as Partial<VcpuWorkerPrestart> | null | undefined;
if (parentPort !== null && wd?.prestart === true && wd.bundleFromParent === true) {
  parentPort.once("message", (m: VcpuWorkerBundle) => {
    const given = m.type === "bundle" && m.bytes !== null && m.header !== null
      ? { bytes: new Uint8Array(m.bytes), header: Buffer.from(m.header, "latin1") }
      : undefined;
    runCachedBundle(file, { writeAt: "soon", ...(given !== undefined ? { source: given } : {}) });
  });
} else {
  runCachedBundle(file, { writeAt: "soon" });
}
