// Lints what each published package would ship (`pnpm pack` under the hood):
// exports that point at missing files, wrong types conditions, and the like.
// Private packages are skipped. Exits non-zero on any error or warning (--strict).
// The root `publint` script (the turbo task of the test command) runs scripts/attw.mjs after it.
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
let failed = 0;
for (const dir of readdirSync(join(root, "packages")).sort()) {
  const pkg = JSON.parse(readFileSync(join(root, "packages", dir, "package.json"), "utf8"));
  if (pkg.private) continue;
  const r = spawnSync("publint", ["--strict", join("packages", dir)], { cwd: root, encoding: "utf8" });
  const out = `${r.stdout}${r.stderr}`.trim().split("\n").filter((l) => !/^(Running|Packing|Linting)/.test(l)).join("\n");
  console.log(`${pkg.name}: ${out}`);
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
