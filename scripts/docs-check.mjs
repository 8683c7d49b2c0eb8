// Checks the rendered API docs site (docs/api, written by `pnpm run docs`) the way a reader sees it:
//  1. statically, every page: each relative link and asset reference resolves to a file of the
//     site (and a #fragment to an anchor on that page); no link is a bare file name that
//     markdown auto-linking turned into a web address (`http://DESIGN.md`); no package's API
//     sits under a sub-module named `index`;
//  2. in headless Chromium (Debian's `chromium`, driven by playwright-core), a few pages served
//     from localhost: the index, the package page of virtio-queue, the Kvm class page and
//     vmm-reference's DESIGN page. Each must load with no console error, no uncaught exception,
//     no failed or non-localhost request, show the text expected there, keep its content inside
//     the content column, and render its sidebar navigation. A screenshot of each goes to
//     $TS_VMM_CACHE/docs-check (default ~/.cache/ts-vmm/docs-check).
// Last line: {"check":"docs","pages":N,"passed":P,"failed":F,"links":L,"screenshots":"…"}, where
// the N pages and the static check are N + 1 checks (P + F of them); exits non-zero if anything
// failed. CHROMIUM=/path overrides the browser binary.
import { createServer } from "node:http";
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, extname, join, normalize, relative, sep } from "node:path";
import { chromium } from "playwright-core";

const root = new URL("..", import.meta.url).pathname;
const site = join(root, "docs", "api");
const cache = process.env.TS_VMM_CACHE ?? join(process.env.HOME ?? "/root", ".cache", "ts-vmm");
const shots = join(cache, "docs-check");
const browserPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** The pages opened in the browser, with text each must show once its scripts ran. */
const PAGES = [
  { name: "index", path: "index.html", text: ["ts-vmm", "vmm-sys-util", "kvm-ioctls", "virtio-queue", "vmm-reference", "BENCHMARKS", "CONTRIBUTING"] },
  // The package page lists virtio-queue's API itself (no sub-module named "index"), and its mock subpath.
  { name: "virtio-queue", path: "modules/_ts-vmm_virtio-queue.html", text: ["@ts-vmm/virtio-queue", "Queue", "DescriptorChain", "mock", "DESIGN"] },
  { name: "kvm-class", path: "classes/_ts-vmm_kvm-ioctls.Kvm.html", text: ["Class Kvm", "createVm", "@ts-vmm/kvm-ioctls"] },
  { name: "vmm-reference-design", path: "documents/_ts-vmm_vmm-reference.DESIGN.html", text: ["vmm-reference design"] },
];

const failures = [];
const fail = (what) => failures.push(what);

if (!existsSync(join(site, "index.html"))) {
  console.error(`docs-check: ${relative(root, site)}/index.html is missing: run \`pnpm run docs\` first`);
  console.log(JSON.stringify({ check: "docs", pages: PAGES.length, passed: 0, failed: PAGES.length, links: 0, screenshots: shots }));
  process.exit(1);
}

