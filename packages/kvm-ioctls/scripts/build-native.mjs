#!/usr/bin/env node
// Builds build/Release/kvm_ioctls.node with node-gyp. Incremental: configures
// only when build/ has no Makefile, so a concurrent reader of the .node file
// never sees build/ deleted (as `node-gyp rebuild` would). --rebuild forces it.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const pkg = join(dirname(fileURLToPath(import.meta.url)), "..");
const gyp = createRequire(import.meta.url).resolve("node-gyp/bin/node-gyp.js");
const run = (...args) => execFileSync(process.execPath, [gyp, ...args, "--loglevel=warn"], { cwd: pkg, stdio: "inherit" });
// Use the Node headers this machine ships (the repo's .npmrc says nodedir=/usr, but
// only pnpm/npm pass that on); node-gyp would otherwise try to download them.
const nodedir = process.env.npm_config_nodedir ?? (existsSync("/usr/include/node/node_api.h") ? "/usr" : undefined);
if (process.argv.includes("--rebuild") || !existsSync(join(pkg, "build", "Makefile"))) {
  run("configure", ...(nodedir ? [`--nodedir=${nodedir}`] : []));
}
run("build");
