// Runs every package's typecheck (sources and tests) and tests through turbo, plus the API docs build (typedoc with its
// validation as errors: an export without TSDoc or a broken doc link fails the run)
// and publint on what each published package would ship,
// then the consumer check (scripts/consumer-check.sh), then prints one closing line with the totals from each package's vitest JSON report:
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
// Then the consumer check (issue 12): every public package packed, installed from its tarball with
// npm outside the workspace, and each README example run there.
const consumer = spawnSync("bash", [join(root, "scripts/consumer-check.sh")], { cwd: root, stdio: ["ignore", "pipe", "inherit"], encoding: "utf8" });
process.stdout.write(consumer.stdout ?? "");
let examples = { passed: 0, failed: 0 };
try {
  const last = JSON.parse((consumer.stdout ?? "").trim().split("\n").at(-1) ?? "");
  examples = { passed: last.examples_passed ?? 0, failed: last.examples_failed ?? 0 };
} catch {
  examples.failed = 1; // no closing line: the check itself failed
}
if (consumer.status !== 0 && examples.failed === 0) examples.failed = 1;
passed += examples.passed;
failed += examples.failed;
rows.push(`  ${"consumer-check".padEnd(16)} ${examples.passed} passed, ${examples.failed} failed (README examples, installed from the tarballs)`);
console.log("\nper package:\n" + rows.join("\n"));
console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
const ok = run.status === 0 && failed === 0 && passed > 0;
process.exit(ok ? 0 : 1);
