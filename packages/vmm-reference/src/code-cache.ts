// Runs a CommonJS bundle through node:vm with a V8 code cache, so that a
// start of the CLI skips compiling most of its JavaScript (Node 20 has no
// compile cache for ES modules: module.enableCompileCache came in 22.1).
//
// Where the cache comes from, first found wins:
//   1. `<bundle>.jsc` beside the bundle, written by the build's training run
//      (scripts/code-cache.mjs, TS_VMM_CODE_CACHE_TRAIN=1); read-only installs
//      and the nested tier's L1 image use this one;
//   2. `<cache dir>/<bundle name>-<hash>-<node version>-<arch>.jsc`, written by
//      a run that had no cache V8 accepted ($TS_VMM_CODE_CACHE_DIR, else
//      $XDG_CACHE_HOME/ts-vmm/code-cache, else ~/.cache/ts-vmm/code-cache): the
//      CLI at exit (its cache then covers what the run compiled), a vCPU worker
//      right after its bundle's top level ran (a worker is ended, not exited,
//      and its run loop never yields to the event loop).
// A cache file starts with a header naming the SHA-256 of the bundle's bytes,
// the Node version and the architecture; one whose header differs from the
// bundle read now is not given to V8 at all (V8's own check compares only the
// source's length, its version and its flags, so a changed bundle of the same
// length would otherwise run the old bytecode). V8 then may still reject it
// (another V8 build or flags): the run compiles from source and writes a fresh
// cache. A cache file that is not owned by this user (or root) or is writable
// by group or others is ignored: its bytecode would run as ours. Every failure
// to read or write a cache is silent: the bundle then runs without one.
// TS_VMM_CODE_CACHE=0 turns all of it off.
import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { homedir } from "node:os";
import { basename, dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { Script } from "node:vm";

/** What happened to the code cache of one {@link runCachedBundle} call. */
export type CodeCacheOutcome =
  /** V8 used the cache. */
  | "accepted"
  /** A cache with the right header was found and V8 refused it (another V8 build or flags). */
  | "rejected"
  /** No cache file with this bundle's header was found. */
  | "none"
  /** TS_VMM_CODE_CACHE=0, or a training run (TS_VMM_CODE_CACHE_TRAIN=1). */
  | "disabled";

/** The result of {@link runCachedBundle}. */
export interface CachedBundle {
  /** The bundle's `module.exports`. */
  readonly exports: Record<string, unknown>;
  /** How the cache was used. */
  readonly outcome: CodeCacheOutcome;
  /** The cache file that was read (accepted or rejected), or null. */
  readonly readFrom: string | null;
  /** Where a fresh cache will be written at exit, or null (an accepted cache, or caching off). */
  readonly writeTo: string | null;
}

/** Options of {@link runCachedBundle}; the defaults come from the environment (see the module comment). */
export interface CachedBundleOptions {
  /** The per-user cache directory, or null for none. */
  readonly cacheDir?: string | null;
  /** Turns reading and writing off (TS_VMM_CODE_CACHE=0). */
  readonly disabled?: boolean;
  /** Reads no cache and writes a fresh one beside the bundle (TS_VMM_CODE_CACHE_TRAIN=1; the build's training run). */
  readonly train?: boolean;
  /** When to write a fresh cache: at process exit (default), or right after the bundle's top level ran, before {@link runCachedBundle} returns (vCPU workers). */
  readonly writeAt?: "exit" | "soon";
  /**
   * The bundle's bytes and their `cacheHeader` (code-cache.ts), read and hashed by the caller: the
   * `ts-vmm` binary's main thread does it for its prestarted vCPU workers, which then neither
   * read the file nor load node:crypto. Default: read `file` and hash it here.
   */
  readonly source?: { readonly bytes: Uint8Array; readonly header: Buffer };
}

const MAGIC = "TSVMMJSC1";

/** The header a cache file of a bundle with these bytes must start with. */
export function cacheHeader(bundle: Uint8Array): Buffer {
  // node:crypto loads on first use (~2 ms): a vCPU worker whose bundle the main thread hashed never loads it.
  const { createHash } = createRequire(import.meta.url)("node:crypto") as typeof import("node:crypto");
  const sha = createHash("sha256").update(bundle).digest("hex");
  return Buffer.from(`${MAGIC} ${sha} ${process.version} ${process.arch}\n`, "latin1");
}

/** The per-user cache directory the environment names, or null when there is no home. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string | null {
  const own = env["TS_VMM_CODE_CACHE_DIR"];
  if (own !== undefined && own !== "") return own;
  const xdg = env["XDG_CACHE_HOME"];
  if (xdg !== undefined && xdg.startsWith("/")) return join(xdg, "ts-vmm", "code-cache");
  let home = "";
  try {
    home = homedir();
  } catch {
    return null;
  }
  return home.startsWith("/") ? join(home, ".cache", "ts-vmm", "code-cache") : null;
}

/** The V8 data of a trusted cache file with this header, or undefined (absent, stale, untrusted, unreadable). */
function readCache(path: string, header: Buffer): Buffer | undefined {
  let fd = -1;
  try {
    fd = openSync(path, "r");
    const st = fstatSync(fd);
    const uid = process.getuid?.() ?? 0;
    if (!st.isFile() || (st.uid !== uid && st.uid !== 0) || (st.mode & 0o022) !== 0) return undefined;
    if (st.size <= header.length || st.size > 256 * 1024 * 1024) return undefined;
    const head = Buffer.alloc(header.length);
    if (readSync(fd, head, 0, head.length, 0) !== head.length || !head.equals(header)) return undefined;
    const data = Buffer.alloc(st.size - header.length);
    if (readSync(fd, data, 0, data.length, header.length) !== data.length) return undefined;
    return data;
  } catch {
    return undefined;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

/** Writes header + data to `path` atomically (a temporary file renamed over it); false on any failure. */
function writeCache(path: string, header: Buffer, data: Buffer): boolean {
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    writeFileSync(tmp, Buffer.concat([header, data]), { mode: 0o644, flag: "wx" });
    renameSync(tmp, path);
    return true;
  } catch {
    try {
      unlinkSync(tmp);
    } catch {
      // nothing was written
    }
    return false;
  }
}

/**
 * Runs the CommonJS bundle `file` (whose `import.meta.url` the build defined as
 * `__tsvmmBundleUrl`) and returns its exports, compiling it with a V8 code
 * cache where a valid one exists and writing one at process exit where none
 * was accepted (see the module comment for where and how they are checked).
 * Errors of the bundle itself propagate; cache problems never do.
 */
export function runCachedBundle(file: string, options: CachedBundleOptions = {}): CachedBundle {
  const env = process.env;
  const trainTo = (options.train ?? env["TS_VMM_CODE_CACHE_TRAIN"] === "1") ? `${file}.jsc` : undefined;
  const disabled = options.disabled ?? env["TS_VMM_CODE_CACHE"] === "0";
  const given = options.source;
  const bytes = given?.bytes ?? readFileSync(file);
  let source = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8");
  // A shebang line is not JavaScript inside the wrapper: comment it out (same length, same positions).
  if (source.startsWith("#!")) source = `//${source.slice(2)}`;
  const header = disabled ? null : given?.header ?? cacheHeader(bytes);

  let outcome: CodeCacheOutcome = disabled || trainTo !== undefined ? "disabled" : "none";
  let readFrom: string | null = null;
  let cachedData: Buffer | undefined;
  const cacheDir = options.cacheDir === undefined ? defaultCacheDir(env) : options.cacheDir;
  const userFile = header === null || cacheDir === null ? null : join(cacheDir, `${basename(file)}-${header.toString("latin1", MAGIC.length + 1, MAGIC.length + 17)}-${process.version}-${process.arch}.jsc`);
  if (outcome === "none" && header !== null) {
    for (const p of [`${file}.jsc`, userFile]) {
      if (p === null) continue;
      cachedData = readCache(p, header);
      if (cachedData !== undefined) {
        readFrom = p;
        break;
      }
    }
  }
  const wrapper = `(function (exports, require, module, __filename, __dirname, __tsvmmBundleUrl) {${source}\n})`;
  const script = new Script(wrapper, { filename: file, ...(cachedData !== undefined ? { cachedData } : {}) });
  if (cachedData !== undefined) outcome = script.cachedDataRejected === true ? "rejected" : "accepted";

  const writeTo = header === null ? null : trainTo ?? (outcome === "accepted" ? null : userFile);
  let writeNow: (() => void) | undefined;
  if (header !== null && writeTo !== null) {
    const write = (): void => {
      try {
        writeCache(writeTo, header, script.createCachedData());
      } catch {
        // no cache this time
      }
    };
    // At exit the functions the run called are compiled too, so the cache covers them.
    // "soon": right after the top level ran, before this returns. Not in a later event: a vCPU
    // worker whose start message is already queued enters its run loop, which never yields, in
    // the same turn, and a setImmediate would never run (so no cache was ever written there).
    if (options.writeAt === "soon") writeNow = write;
    else process.once("exit", write);
  }
  const fn = script.runInThisContext() as (
    exports: unknown, require: NodeJS.Require, module: { exports: Record<string, unknown> }, filename: string, dirname: string, url: string,
  ) => void;
  const mod = { exports: {} as Record<string, unknown> };
  fn(mod.exports, createRequire(file), mod, file, dirname(file), pathToFileURL(file).href);
  writeNow?.();
  return { exports: mod.exports, outcome, readFrom, writeTo };
}
