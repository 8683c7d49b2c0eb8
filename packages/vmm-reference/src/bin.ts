#!/usr/bin/env node
// The `ts-vmm` executable. Before the CLI and the packages it composes load,
// `run` starts its vCPU workers (worker-pool.ts), so their isolates and modules
// load in parallel with the main thread's. Then the CLI runs as `cli.js` would,
// from its one-file bundle when the build made one.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { prestartCount, prestartVcpuWorkers } from "./worker-pool.js";

prestartVcpuWorkers(prestartCount(process.argv.slice(2)));
// The CLI's bundle (scripts/bundle.mjs) loads faster; cli.js where there is none.
const bundle = new URL("./cli.bundle.js", import.meta.url);
const entry = existsSync(fileURLToPath(bundle)) ? bundle.href : new URL("./cli.js", import.meta.url).href;
const { main } = (await import(entry)) as typeof import("./cli.js");
main();
