// Bundles the CLI (dist/cli.bundle.js, with dist/bundle-*.js chunks for what it imports dynamically) and the
// vCPU worker (one ES module, dist/vcpu-worker.bundle.js), after tsc built dist/. Start-up cost is mostly
// module loading (resolving, reading and compiling ~120 small files, twice: once
// in the main thread, once per worker isolate); one file each loads in about
// 60 % of the time (BENCHMARKS.md, vmm-reference start-up). esbuild: the bundler
// tsx already brings into the workspace, fast and maintained.
//
// The two addon packages find their package root (for node-gyp-build and their
// prebuilds) from their own module URL. Inside a bundle import.meta.url is the
// bundle's, so in their dist/native.js it is replaced by the URL the module has
// in its installed package, found at run time from the bundle's location (Node's
// node_modules walk for "<package>/package.json", else createRequire(...).resolve of it:
// works in the workspace, in npm's, pnpm's and yarn's layouts).
import { chmod, copyFile, readFile, readdir, rm } from "node:fs/promises";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const pkgDir = fileURLToPath(new URL("..", import.meta.url));

/**
 * @param {{ bundleNodeGypBuild?: boolean }} [opts] bundleNodeGypBuild (the CommonJS bundles only):
 *   node-gyp-build, which the addon packages require at run time to find their .node file, goes
 *   into the bundle instead. Required from node_modules it costs ~2 ms per isolate here (package
 *   resolution, its files read and compiled without a cache), paid by the main thread and again by
 *   every vCPU worker before its first KVM_RUN; bundled, it is in the bundle's code cache. Its
 *   own run-time requires (package.json, the .node file) use the bundle's `require`, which
 *   code-cache.ts makes with createRequire(bundle): absolute paths, so the same files load. Not in
 *   the ES module bundles: there esbuild's require shim throws.
 * @returns {import("esbuild").Plugin}
 */
const addonRoots = (opts = {}) => ({
  name: "ts-vmm-addon-roots",
  setup(b) {
    b.onLoad({ filter: /[\\/](kvm-ioctls|vmm-sys-util)[\\/]dist[\\/]native\.js$/ }, async (args) => {
      const pkg = /[\\/]kvm-ioctls[\\/]/.test(args.path) ? "@ts-vmm/kvm-ioctls" : "@ts-vmm/vmm-sys-util";
      let src = await readFile(args.path, "utf8");
      if (!src.includes("import.meta.url")) throw new Error(`${args.path}: expected import.meta.url (the addon root) in it`);
      // The package's package.json by Node's node_modules walk from the bundle's folder, without
      // the exports map: ~0.1 ms, where require.resolve's first exports-map resolution costs
      // ~1–3 ms in each isolate here (the main thread's and every vCPU worker's, before its first
      // KVM_RUN; DESIGN.md, start-up). require.resolve decides where the walk finds nothing
      // (Yarn Plug'n'Play, NODE_PATH). Both name the same folder (the walk through the link a
      // package manager made, require.resolve its target), so node-gyp-build finds the same files.
      let header =
        'import { createRequire as __tsvmmCreateRequire } from "node:module";\n' +
        'import { existsSync as __tsvmmExistsSync } from "node:fs";\n' +
        'import { basename as __tsvmmBasename, dirname as __tsvmmDirname, join as __tsvmmJoin } from "node:path";\n' +
        'import { fileURLToPath as __tsvmmFileURLToPath, pathToFileURL as __tsvmmPathToFileURL } from "node:url";\n' +
        "const __tsvmmPackageJson = (() => {\n" +
        "  for (let d = __tsvmmDirname(__tsvmmFileURLToPath(import.meta.url)); ; ) {\n" +
        `    const p = __tsvmmJoin(d, "node_modules", "${pkg}", "package.json");\n` +
        '    if (__tsvmmBasename(d) !== "node_modules" && __tsvmmExistsSync(p)) return p;\n' +
        "    const up = __tsvmmDirname(d);\n" +
        `    if (up === d) return __tsvmmCreateRequire(import.meta.url).resolve("${pkg}/package.json");\n` +
        "    d = up;\n" +
        "  }\n" +
        "})();\n" +
        'const __tsvmmNativeUrl = new URL("dist/native.js", __tsvmmPathToFileURL(__tsvmmPackageJson)).href;\n';
      if (opts.bundleNodeGypBuild) {
        const call = 'require("node-gyp-build")';
        if (!src.includes(call)) throw new Error(`${args.path}: expected ${call} in it`);
        header += 'import __tsvmmNodeGypBuild from "node-gyp-build";\n';
        src = src.replaceAll(call, "__tsvmmNodeGypBuild");
      }
      return { contents: header + src.replaceAll("import.meta.url", "__tsvmmNativeUrl"), loader: "js", resolveDir: dirname(args.path) };
    });
  },
});

