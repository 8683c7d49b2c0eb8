// Runs every package's typecheck (sources and tests) and tests through turbo, plus the API docs build (typedoc with its
// validation as errors: an export without TSDoc or a broken doc link fails the run)
// and publint on what each published package would ship,
// then prints one closing line with the totals from each package's vitest JSON report:
// "tests: N passed, N failed, N skipped".
// Exits non-zero if any test failed, any turbo task failed, or no test ran.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const pkgsDir = join(root, "packages");
const packages = readdirSync(pkgsDir).filter((d) => existsSync(join(pkgsDir, d, "package.json")));
for (const p of packages) rmSync(join(pkgsDir, p, ".vitest-report.json"), { force: true });

const cache = process.env.TS_VMM_CACHE ?? join(process.env.HOME ?? "/root", ".cache", "ts-vmm");
const run = spawnSync(
  "pnpm",
  ["exec", "turbo", "run", "typecheck", "test", "docs:api", "publint", `--cache-dir=${cache}/turbo`, "--concurrency=1", "--continue", ...process.argv.slice(2)],
  { cwd: root, stdio: "inherit" },
);

let passed = 0, failed = 0, skipped = 0;
const rows = [];
for (const p of packages) {
  const f = join(pkgsDir, p, ".vitest-report.json");
  if (!existsSync(f)) continue;
  const r = JSON.parse(readFileSync(f, "utf8"));
  // A file that failed with no failing test in it did not load (or failed in a hook outside
  // any test): count it as a failure of its own. (numFailedTestSuites counts describe blocks
  // too, so a failing test inside a describe would be counted twice.)
  const loadFailures = (r.testResults ?? []).filter(
    (t) => t.status === "failed" && !(t.assertionResults ?? []).some((a) => a.status === "failed"),
  ).length;
  passed += r.numPassedTests;
  failed += r.numFailedTests + loadFailures;
  skipped += r.numPendingTests + r.numTodoTests;
  rows.push(`  ${p.padEnd(16)} ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped${loadFailures ? `, ${loadFailures} files failed outside any test` : ""}`);
}
console.log("\nper package:\n" + rows.join("\n"));
console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
const ok = run.status === 0 && failed === 0 && passed > 0;
process.exit(ok ? 0 : 1);
