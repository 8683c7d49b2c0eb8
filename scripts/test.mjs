// Runs every package's typecheck (sources and tests) and tests through turbo, plus the API docs build (typedoc with its
// validation as errors: an export without TSDoc or a broken doc link fails the run)
// and publint and attw (are the types wrong, esm-only profile) on what each published package would ship,
// then the consumer check (scripts/consumer-check.sh: install and examples on every supported Node),
// then the docs site in headless Chromium (scripts/docs-check.mjs),
// then the addon packages' tests on the other Node versions (scripts/test-other-nodes.mjs), then the failures, the nested
// runs that were discarded and run again, and one closing line with the totals from each package's vitest JSON report:
// "tests: N passed, N failed, N skipped".
// Exits non-zero if any test failed, any turbo task failed, or no test ran.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const pkgsDir = join(root, "packages");
const packages = readdirSync(pkgsDir).filter((d) => existsSync(join(pkgsDir, d, "package.json")));
const isReport = (f) => /^\.vitest-report(\.node\d+)?\.json$/.test(f);
for (const p of packages) for (const f of readdirSync(join(pkgsDir, p)).filter(isReport)) rmSync(join(pkgsDir, p, f), { force: true });

const cache = process.env.TS_VMM_CACHE ?? join(process.env.HOME ?? "/root", ".cache", "ts-vmm");
// The nested tests' discarded L1 runs (test-guests' runNestedUntilSound appends a line for each:
// the emulated tier failed, or a triple fault of ours was retried once): listed in the summary,
// so a pass that needed a retry says so.
const discardLog = join(cache, "nested", "discards.log");
rmSync(discardLog, { force: true });
const run = spawnSync(
  "pnpm",
  ["exec", "turbo", "run", "typecheck", "test", "docs:api", "publint", `--cache-dir=${cache}/turbo`, "--concurrency=1", "--continue", ...process.argv.slice(2)],
  { cwd: root, stdio: "inherit" },
);

