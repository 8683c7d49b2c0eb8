// Runs the unit tests (vitest) of the two addon packages, vmm-sys-util and kvm-ioctls, on each
// Node version of scripts/node-versions.mjs besides the running one (Node 22, 24, 26), with the
// workspace as installed: vitest 3 and its dependencies are plain JS (esbuild and rollup ship
// binaries that do not depend on Node's ABI), so no reinstall is needed; only the addons differ.
//
// The addons come from each package's prebuilds/linux-x64/node.abi<N>.node (made by
// scripts/prebuild-addon.mjs, run here first; a no-op when up to date) with PREBUILDS_ONLY=1,
// so node-gyp-build skips build/Release (built for the machine's Node: it would even load on
// another major, Node-API does not check the ABI, and then die on a V8 symbol). The chosen
// file is checked before the tests run. That Node's bin/ goes first on PATH, and tests that
// spawn a child use process.execPath, so children run on it too.
//
// Each run writes packages/<pkg>/.vitest-report.node<major>.json, which scripts/test.mjs adds to
// its totals. Exits non-zero if a run failed. TS_VMM_TEST_NODES="22,24" limits the majors.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { extraNodes } from "./node-versions.mjs";

const root = new URL("..", import.meta.url).pathname;
const packages = ["vmm-sys-util", "kvm-ioctls"];
const only = process.env["TS_VMM_TEST_NODES"]?.split(",").map(Number);
const nodes = extraNodes().filter((n) => n.abi !== Number(process.versions.modules) && (!only || only.includes(n.major)));

for (const pkg of packages) {
  const r = spawnSync(process.execPath, [join(root, "scripts", "prebuild-addon.mjs")], { cwd: join(root, "packages", pkg), stdio: ["ignore", "ignore", "inherit"] });
  if (r.status !== 0) {
    console.error(`test-other-nodes: prebuilding ${pkg} failed`);
    process.exit(1);
  }
}

let failed = 0;
for (const n of nodes) {
  const env = {
    ...process.env,
    PATH: `${join(n.dir, "bin")}:${process.env["PATH"]}`,
    PREBUILDS_ONLY: "1",
    // tsx 4.20 (the workspace's) registers its loader with module.register(), which Node 26
    // deprecates at run time (DEP0205): tests that spawn `node --import tsx` and expect an empty
    // stderr would see it. Only that warning code is hidden.
    NODE_OPTIONS: `${process.env["NODE_OPTIONS"] ?? ""} --disable-warning=DEP0205`.trim(),
  };
  for (const pkg of packages) {
    const dir = join(root, "packages", pkg);
    const picked = spawnSync(n.node, ["-p", "require('node-gyp-build').resolve('.')"], { cwd: dir, env, encoding: "utf8" });
    if (picked.status !== 0 || !picked.stdout.trim().endsWith(`node.abi${n.abi}.node`)) {
      console.error(`test-other-nodes: Node ${n.version}: ${pkg} resolves to ${picked.stdout.trim() || picked.stderr.trim()}, not node.abi${n.abi}.node`);
      failed++;
      continue;
    }
    const t0 = Date.now();
    const r = spawnSync(
      n.node,
      [join(dir, "node_modules", "vitest", "vitest.mjs"), "run", "--reporter=dot", "--reporter=json", `--outputFile.json=.vitest-report.node${n.major}.json`],
      { cwd: dir, env, stdio: "inherit" },
    );
    console.log(`test-other-nodes: ${pkg} on Node ${n.version}: ${r.status === 0 ? "passed" : "FAILED"} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    if (r.status !== 0) failed++;
  }
}
process.exit(failed ? 1 : 0);