// 1. Static links of every page.
function htmlFiles(dir) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...htmlFiles(p));
    else if (e.name.endsWith(".html")) out.push(p);
  }
  return out;
}
const anchors = new Map();
function anchorsOf(file) {
  if (!anchors.has(file)) anchors.set(file, new Set([...readFileSync(file, "utf8").matchAll(/\s(?:id|name)="([^"]*)"/g)].map((m) => m[1])));
  return anchors.get(file);
}
let links = 0;
const bogus = /^https?:\/\/[^/]*\.(md|mjs|ts|json)(\/|#|$)/i;
for (const file of htmlFiles(site)) {
  const html = readFileSync(file, "utf8");
  for (const m of html.matchAll(/\s(?:href|src)="([^"]*)"/g)) {
    const ref = m[1].replaceAll("&amp;", "&");
    links++;
    if (bogus.test(ref)) {
      fail(`${relative(site, file)}: auto-linked file name ${ref}`);
      continue;
    }
    if (/^[a-z][a-z0-9+.-]*:/i.test(ref) || ref.startsWith("//") || ref === "") continue;
    const [path, fragment] = ref.split("?")[0].split("#");
    const abs = path === "" ? file : normalize(join(dirname(file), decodeURIComponent(path)));
    if (!abs.startsWith(site + sep) || !existsSync(abs)) {
      fail(`${relative(site, file)}: broken link ${ref}`);
    } else if (fragment && abs.endsWith(".html") && !anchorsOf(abs).has(decodeURIComponent(fragment))) {
      fail(`${relative(site, file)}: link to a missing anchor ${ref}`);
    }
  }
}

// A package's main entry point is its package page, never a sub-module named "index" (a package
// with subpaths heads its src/index.ts with `@mergeModuleWith <project>`).
for (const f of readdirSync(join(site, "modules"))) {
  if (/\.index(\.|$)/.test(f.replace(/\.html$/, ""))) fail(`modules/${f}: a sub-module named "index" (add \`@mergeModuleWith <project>\` to that package's src/index.ts)`);
}
const linkFailures = failures.length;

// 2. The browser.
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png", ".json": "application/json", ".mjs": "text/javascript" };
const server = createServer((req, res) => {
  const path = decodeURIComponent(new URL(req.url ?? "/", "http://localhost").pathname);
  const file = normalize(join(site, path.endsWith("/") ? path + "index.html" : path));
  if (!file.startsWith(site + sep) || !existsSync(file) || !statSync(file).isFile()) {
    res.writeHead(404).end("not found");
    return;
  }
  res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" }).end(readFileSync(file));
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const origin = `http://127.0.0.1:${server.address().port}`;

mkdirSync(shots, { recursive: true });
let passed = 0;
let browser;
try {
  if (!existsSync(browserPath)) throw new Error(`no browser at ${browserPath} (scripts/setup.sh installs Debian's chromium; CHROMIUM=/path overrides)`);
  // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
  browser = await chromium.launch({ executablePath: browserPath, args: ["--no-sandbox"] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  // Only the site itself may be fetched: anything else (a CDN font, an auto-linked file name)
  // is refused and counted.
  await context.route("**/*", (route) => (route.request().url().startsWith(origin + "/") ? route.continue() : route.abort()));
  for (const p of PAGES) {
    const page = await context.newPage();
    const problems = [];
    page.on("console", (msg) => { if (msg.type() === "error") problems.push(`console error: ${msg.text()}`); });
    page.on("pageerror", (e) => problems.push(`uncaught: ${e.message}`));
    page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} (${r.failure()?.errorText})`));
    page.on("response", (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`); });
    const response = await page.goto(`${origin}/${p.path}`, { waitUntil: "load" });
    if (!response || response.status() !== 200) problems.push(`HTTP ${response?.status()} for the page itself`);
    // The sidebar is filled in by the site's script from its compressed navigation data: wait for
    // it, so that a broken script shows as a missing sidebar, not as a page that looked fine.
    try {
      await page.waitForSelector(".site-menu nav a, #tsd-nav-container a", { timeout: 10000 });
    } catch {
      problems.push("the navigation sidebar did not render");
    }
    // Nothing runs out of the content column into the "On This Page" column (wide tables scroll
    // inside it: docs/api-site.css).
    const overflow = await page.evaluate(() => {
      const col = document.querySelector(".col-content");
      if (!col) return -1;
      const right = col.getBoundingClientRect().right;
      let most = 0;
      for (const el of col.querySelectorAll("table, pre, img, p, li")) most = Math.max(most, el.getBoundingClientRect().right - right);
      return Math.round(most);
    });
    if (overflow < 0) problems.push("no content column (.col-content)");
    else if (overflow > 1) problems.push(`content ${overflow}px past the right edge of its column`);
    const body = await page.innerText("body");
    for (const t of p.text) if (!body.includes(t)) problems.push(`text not on the page: ${JSON.stringify(t)}`);
    await page.screenshot({ path: join(shots, `${p.name}.png`) });
    await page.close();
    if (problems.length === 0) passed++;
    else for (const q of problems) fail(`${p.path}: ${q}`);
  }
} catch (e) {
  fail(`browser: ${e instanceof Error ? e.message : String(e)}`);
} finally {
  await browser?.close();
  server.close();
}

for (const f of failures.slice(0, 40)) console.error(`docs-check: ${f}`);
if (failures.length > 40) console.error(`docs-check: … and ${failures.length - 40} more`);
// Each page is one check, and the static link check of the whole site one more.
const failed = PAGES.length - passed + (linkFailures > 0 ? 1 : 0);
console.log(JSON.stringify({ check: "docs", pages: PAGES.length, passed: passed + (linkFailures > 0 ? 0 : 1), failed, links, screenshots: shots }));
process.exit(failures.length === 0 && failed === 0 ? 0 : 1);
