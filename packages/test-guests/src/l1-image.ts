/**
 * The L1 initramfs of the nested tier, built from layers. Linux unpacks an
 * initramfs that is a concatenation of compressed newc archives one after
 * the other (later entries replace earlier ones), so each big piece — the
 * base (busybox, the KVM modules, /init), QEMU with its libraries, node with
 * its libraries, the workspace packages, the L2 kernel and initramfs — is its
 * own archive, cached once under `cacheDir("nested")` and keyed by a content
 * hash of everything in it. A run concatenates the layers it needs (plus a
 * tiny per-run job layer) into a temporary file that is removed afterwards.
 *
 * Every host file keeps its absolute path inside L1 (`/usr/bin/node`, the
 * workspace under its checkout path, the kernel under the cache path), so a
 * {@link ProcessPlan} built on the host runs unchanged inside L1.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { basename, delimiter, dirname, isAbsolute, join, resolve, sep } from "node:path";
import { promisify } from "node:util";
import { cacheDir } from "@ts-vmm/test-utils/node";
import { TestGuestsError } from "./error.js";

const run = promisify(execFile);

/** One entry of a layer: a file copied from the host, inline content, a symlink or a directory. */
export type LayerEntry =
  /** A copy of host file `from` (mode: given, else the host file's). */
  | { readonly path: string; readonly from: string; readonly mode?: number }
  /** A file with this content (mode default 0644). */
  | { readonly path: string; readonly content: string | Uint8Array; readonly mode?: number }
  /** A symbolic link to `symlink` (kept as is, relative or absolute). */
  | { readonly path: string; readonly symlink: string }
  /** An (empty) directory. */
  | { readonly path: string; readonly dir: true };

/** A layer: a name (the cache file's prefix) and its entries, paths absolute inside L1. */
export interface Layer {
  /** Prefix of the cache file (`<name>-<hash>.cpio.zst`); also what pruning groups by. */
  readonly name: string;
  /** The files, links and directories, at their absolute paths inside L1. */
  readonly entries: readonly LayerEntry[];
}

/** Layers kept per name in the cache when a new one is built (the newest ones, by last use). */
const KEEP_PER_NAME = 3;
/** A layer used within this long is never pruned (another worktree's run may be about to read it). */
const PRUNE_MIN_AGE_MS = 60 * 60 * 1000;

function hashFile(h: ReturnType<typeof createHash>, file: string): void {
  h.update(readFileSync(file));
}

