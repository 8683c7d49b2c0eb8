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
//
// Hashing the bundle costs loading node:crypto (~3 ms here) and SHA-256 of 1.3 MB
// (~1.6 ms) on every start, so a verified hash is remembered in a stamp file in the
// cache directory (`<bundle name>-<dev>-<ino>.stamp`: size, mtime and ctime in ns, and
// the SHA-256), and a start whose bundle, fstat'ed before and after its bytes are read
// through the same descriptor, has exactly those values takes the hash from the stamp.
// Why a changed bundle still never runs stale bytecode: any write to a file sets its
// mtime and ctime to the writer's current time, and ctime cannot be set by a user
// (utimes sets ctime to now too); a file renamed over it is another inode, or, with a
// reused inode number, one with a new ctime. A stamp is written only when both times are
// at least STAMP_MIN_AGE_MS old, so a later write lands on a strictly later timestamp even
// on a filesystem with coarse timestamps (FAT's 2 s) or a coarse kernel clock (git's
// "racy timestamp" rule); a file with a zero time gets no stamp. Stamps are trusted as cache
// files are (owner, mode). What is left is someone setting the system clock back to the
// bundle's old times while rewriting it with the same length: root, who could replace
// the bundle anyway.
import { type BigIntStats, closeSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
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
  /** How old the bundle's mtime and ctime must be before its hash is stamped (default {@link STAMP_MIN_AGE_MS}; tests pass 0). */
  readonly stampMinAgeMs?: number;
}

/** A bundle's bytes and the cache header they need (see {@link readBundle}). */
export interface BundleBytes {
  readonly bytes: Buffer;
  readonly header: Buffer;
  /** Whether the bytes were hashed (false: the hash came from a matching stamp). */
  readonly hashed: boolean;
}

/** How old a bundle's mtime and ctime must be, in ms, before its hash is stamped. */
export const STAMP_MIN_AGE_MS = 3000;

const MAGIC = "TSVMMJSC1";

const STAMP_MAGIC = "TSVMMSTAMP1";

/** The SHA-256 of `bundle`, as hex. */
function sha256(bundle: Uint8Array): string {
  // node:crypto loads on first use (~3 ms): a start whose bundles have stamps never loads it.
  const { createHash } = createRequire(import.meta.url)("node:crypto") as typeof import("node:crypto");
  return createHash("sha256").update(bundle).digest("hex");
}

const headerOf = (sha: string): Buffer => Buffer.from(`${MAGIC} ${sha} ${process.version} ${process.arch}\n`, "latin1");

/** The header a cache file of a bundle with these bytes must start with. */
export function cacheHeader(bundle: Uint8Array): Buffer {
  return headerOf(sha256(bundle));
}

/**
 * Reads the bundle `file` and returns its bytes with their cache header, taking the SHA-256
 * from a stamp in `cacheDir` where the file's dev, inode, size, mtime and ctime, before and
 * after the read, are the stamp's, else hashing the bytes and stamping them where the file's
 * times are old enough (see the module comment for why that is safe). Stamp problems are
 * silent; errors reading the bundle propagate.
 */