let passed = 0, failed = 0, skipped = 0;
const rows = [];
// The failing tests by name, with the first lines of their messages: printed after the table so
// that the tail of a CI log (often all a reader gets) says what failed, not just how many.
const failures = [];
function firstLines(message) {
  // eslint-disable-next-line no-control-regex
  const text = String(message ?? "").replace(/\x1b\[[0-9;]*m/g, "");
  // The first line, then the lines that say what was expected or what the VMM reported (a long
  // message is mostly the guest's serial output), then the rest, six lines at most.
  const lines = text.split("\n").filter((l) => l.trim() !== "" && !/^\s+at /.test(l));
  const telling = lines.slice(1).filter((l) => /expected|ts-vmm:|Error\b/.test(l));
  const picked = [...new Set([...lines.slice(0, 1), ...telling, ...lines.slice(1)])].slice(0, 6);
  return picked.map((l) => l.slice(0, 300)).join("\n      ");
}
function count(p, report, label) {
  const f = join(pkgsDir, p, report);
  if (!existsSync(f)) return false;
  const r = JSON.parse(readFileSync(f, "utf8"));
  // A file that failed with no failing test in it did not load (or failed in a hook outside
  // any test): count it as a failure of its own. (numFailedTestSuites counts describe blocks
  // too, so a failing test inside a describe would be counted twice.)
  const loadFailures = (r.testResults ?? []).filter(
    (t) => t.status === "failed" && !(t.assertionResults ?? []).some((a) => a.status === "failed"),
  ).length;
  for (const t of r.testResults ?? []) {
    const file = String(t.name ?? "").replace(root, "");
    const failedTests = (t.assertionResults ?? []).filter((a) => a.status === "failed");
    if (t.status === "failed" && failedTests.length === 0) failures.push(`  ${label}: ${file}: ${firstLines(t.message)}`);
    for (const a of failedTests) failures.push(`  ${label}: ${file} > ${a.fullName ?? a.title}: ${firstLines((a.failureMessages ?? []).join("\n"))}`);
  }
  passed += r.numPassedTests;
  failed += r.numFailedTests + loadFailures;
  skipped += r.numPendingTests + r.numTodoTests;
  rows.push(`  ${label.padEnd(20)} ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped${loadFailures ? `, ${loadFailures} files failed outside any test` : ""}`);
  return true;
}
for (const p of packages) count(p, ".vitest-report.json", p);
// Then the consumer check (issue 12): every public package packed, installed from its tarball with
// npm outside the workspace, and each README example run there.
const consumer = spawnSync("bash", [join(root, "scripts/consumer-check.sh")], { cwd: root, stdio: ["ignore", "pipe", "inherit"], encoding: "utf8" });
process.stdout.write(consumer.stdout ?? "");
let examples = { passed: 0, failed: 0, node: [] };
try {
  const last = JSON.parse((consumer.stdout ?? "").trim().split("\n").at(-1) ?? "");
  examples = { passed: last.examples_passed ?? 0, failed: last.examples_failed ?? 0, node: last.node ?? [] };
} catch {
  examples.failed = 1; // no closing line: the check itself failed
}
if (consumer.status !== 0 && examples.failed === 0) examples.failed = 1;
passed += examples.passed;
failed += examples.failed;
rows.push(`  ${"consumer-check".padEnd(20)} ${examples.passed} passed, ${examples.failed} failed (README examples, installed from the tarballs, on Node ${examples.node.join(", ") || "?"})`);
// Then the rendered docs site (docs/api, built by the docs:api task above) in headless Chromium:
// scripts/docs-check.mjs, each page it opens and its link check of the whole site counted as a test.
const docs = spawnSync(process.execPath, [join(root, "scripts/docs-check.mjs")], { cwd: root, stdio: ["ignore", "pipe", "inherit"], encoding: "utf8" });
process.stdout.write(docs.stdout ?? "");
let site = { passed: 0, failed: 0, screenshots: "" };
try {
  const last = JSON.parse((docs.stdout ?? "").trim().split("\n").at(-1) ?? "");
  site = { passed: last.passed ?? 0, failed: last.failed ?? 0, screenshots: last.screenshots ?? "" };
} catch {
  site.failed = 1; // no closing line: the check itself failed
}
if (docs.status !== 0 && site.failed === 0) site.failed = 1;
passed += site.passed;
failed += site.failed;
rows.push(`  ${"docs-check".padEnd(20)} ${site.passed} passed, ${site.failed} failed (the docs site in headless Chromium; screenshots in ${site.screenshots || "?"})`);
// Then the two addon packages' tests on the other Node versions (Node 22, 24, 26), against their
// prebuilds for those ABIs: a run that failed without writing its report counts as one failure.
const others = spawnSync(process.execPath, [join(root, "scripts/test-other-nodes.mjs")], { cwd: root, stdio: "inherit" });
const failedBefore = failed;
for (const p of packages) {
  for (const f of readdirSync(join(pkgsDir, p)).filter((f) => /^\.vitest-report\.node\d+\.json$/.test(f)).sort()) {
    count(p, f, `${p}@node${/node(\d+)/.exec(f)[1]}`);
  }
}
if (others.status !== 0 && failed === failedBefore) {
  failed += 1;
  rows.push(`  ${"other-nodes".padEnd(20)} failed outside any test (scripts/test-other-nodes.mjs)`);
}
if (failures.length > 0) console.log("\nfailed:\n" + failures.join("\n"));
const discards = existsSync(discardLog) ? readFileSync(discardLog, "utf8").split("\n").filter((l) => l !== "") : [];
if (discards.length > 0) console.log(`\nnested runs discarded and run again (${discards.length}):\n` + discards.map((l) => `  ${l}`).join("\n"));
console.log("\nper package:\n" + rows.join("\n"));
console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
const ok = run.status === 0 && others.status === 0 && failed === 0 && passed > 0;
process.exit(ok ? 0 : 1);
