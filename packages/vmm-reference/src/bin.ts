#!/usr/bin/env node
// The `ts-vmm` executable's JavaScript entry (the shell launcher src/ts-vmm.sh runs it).
// Before the CLI and the packages it composes load, `run` starts its vCPU workers
// (prestart.ts, worker-pool.ts), so their isolates and modules
// load in parallel with the main thread's. Then the CLI runs as `cli.js` would:
// from its CommonJS run bundle with a V8 code cache (code-cache.ts) where the
// build made one, else from its ES module bundle, else from cli.js.
// The build also bundles this file as dist/bin.cjs (package.json's `bin`): as
// CommonJS it starts without Node's ES module loader, which costs more than
// the rest of this file (DESIGN.md, start-up). No top-level await, for that.
// prestart.js is imported first: its top level starts the workers before the other imports load.
import "./prestart.js";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { readBundle, runCachedBundle } from "./code-cache.js";
import { mark } from "./startup-trace.js";
import { VCPU_WORKER_BUNDLE, handWorkersTheirBundle } from "./worker-pool.js";

// The prestarted workers' bundle, read here with its cache header (hashed, loading node:crypto,
// only where no stamp matches: code-cache.ts), so they neither read it nor load node:crypto.
handWorkersTheirBundle(() => {
  if (VCPU_WORKER_BUNDLE === null) return null;
  if (process.env["TS_VMM_CODE_CACHE"] === "0") return { bytes: readFileSync(VCPU_WORKER_BUNDLE), header: Buffer.alloc(0) };
  const { bytes, header } = readBundle(VCPU_WORKER_BUNDLE);
  return { bytes, header };
});
mark("ts-vmm binary loaded");
type Cli = typeof import("./cli.js");
const file = (name: string): string => fileURLToPath(new URL(name, import.meta.url));
if (existsSync(file("./cli.run.cjs"))) {
  const b = runCachedBundle(file("./cli.run.cjs"));
  mark(`cli bundle run, code cache ${b.outcome}${b.readFrom !== null ? ` (${b.readFrom})` : ""}`);
  (b.exports as unknown as Cli).main();
} else {
  const esm = existsSync(file("./cli.bundle.js")) ? "./cli.bundle.js" : "./cli.js";
  void (import(new URL(esm, import.meta.url).href) as Promise<Cli>).then((cli) => cli.main());
}
