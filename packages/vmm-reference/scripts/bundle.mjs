// Bundles the CLI and the vCPU worker into one ES module each (dist/cli.bundle.js,
// dist/vcpu-worker.bundle.js), after tsc built dist/. Start-up cost is mostly
// module loading (resolving, reading and compiling ~120 small files, twice: once
// in the main thread, once per worker isolate); one file each loads in about
// 60 % of the time (BENCHMARKS.md, vmm-reference start-up). esbuild: the bundler
// tsx already brings into the workspace, fast and maintained.
//
// The two addon packages find their package root (for node-gyp-build and their
// prebuilds) from their own module URL. Inside a bundle import.meta.url is the
// bundle's, so in their dist/native.js it is replaced by the URL the module has
// in its installed package, resolved at run time from the bundle's location
// (createRequire(...).resolve of "<package>/package.json": works in the workspace,
// in npm's and in pnpm's layouts).
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const pkgDir = fileURLToPath(new URL("..", import.meta.url));

/** @type {import("esbuild").Plugin} */
const addonRoots = {
  name: "ts-vmm-addon-roots",
  setup(b) {
    b.onLoad({ filter: /[\\/](kvm-ioctls|vmm-sys-util)[\\/]dist[\\/]native\.js$/ }, async (args) => {
      const pkg = /[\\/]kvm-ioctls[\\/]/.test(args.path) ? "@ts-vmm/kvm-ioctls" : "@ts-vmm/vmm-sys-util";
      const src = await readFile(args.path, "utf8");
      if (!src.includes("import.meta.url")) throw new Error(`${args.path}: expected import.meta.url (the addon root) in it`);
      const header =
        'import { createRequire as __tsvmmCreateRequire } from "node:module";\n' +
        'import { pathToFileURL as __tsvmmPathToFileURL } from "node:url";\n' +
        `const __tsvmmNativeUrl = new URL("dist/native.js", __tsvmmPathToFileURL(__tsvmmCreateRequire(import.meta.url).resolve("${pkg}/package.json"))).href;\n`;
      return { contents: header + src.replaceAll("import.meta.url", "__tsvmmNativeUrl"), loader: "js" };
    });
  },
};

for (const name of ["cli", "vcpu-worker"]) {
  await build({
    entryPoints: [`${pkgDir}/dist/${name}.js`],
    outfile: `${pkgDir}/dist/${name}.bundle.js`,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    sourcemap: true,
    minifySyntax: true,
    plugins: [addonRoots],
    logLevel: "warning",
  });
}
