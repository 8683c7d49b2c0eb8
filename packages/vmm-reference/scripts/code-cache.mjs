// Writes dist/cli.run.cjs.jsc and dist/vcpu-worker.run.cjs.jsc, the V8 code caches of the CLI's
// and the vCPU worker's CommonJS bundles that src/code-cache.ts reads beside each bundle (a
// read-only install, the nested tier's L1 image).
// A training run compiles what a start needs: `ts-vmm run` of the micro-guest where /dev/kvm
// is usable (the boot path's functions end up in the cache), else `ts-vmm --version` (the
// modules' top-level code only). Plain `node` without NODE_OPTIONS, as the binary runs: V8
// rejects a cache made under other flags. A failed training run leaves no cache and fails
// nothing: the CLI then runs without one and writes its own under ~/.cache at its first exit.
import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, rmSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";

const dist = fileURLToPath(new URL("../dist/", import.meta.url));
const bundle = `${dist}cli.run.cjs`;
const out = `${bundle}.jsc`;
const workerOut = `${dist}vcpu-worker.run.cjs.jsc`;
rmSync(out, { force: true });
rmSync(workerOut, { force: true });
if (!existsSync(bundle)) throw new Error(`${bundle} is missing: run scripts/bundle.mjs first`);
let kvm = false;
try {
  accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
  kvm = true;
} catch {
  // no KVM here: train on --version
}
const guest = `${dist}guest/micro-guest.elf`;
const args = kvm && existsSync(guest) ? ["run", "--kernel", guest, "--cmdline", "mode=hello", "--mem", "64"] : ["--version"];
const env = { ...process.env, TS_VMM_CODE_CACHE_TRAIN: "1" };
delete env["NODE_OPTIONS"];
delete env["TS_VMM_TRACE_STARTUP"];
const r = spawnSync(process.execPath, [`${dist}bin.cjs`, ...args], { env, encoding: "utf8", timeout: 60_000 });
if (existsSync(out)) {
  const w = existsSync(workerOut) ? `, dist/vcpu-worker.run.cjs.jsc ${(statSync(workerOut).size / 1024).toFixed(0)} KiB` : ", no worker cache";
  console.log(`code cache: dist/cli.run.cjs.jsc ${(statSync(out).size / 1024).toFixed(0)} KiB${w}, trained on \`ts-vmm ${args[0]}\``);
} else {
  console.warn(`code cache: none written (training run \`ts-vmm ${args.join(" ")}\` ended with ${r.status ?? r.signal}: ${(r.stderr ?? "").trim().split("\n").at(-1) ?? ""}); the CLI runs without it`);
}
