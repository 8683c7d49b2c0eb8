// Builds the addon with node-gyp: configures once, then builds incrementally (make),
// so `pnpm run build` stays fast after the first run. `--rebuild` forces a clean build.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const gyp = join(dirname(require.resolve("node-gyp/package.json")), "bin", "node-gyp.js");

// The repo's .npmrc sets nodedir=/usr (this machine ships Node's headers in /usr/include/node,
// and only the npm registry is reachable). pnpm passes it as npm_config_nodedir; when the
// script runs directly, fall back to /usr if the headers are there.
const nodedir =
  process.env["npm_config_nodedir"] ??
  (existsSync("/usr/include/node/node_version.h") ? "/usr" : undefined);
const extra = nodedir ? [`--nodedir=${nodedir}`] : [];

function run(...args) {
  const r = spawnSync(process.execPath, [gyp, ...args, ...extra], { cwd: root, stdio: "inherit" });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

if (process.argv.includes("--rebuild") || !existsSync(join(root, "build", "Makefile"))) {
  run("rebuild", "--jobs=2");
} else {
  run("build", "--jobs=2");
}
