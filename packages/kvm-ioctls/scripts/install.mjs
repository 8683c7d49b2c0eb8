// `install` lifecycle script. Declaring one stops pnpm from running its implicit
// `node-gyp rebuild` for packages with a binding.gyp on every `pnpm install`.
// Inside the ts-vmm workspace it does nothing (turbo's `build` compiles the addon
// and caches it); installed as a dependency elsewhere, it compiles the addon.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const pkg = join(dirname(fileURLToPath(import.meta.url)), "..");
const workspace = join(pkg, "..", "..");
if (existsSync(join(workspace, "pnpm-workspace.yaml")) && existsSync(join(workspace, "turbo.json"))) process.exit(0);
if (existsSync(join(pkg, "build", "Release", "kvm_ioctls.node"))) process.exit(0);
const r = spawnSync(process.execPath, [join(pkg, "scripts", "build-native.mjs")], { cwd: pkg, stdio: "inherit" });
process.exit(r.status ?? 1);
