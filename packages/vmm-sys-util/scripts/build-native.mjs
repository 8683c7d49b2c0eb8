// Builds build/Release/vmm_sys_util.node with node-gyp. Incremental: configures only when build/
// has no Makefile, so `pnpm run build` stays fast and a concurrent reader of the .node file
// never sees build/ deleted (as `node-gyp rebuild` would). `--rebuild` forces a clean build.
import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync } from "node:fs";
import { createRequire } from "node:module";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

// node-gyp, never assumed: this package's devDependency in the workspace (or one the user
// installed), else the one the package manager bundles: npm sets npm_config_node_gyp, and
// npm and pnpm put theirs on PATH for install scripts.
function findGyp() {
  try {
    return [process.execPath, join(dirname(createRequire(import.meta.url).resolve("node-gyp/package.json")), "bin", "node-gyp.js")];
  } catch {}
  const fromPm = process.env["npm_config_node_gyp"];
  if (fromPm && existsSync(fromPm)) return [process.execPath, fromPm];
  for (const dir of (process.env["PATH"] ?? "").split(delimiter)) {
    try {
      accessSync(join(dir, "node-gyp"), constants.X_OK);
      return [join(dir, "node-gyp")];
    } catch {}
  }
  console.error(
    "vmm-sys-util: node-gyp not found, so the addon cannot be built from source. Install it (npm install -g node-gyp) " +
      "or run the install through npm or pnpm, which bundle it.",
  );
  process.exit(1);
}
const [cmd, ...pre] = findGyp();

// The repo's .npmrc sets nodedir=/usr (this machine ships Node's headers in /usr/include/node,
// and only the npm registry is reachable). pnpm and npm pass it as npm_config_nodedir; when the
// script runs directly, use /usr if its headers are this Node's.
const usrHeaders = "/usr/include/node/node_version.h";
const nodedir = process.env["npm_config_nodedir"] ?? (existsSync(usrHeaders) && process.execPath === "/usr/bin/node" ? "/usr" : undefined);
const extra = ["--loglevel=warn", ...(nodedir ? [`--nodedir=${nodedir}`] : [])];

function run(...args) {
  const r = spawnSync(cmd, [...pre, ...args, ...extra], { cwd: root, stdio: "inherit" });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

if (process.argv.includes("--rebuild") || !existsSync(join(root, "build", "Makefile"))) run("configure");
run("build", "--jobs=2");
