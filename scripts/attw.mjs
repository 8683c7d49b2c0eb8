// Are the types wrong? Runs @arethetypeswrong/cli on what each public package would publish:
// `pnpm pack` (as publishing does: workspace: ranges replaced, prepack run) into a scratch folder,
// then `attw <tarball> --profile esm-only` (the packages are ESM only, so the CommonJS-consumer
// resolutions are not checked; node16-esm and bundler are). Exits non-zero on any problem.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const out = mkdtempSync(join(tmpdir(), "ts-vmm-attw-"));
let failed = 0;
try {
  for (const dir of readdirSync(join(root, "packages")).sort()) {
    const pkg = JSON.parse(readFileSync(join(root, "packages", dir, "package.json"), "utf8"));
    if (pkg.private) continue;
    const dest = join(out, dir);
    const pack = spawnSync("pnpm", ["pack", "--pack-destination", dest], { cwd: join(root, "packages", dir), encoding: "utf8" });
    if (pack.status !== 0) {
      console.log(`${pkg.name}: pnpm pack failed\n${pack.stdout}${pack.stderr}`);
      failed++;
      continue;
    }
    const tgz = join(dest, readdirSync(dest).find((f) => f.endsWith(".tgz")));
    const r = spawnSync("attw", [tgz, "--profile", "esm-only", "--format", "ascii"], { cwd: root, encoding: "utf8" });
    const text = `${r.stdout}${r.stderr}`.trim();
    console.log(`${pkg.name}: ${r.status === 0 ? "attw ok" : `attw found problems\n${text}`}`);
    if (r.status !== 0) failed++;
  }
} finally {
  rmSync(out, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