/** Content hash of a layer: every path, mode, symlink target and file content. */
export function layerHash(layer: Layer): string {
  const h = createHash("sha256");
  const sorted = [...layer.entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (const e of sorted) {
    h.update(`${e.path}\0`);
    if ("symlink" in e) h.update(`L${e.symlink}\0`);
    else if ("dir" in e) h.update("D\0");
    else {
      h.update(`F${e.mode ?? 0}\0`);
      if ("from" in e) hashFile(h, e.from);
      else h.update(e.content);
      h.update("\0");
    }
  }
  return h.digest("hex").slice(0, 16);
}

async function need(tool: string): Promise<void> {
  try {
    await run("sh", ["-c", `command -v ${tool}`]);
  } catch (cause) {
    throw new TestGuestsError("MissingTool", `${tool} is needed to build the L1 image (scripts/setup.sh installs it)`, { cause });
  }
}

function stagePath(stage: string, p: string): string {
  if (!isAbsolute(p)) throw new TestGuestsError("InvalidArgument", `layer path must be absolute, got ${p}`);
  return join(stage, p);
}

/** Writes a layer's entries under `stage` (a scratch directory standing for L1's /). */
function stageLayer(stage: string, layer: Layer): void {
  for (const e of layer.entries) {
    const dst = stagePath(stage, e.path);
    if ("dir" in e) {
      mkdirSync(dst, { recursive: true });
      continue;
    }
    mkdirSync(dirname(dst), { recursive: true });
    rmSync(dst, { force: true, recursive: true });
    if ("symlink" in e) symlinkSync(e.symlink, dst);
    else if ("from" in e) {
      copyFileSync(e.from, dst);
      chmodSync(dst, e.mode ?? statSync(e.from).mode & 0o7777);
    } else writeFileSync(dst, e.content, { mode: e.mode ?? 0o644 });
  }
}

/**
 * Builds (or finds in the cache) the zstd-compressed newc archive of a
 * layer and returns its path. Concurrent builders write private temp files
 * and the first rename wins.
 *
 * @throws {@link TestGuestsError} `MissingTool` if cpio or zstd is missing.
 */
export async function buildLayer(layer: Layer, outDir: string = cacheDir("nested")): Promise<string> {
  const hash = layerHash(layer);
  const out = join(outDir, `${layer.name}-${hash}.cpio.zst`);
  if (existsSync(out)) {
    const now = new Date();
    utimesSync(out, now, now); // last use, for pruning
    return out;
  }
  for (const t of ["cpio", "zstd"]) await need(t);
  const stage = join(outDir, `.stage-${layer.name}-${process.pid}-${Date.now()}`);
  const tmp = `${out}.tmp-${process.pid}`;
  try {
    mkdirSync(stage, { recursive: true });
    stageLayer(stage, layer);
    await run(
      "sh",
      ["-c", `cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | nice zstd -q -T1 -12 -c > "$2"`, "sh", stage, tmp],
      { maxBuffer: 16 << 20 },
    );
    renameSync(tmp, out);
  } finally {
    rmSync(stage, { recursive: true, force: true });
    rmSync(tmp, { force: true });
  }
  pruneLayers(outDir, layer.name, out);
  return out;
}

function pruneLayers(dir: string, name: string, keep: string): void {
  const re = new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}-[0-9a-f]{16}\\.cpio\\.zst$`);
  const olds = readdirSync(dir)
    .filter((f) => re.test(f) && join(dir, f) !== keep)
    .map((f) => ({ f: join(dir, f), t: statSync(join(dir, f)).mtimeMs }))
    .sort((a, b) => b.t - a.t);
  const now = Date.now();
  for (const o of olds.slice(KEEP_PER_NAME - 1)) if (now - o.t > PRUNE_MIN_AGE_MS) rmSync(o.f, { force: true });
}

/**
 * Concatenates built layers into one initramfs file (each archive padded to
 * 4 bytes, which the kernel's unpacker skips).
 */
export function concatLayers(files: readonly string[], out: string): void {
  const parts: Buffer[] = [];
  for (const f of files) {
    const b = readFileSync(f);
    parts.push(b);
    const pad = (4 - (b.byteLength % 4)) % 4;
    if (pad) parts.push(Buffer.alloc(pad));
  }
  writeFileSync(out, Buffer.concat(parts));
}

/** Finds a program on PATH (or returns an absolute path as given). */
export function which(file: string): string {
  if (isAbsolute(file)) return file;
  for (const d of (process.env["PATH"] ?? "").split(delimiter)) {
    if (!d) continue;
    const p = join(d, file);
    if (existsSync(p)) return p;
  }
  throw new TestGuestsError("MissingTool", `${file} is not on PATH`);
}

/** The shared libraries (and the ELF interpreter) `ldd` names for an executable or shared object. */
export async function sharedLibraries(file: string): Promise<string[]> {
  let stdout: string;
  try {
    ({ stdout } = await run("ldd", [file]));
  } catch (e) {
    // "not a dynamic executable" (static binaries): nothing to add.
    if (/not a dynamic executable/.test(String((e as { stdout?: string }).stdout ?? "") + String(e))) return [];
    throw new TestGuestsError("MissingTool", `ldd ${file} failed: ${String(e)}`, { cause: e });
  }
  const libs = new Set<string>();
  for (const line of stdout.split("\n")) {
    if (/=> not found/.test(line)) throw new TestGuestsError("MissingTool", `${file} needs a library ldd cannot find: ${line.trim()}`);
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.add(m[1]!);
  }
  return [...libs];
}

/**
 * Entries for an executable and what `ldd` names: each file at the path the
 * dynamic loader looks for it, with the content of the file it resolves to.
 */
export async function executableEntries(file: string): Promise<LayerEntry[]> {
  const exe = which(file);
  const entries: LayerEntry[] = [{ path: exe, from: realpathSync(exe), mode: 0o755 }];
  for (const lib of await sharedLibraries(exe)) entries.push({ path: lib, from: realpathSync(lib), mode: 0o755 });
  return entries;
}

/**
 * Firmware QEMU loads for `-M microvm` (qboot) and for `-kernel` on the pc
 * machine, from /usr/share/qemu (symlinks there point into /usr/share/seabios).
 */
export const QEMU_FIRMWARE: readonly string[] = [
  "bios-microvm.bin", "qboot.rom", "linuxboot_dma.bin", "linuxboot.bin", "pvh.bin", "kvmvapic.bin",
];

/** Entries for `qemu-system-x86_64`: the binary, its libraries and {@link QEMU_FIRMWARE}. */
export async function qemuEntries(binary = "qemu-system-x86_64"): Promise<LayerEntry[]> {
  const entries = await executableEntries(binary);
  for (const f of QEMU_FIRMWARE) {
    const p = join("/usr/share/qemu", f);
    if (existsSync(p)) entries.push({ path: p, from: realpathSync(p), mode: 0o644 });
  }
  return entries;
}

interface PackageJson {
  readonly name?: string;
  readonly dependencies?: Readonly<Record<string, string>>;
  readonly files?: readonly string[];
}

function walk(dir: string, keep: (file: string) => boolean, out: string[]): void {
  for (const d of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, d.name);
    if (d.isDirectory()) walk(p, keep, out);
    else if (d.isFile() && keep(p)) out.push(p);
  }
}

/**
 * Entries for built workspace packages and the workspace packages they
 * depend on at run time (`dependencies` with a `workspace:` range), each
 * with what Node needs to load it: package.json, dist/ (no source maps or
 * declarations), build/Release/*.node with their libraries, and the
 * node_modules/@scope/name links to the other packages of the closure.
 * Registry dependencies (node-gyp-build, which loads the addons; node-addon-api's
 * headers come along, unused) are copied whole, with their own dependencies.
 *
 * @throws {@link TestGuestsError} `InvalidArgument` if a directory has no
 *   package.json or has not been built (no dist/).
 */
export async function workspacePackageEntries(packageDirs: readonly string[]): Promise<LayerEntry[]> {
  const entries: LayerEntry[] = [];
  const seen = new Set<string>();
  const queue = packageDirs.map((d) => realpathSync(resolve(d)));
  while (queue.length > 0) {
    const dir = queue.shift()!;
    if (seen.has(dir)) continue;
    seen.add(dir);
    const pj = join(dir, "package.json");
    if (!existsSync(pj)) throw new TestGuestsError("InvalidArgument", `${dir} has no package.json`);
    if (!existsSync(join(dir, "dist"))) throw new TestGuestsError("InvalidArgument", `${dir} is not built (no dist/): run the turbo build first`);
    const pkg = JSON.parse(readFileSync(pj, "utf8")) as PackageJson;
    entries.push({ path: pj, from: pj, mode: 0o644 });
    const files: string[] = [];
    walk(join(dir, "dist"), (f) => !/\.(map|d\.ts|tsbuildinfo)$/.test(f) && !/\.test\.js$/.test(f), files);
    // The rest of what the package publishes (`files`: data such as vmm-reference's cpu-templates/).
    for (const name of pkg.files ?? []) {
      if (name === "dist" || /[*?]/.test(name)) continue;
      const p = join(dir, name);
      if (!existsSync(p)) continue;
      if (statSync(p).isDirectory()) walk(p, (f) => !/\.(map|tsbuildinfo)$/.test(f), files);
      else files.push(p);
    }
    for (const f of files) entries.push({ path: f, from: f, mode: 0o644 });
    const rel = join(dir, "build", "Release");
    if (existsSync(rel)) {
      for (const f of readdirSync(rel).filter((n) => n.endsWith(".node"))) {
        const p = join(rel, f);
        entries.push({ path: p, from: p, mode: 0o755 });
        for (const lib of await sharedLibraries(p)) entries.push({ path: lib, from: realpathSync(lib), mode: 0o755 });
      }
    }
    for (const [dep, range] of Object.entries(pkg.dependencies ?? {})) {
      const link = join(dir, "node_modules", dep);
      if (!existsSync(link)) throw new TestGuestsError("InvalidArgument", `${link} is missing: run pnpm install`);
      const st = lstatSync(link);
      if (st.isSymbolicLink()) entries.push({ path: link, symlink: readlinkSync(link) });
      if (range.startsWith("workspace:")) queue.push(realpathSync(link));
      else thirdPartyEntries(realpathSync(link), entries, seen);
    }
  }
  return dedupe(entries);
}

/** Where Node finds `dep` from a package in `dir` (its node_modules lookup, without exports). */
function resolveDependencyDir(dir: string, dep: string): string | null {
  for (let d = dir; ; d = dirname(d)) {
    if (basename(d) !== "node_modules") {
      const c = join(d, "node_modules", dep);
      if (existsSync(join(c, "package.json"))) return c;
    }
    if (dirname(d) === d) return null;
  }
}

/**
 * A registry package a workspace package needs at run time (node-gyp-build,
 * which loads the addons): every file it ships except its own node_modules,
 * then its dependencies, found as Node finds them and linked as on the host.
 */
function thirdPartyEntries(dir: string, entries: LayerEntry[], seen: Set<string>): void {
  if (seen.has(dir)) return;
  seen.add(dir);
  const files: string[] = [];
  walk(dir, (f) => !f.slice(dir.length).split(sep).includes("node_modules"), files);
  for (const f of files) entries.push({ path: f, from: f, mode: statSync(f).mode & 0o111 ? 0o755 : 0o644 });
  const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as PackageJson;
  for (const dep of Object.keys(pkg.dependencies ?? {})) {
    const at = resolveDependencyDir(dir, dep);
    if (at === null) throw new TestGuestsError("InvalidArgument", `${dep}, a dependency of ${dir}, is not installed: run pnpm install`);
    const st = lstatSync(at);
    if (st.isSymbolicLink()) entries.push({ path: at, symlink: readlinkSync(at) });
    thirdPartyEntries(realpathSync(at), entries, seen);
  }
}

/** Keeps the last entry for each path. */
export function dedupe(entries: readonly LayerEntry[]): LayerEntry[] {
  const m = new Map<string, LayerEntry>();
  for (const e of entries) m.set(e.path, e);
  return [...m.values()];
}

/** Decompresses a kernel module (`.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`) to a file. */
export async function decompressModuleTo(src: string, dst: string): Promise<void> {
  if (src.endsWith(".ko")) return copyFileSync(src, dst);
  const tool = src.endsWith(".xz") ? "xz" : src.endsWith(".zst") ? "zstd" : "gzip";
  await need(tool);
  await run("sh", ["-c", `${tool} -d -q -c "$1" > "$2"`, "sh", src, dst]);
}

/** Removes a file if it exists (used for per-run temporaries). */
export function removeQuietly(p: string): void {
  try {
    unlinkSync(p);
  } catch {
    /* already gone */
  }
}

/** The file name of a layer file without its hash (for logs). */
export function layerLabel(file: string): string {
  return basename(file).replace(/-[0-9a-f]{16}\.cpio\.zst$/, "");
}
