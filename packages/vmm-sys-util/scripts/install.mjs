// `install` lifecycle script. Inside the ts-vmm workspace it does nothing: `pnpm run build`
// (turbo) builds the addon, so `pnpm install` stays fast and never fails on a compiler problem.
// Installed as a dependency, it does what `node-gyp-build` would: nothing when an addon for
// this Node loads (build/Release/, or prebuilds/<platform>-<arch>/node.abi<N>.node from the
// tarball), else a build from source (build-native.mjs, which finds node-gyp and says so if it
// cannot). npm_config_build_from_source=true forces the build.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const workspace = join(root, "..", "..");
if (existsSync(join(workspace, "pnpm-workspace.yaml")) && existsSync(join(workspace, "turbo.json"))) {
  console.log("vmm-sys-util: in the workspace, the addon is built by `pnpm run build`, not at install");
  process.exit(0);
}
if (process.env["npm_config_build_from_source"] !== "true") {
  try {
    const load = createRequire(import.meta.url)("node-gyp-build");
    load(root);
    process.exit(0);
  } catch (err) {
    console.log(`vmm-sys-util: no prebuilt addon for Node ${process.version} loads (${err.message.split("\n")[0]}); building from source`);
  }
}
const r = spawnSync(process.execPath, [join(root, "scripts", "build-native.mjs"), "--rebuild"], { cwd: root, stdio: "inherit" });
process.exit(r.status ?? 1);
