// `prepack` of the two addon packages (vmm-sys-util, kvm-ioctls): builds the addon with
// prebuildify into prebuilds/linux-x64/node.abi<N>.node for the Node running this script, so
// the tarball installs without a compiler on that Node major. Run from the package folder.
//
// Tagged by ABI (process.versions.modules), not `--napi`: both addons call V8 directly
// (SharedArrayBuffer backing stores, the KVM_RUN fast path), which ties a binary to one
// Node major. prebuildify runs `node-gyp rebuild`, which moves build/Release/<addon>.node
// into prebuilds/; it is copied back so the workspace's build/ stays usable.
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const pkg = process.cwd();
const require = createRequire(join(pkg, "package.json"));
const bin = join(dirname(require.resolve("prebuildify/package.json")), "bin.js");

// Node's headers: the repo's .npmrc says nodedir=/usr (pnpm passes npm_config_nodedir);
// node-gyp would otherwise try to download them. node-gyp is the devDependency (prebuildify
// finds it in node_modules/.bin).
const env = { ...process.env };
if (!env["npm_config_nodedir"] && existsSync("/usr/include/node/node_version.h")) env["npm_config_nodedir"] = "/usr";

const dir = join(pkg, "prebuilds", `${process.platform}-${process.arch}`);
const want = `node.abi${process.versions.modules}.node`;

// Packing again (publint packs too) reuses a prebuild newer than every input of the addon.
const inputs = ["binding.gyp", ...readdirSync(join(pkg, "native")).map((f) => join("native", f))];
const newest = Math.max(...inputs.map((f) => statSync(join(pkg, f)).mtimeMs));
if (existsSync(join(dir, want)) && statSync(join(dir, want)).mtimeMs > newest) {
  console.log(`prebuild-addon: ${join("prebuilds", `${process.platform}-${process.arch}`, want)} is up to date`);
  process.exit(0);
}
rmSync(join(pkg, "prebuilds"), { recursive: true, force: true });
const r = spawnSync(
  process.execPath,
  [bin, "--napi=false", "--strip", "--name=node", `--target=node@${process.versions.node}`],
  { cwd: pkg, env, stdio: "inherit" },
);
if (r.status !== 0) process.exit(r.status ?? 1);

const built = readdirSync(dir).filter((f) => f.endsWith(".node"));
if (!built.includes(want)) {
  console.error(`prebuild-addon: expected ${want} in ${dir}, found ${built.join(", ") || "nothing"}`);
  process.exit(1);
}
const target = join(pkg, "build", "Release");
const addon = JSON.parse(readFileSync(join(pkg, "binding.gyp"), "utf8")).targets[0].target_name;
mkdirSync(target, { recursive: true });
copyFileSync(join(dir, want), join(target, `${addon}.node`));
console.log(`prebuild-addon: ${join("prebuilds", `${process.platform}-${process.arch}`, want)}`);
