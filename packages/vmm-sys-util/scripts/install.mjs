// `install` lifecycle script. Inside the ts-vmm workspace it does nothing: `pnpm run build`
// (turbo) builds the addon, so `pnpm install` stays fast and never fails on a compiler problem.
// Installed as a dependency elsewhere, it builds the addon with node-gyp unless it is there.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
if (existsSync(join(root, "..", "..", "pnpm-workspace.yaml")) && existsSync(join(root, "..", "..", "turbo.json"))) {
  console.log("vmm-sys-util: in the workspace, the addon is built by `pnpm run build`, not at install");
  process.exit(0);
}
if (existsSync(join(root, "build", "Release", "vmm_sys_util.node"))) process.exit(0);
const r = spawnSync(process.execPath, [join(root, "scripts", "build-native.mjs"), "--rebuild"], { cwd: root, stdio: "inherit" });
process.exit(r.status ?? 1);
