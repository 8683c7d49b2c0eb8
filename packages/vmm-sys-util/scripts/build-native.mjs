// Builds the addon with node-gyp: configures once, then builds incrementally (make),
// so `pnpm run build` stays fast after the first run. `--rebuild` forces a clean build.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);

// node-gyp: this package's devDependency in the workspace; when installed as a dependency,
// the one npm/pnpm provides (npm_config_node_gyp).
function findGyp() {
  try {
    return join(dirname(require.resolve("node-gyp/package.json")), "bin", "node-gyp.js");
  } catch {
    const fromPm = process.env["npm_config_node_gyp"];
    if (fromPm && existsSync(fromPm)) return fromPm;
    console.error("vmm-sys-util: node-gyp not found (install it, or set npm_config_node_gyp)");
    process.exit(1);
  }
}
const gyp = findGyp();

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