export function readBundle(file: string, cacheDir: string | null = defaultCacheDir(), stampMinAgeMs = STAMP_MIN_AGE_MS): BundleBytes {
  const fd = openSync(file, "r");
  let bytes: Buffer;
  let before: BigIntStats;
  let after: BigIntStats;
  try {
    before = fstatSync(fd, { bigint: true });
    const size = Number(before.size);
    bytes = Buffer.allocUnsafe(size);
    let n = 0;
    while (n < size) {
      const got = readSync(fd, bytes, n, size - n, n);
      if (got === 0) break;
      n += got;
    }
    if (n < size) bytes = bytes.subarray(0, n);
    after = fstatSync(fd, { bigint: true });
  } finally {
    closeSync(fd);
  }
  const same = (a: BigIntStats, b: BigIntStats): boolean =>
    a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
  const stable = same(before, after) && after.size === BigInt(bytes.length);
  const stamp = cacheDir === null || !stable ? null : join(cacheDir, `${basename(file)}-${after.dev}-${after.ino}.stamp`);
  const line = (sha: string): string => `${STAMP_MAGIC} ${after.size} ${after.mtimeNs} ${after.ctimeNs} ${sha}\n`;
  if (stamp !== null) {
    const text = readTrusted(stamp, 256)?.toString("latin1");
    const sha = text?.split(" ")[4]?.trimEnd();
    if (sha !== undefined && /^[0-9a-f]{64}$/.test(sha) && text === line(sha)) return { bytes, header: headerOf(sha), hashed: false };
  }
  const sha = sha256(bytes);
  const oldest = BigInt(Date.now() - stampMinAgeMs) * 1_000_000n;
  if (stamp !== null && after.mtimeNs > 0n && after.ctimeNs > 0n && after.mtimeNs <= oldest && after.ctimeNs <= oldest) {
    writeAtomically(stamp, Buffer.from(line(sha), "latin1"));
  }
  return { bytes, header: headerOf(sha), hashed: true };
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

/**
 * Opens `path` if it is a trusted file (a regular file of this user or root, not writable by
 * group or others) and passes its fd and size to `read`; undefined if it is not, or on any error.
 */
function readIfTrusted<T>(path: string, read: (fd: number, size: number) => T | undefined): T | undefined {
  let fd = -1;
  try {
    fd = openSync(path, "r");
    const st = fstatSync(fd);
    const uid = process.getuid?.() ?? 0;
    if (!st.isFile() || (st.uid !== uid && st.uid !== 0) || (st.mode & 0o022) !== 0) return undefined;
    return read(fd, st.size);
  } catch {
    return undefined;
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

/** The contents of a trusted file (see {@link readIfTrusted}) of at most `limit` bytes, or undefined. */
function readTrusted(path: string, limit: number): Buffer | undefined {
  return readIfTrusted(path, (fd, size) => {
    if (size > limit) return undefined;
    const data = Buffer.alloc(size);
    return readSync(fd, data, 0, data.length, 0) === data.length ? data : undefined;
  });
}

/** The V8 data of a trusted cache file with this header, or undefined (absent, stale, untrusted, unreadable). */
function readCache(path: string, header: Buffer): Buffer | undefined {
  return readIfTrusted(path, (fd, size) => {
    if (size <= header.length || size > 256 * 1024 * 1024) return undefined;
    const head = Buffer.alloc(header.length);
    if (readSync(fd, head, 0, head.length, 0) !== head.length || !head.equals(header)) return undefined;
    const data = Buffer.alloc(size - header.length);
    return readSync(fd, data, 0, data.length, header.length) === data.length ? data : undefined;
  });
}

/** Writes header + data to `path` atomically; false on any failure. */
function writeCache(path: string, header: Buffer, data: Buffer): boolean {
  return writeAtomically(path, Buffer.concat([header, data]));
}

/** Writes `data` to `path` atomically (a temporary file renamed over it); false on any failure. */
function writeAtomically(path: string, data: Buffer): boolean {
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    writeFileSync(tmp, data, { mode: 0o644, flag: "wx" });
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
  const cacheDir = options.cacheDir === undefined ? defaultCacheDir(env) : options.cacheDir;
  let bytes: Uint8Array;
  let header: Buffer | null;
  if (given !== undefined) {
    bytes = given.bytes;
    header = disabled ? null : given.header;
  } else if (disabled) {
    bytes = readFileSync(file);
    header = null;
  } else {
    ({ bytes, header } = readBundle(file, cacheDir, options.stampMinAgeMs));
  }
  let source = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8");
  // A shebang line is not JavaScript inside the wrapper: comment it out (same length, same positions).
  if (source.startsWith("#!")) source = `//${source.slice(2)}`;

  let outcome: CodeCacheOutcome = disabled || trainTo !== undefined ? "disabled" : "none";
  let readFrom: string | null = null;
  let cachedData: Buffer | undefined;
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