// zod as CommonJS inside the CLI's CommonJS run bundle: only the API server and the snapshot pool
// use it, so `run` never calls it, yet the ES module build it resolves to by default is hoisted to
// the bundle's top level, where its ~2,000 functions each cost the run bundle's code cache an entry
// that every start reads. zod's CommonJS build (the "require" condition of its exports) is wrapped
// in esbuild's per-module closures instead: inside them nothing is compiled or cached until the
// API loads it. The same zod version and code, ~150 KiB less code cache, ~3 ms less bundle load
// here (DESIGN.md, start-up).
/** @type {import("esbuild").Plugin} */
const zodAsCommonJs = {
  name: "ts-vmm-zod-as-commonjs",
  setup(b) {
    b.onResolve({ filter: /^zod(\/.*)?$/ }, async (args) => {
      if (args.pluginData === "zod-as-commonjs") return undefined;
      const r = await b.resolve(args.path, { kind: "require-call", resolveDir: args.resolveDir, pluginData: "zod-as-commonjs" });
      if (r.errors.length > 0) return { errors: r.errors };
      if (!/\.c?js$/.test(r.path) || r.path.endsWith(".mjs")) throw new Error(`zod resolved to ${r.path}, not its CommonJS build`);
      return { path: r.path };
    });
  },
};

// Chunk names carry a content hash: drop the previous build's so none is left stale, and the
// run bundle's code cache (scripts/code-cache.mjs writes a new one).
for (const f of await readdir(`${pkgDir}/dist`)) if (f.startsWith("bundle-") || f.endsWith(".run.cjs.jsc")) await rm(`${pkgDir}/dist/${f}`);

const common = {
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  sourcemap: true,
  minifySyntax: true,
  plugins: [addonRoots()],
  logLevel: "warning",
};
// The CLI with code splitting: what `run` needs is in dist/cli.bundle.js and the chunks it
// imports statically; what the CLI imports dynamically (the API server and its zod schemas, the
// snapshot pool) lands in chunks that are read only when used. Without splitting, esbuild inlines dynamic imports, and
// every run parsed the ~0.8 MB of zod (half the bundle) before the guest started.
await build({
  ...common,
  entryPoints: [`${pkgDir}/dist/cli.js`],
  outdir: `${pkgDir}/dist`,
  splitting: true,
  entryNames: "[name].bundle",
  // Flat in dist/, beside the modules tsc wrote: code that finds files from its own
  // import.meta.url (package-root.ts, the CPU templates, package.json) sees the same
  // directory in any chunk as in dist/*.js.
  chunkNames: "bundle-[name]-[hash]",
});
// The CLI again as one CommonJS file, for the `ts-vmm` binary (bin.js): src/code-cache.ts runs it
// through node:vm with a V8 code cache, which Node 20 offers for scripts only, not for ES modules.
// Dynamic imports become lazily run functions inside it, so the API server and zod cost nothing
// until used (with a cache they are not even parsed). import.meta.url is the bundle's own URL,
// which the loader passes in; the file sits in dist/ like the ESM bundle, so URLs relative to
// it resolve the same. Whitespace and comments minified: 1.6 → 1.1 MB, and ASCII only, so V8
// keeps the source as a one-byte string (~9 MB less peak RSS than with the comments' non-ASCII
// characters, which made it two-byte); identifiers stay readable, line numbers do not (debug
// with dist/cli.js or the ESM bundle and its source map).
await build({
  ...common,
  format: "cjs",
  sourcemap: false,
  entryPoints: [`${pkgDir}/dist/cli.js`],
  outfile: `${pkgDir}/dist/cli.run.cjs`,
  plugins: [addonRoots({ bundleNodeGypBuild: true }), zodAsCommonJs],
  minifyWhitespace: true,
  define: { "import.meta.url": "__tsvmmBundleUrl" },
});
// The executable as CommonJS (dist/bin.cjs, package.json's `bin`): Node runs it without starting
// its ES module loader. import.meta.url is this file's URL, which a banner computes.
await build({
  ...common,
  format: "cjs",
  sourcemap: false,
  entryPoints: [`${pkgDir}/dist/bin.js`],
  outfile: `${pkgDir}/dist/bin.cjs`,
  define: { "import.meta.url": "__tsvmmBinUrl" },
  banner: { js: '"use strict";\nconst __tsvmmBinUrl = require("node:url").pathToFileURL(__filename).href;' },
});
// The vCPU worker: one file (it imports nothing dynamically).
await build({
  ...common,
  entryPoints: [`${pkgDir}/dist/vcpu-worker.js`],
  outfile: `${pkgDir}/dist/vcpu-worker.bundle.js`,
});
// The same worker as CommonJS, run with a code cache by dist/vcpu-worker.entry.cjs (its entry,
// bundled with code-cache.ts), as the CLI's run bundle is by bin.cjs.
await build({
  ...common,
  format: "cjs",
  sourcemap: false,
  minifyWhitespace: true,
  entryPoints: [`${pkgDir}/dist/vcpu-worker.js`],
  outfile: `${pkgDir}/dist/vcpu-worker.run.cjs`,
  plugins: [addonRoots({ bundleNodeGypBuild: true })],
  define: { "import.meta.url": "__tsvmmBundleUrl" },
});
await build({
  ...common,
  format: "cjs",
  sourcemap: false,
  entryPoints: [`${pkgDir}/dist/vcpu-worker-entry.js`],
  outfile: `${pkgDir}/dist/vcpu-worker.entry.cjs`,
  define: { "import.meta.url": "__tsvmmBinUrl" },
  banner: { js: '"use strict";\nconst __tsvmmBinUrl = require("node:url").pathToFileURL(__filename).href;' },
});
// The `ts-vmm` executable (package.json `bin`): a POSIX shell launcher that runs dist/bin.cjs
// without NODE_EXTRA_CA_CERTS (src/ts-vmm.sh says why).
await copyFile(`${pkgDir}/src/ts-vmm.sh`, `${pkgDir}/dist/ts-vmm`);
await chmod(`${pkgDir}/dist/ts-vmm`, 0o755);
