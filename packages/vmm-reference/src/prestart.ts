// The `ts-vmm` binary's first import (bin.ts), for its side effect: `run` starts the vCPU
// workers it will need (worker-pool.ts) before the rest of the binary loads. A worker's
// isolate takes ~20 ms to start on an idle core, and this file's imports are cheap, while
// code-cache.ts's node:crypto alone takes ~4 ms here (DESIGN.md, start-up): every
// millisecond earlier is one the worker is ready earlier.
import { mark } from "./startup-trace.js";
import { prestartCount, prestartVcpuWorkers } from "./worker-pool.js";

// bin.ts hands them their bundle (handWorkersTheirBundle) once it has loaded node:crypto.
prestartVcpuWorkers(prestartCount(process.argv.slice(2)), { bundleFromParent: true });
mark("vCPU workers prestarting");
