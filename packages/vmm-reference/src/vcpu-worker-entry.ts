// The vCPU worker's entry where the build made the worker's CommonJS bundle
// (dist/vcpu-worker.run.cjs): runs it with a V8 code cache (code-cache.ts),
// written right after its top level ran where none was accepted. The build
// bundles this file as dist/vcpu-worker.entry.cjs, so the worker's isolate
// starts without Node's ES module loader too (worker-pool.ts starts it).
import { fileURLToPath } from "node:url";
import { runCachedBundle } from "./code-cache.js";
import { mark } from "./startup-trace.js";

mark("worker thread started");
runCachedBundle(fileURLToPath(new URL("./vcpu-worker.run.cjs", import.meta.url)), { writeAt: "soon" });
