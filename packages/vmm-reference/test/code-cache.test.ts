import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describeWith } from "@ts-vmm/test-utils";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { cacheHeader, defaultCacheDir, readBundle } from "../src/code-cache.js";

const CODE_CACHE = fileURLToPath(new URL("../dist/code-cache.js", import.meta.url));
const BIN = fileURLToPath(new URL("../dist/bin.cjs", import.meta.url));
const DIST = fileURLToPath(new URL("../dist/", import.meta.url));

// Each case runs in a child process: the cache is written at process exit, and V8's
// acceptance is per isolate. The child loads dist/code-cache.js (the built module).
function runBundle(bundle: string, cacheDir: string, env: Record<string, string> = {}, writeAt: "exit" | "soon" = "exit"): { outcome: string; readFrom: string | null; writeTo: string | null; value: unknown } {
  const script = `import { runCachedBundle } from ${JSON.stringify(CODE_CACHE)};
const b = runCachedBundle(${JSON.stringify(bundle)}, { cacheDir: ${JSON.stringify(cacheDir)}, writeAt: ${JSON.stringify(writeAt)} });
console.log(JSON.stringify({ outcome: b.outcome, readFrom: b.readFrom, writeTo: b.writeTo, value: b.exports.value() }));`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", env: { ...process.env, ...env }, timeout: 30_000 });
  if (r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").at(-1)!) as { outcome: string; readFrom: string | null; writeTo: string | null; value: unknown };
}

/** A CommonJS bundle like the build's: exports a function, uses __tsvmmBundleUrl. Padded so two versions have the same length. */
const bundleSource = (v: string): string =>
  `#!/usr/bin/env node\n"use strict";\nfunction value() { return ${JSON.stringify(v)} + " " + new URL(".", __tsvmmBundleUrl).protocol; }\nmodule.exports = { value };\n` +
  `function filler() { return [${Array.from({ length: 2000 }, (_, i) => i).join(",")}]; }\n`;

describe("code cache of the CLI's run bundle", () => {
  let dir = "";
  let cacheDir = "";
  let bundle = "";
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "ts-vmm-code-cache-"));
    cacheDir = join(dir, "cache");
    bundle = join(dir, "b.cjs");
    writeFileSync(bundle, bundleSource("one"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("a first run has none and writes one at exit; the next run's V8 accepts it and the code is the bundle's", () => {
    const a = runBundle(bundle, cacheDir);
    expect(a).toMatchObject({ outcome: "none", readFrom: null, value: "one file:" });
    expect(a.writeTo).not.toBeNull();
    expect(existsSync(a.writeTo!)).toBe(true);
    expect(readFileSync(a.writeTo!).subarray(0, 9).toString()).toBe("TSVMMJSC1");
    const b = runBundle(bundle, cacheDir);
    expect(b).toEqual({ outcome: "accepted", readFrom: a.writeTo, writeTo: null, value: "one file:" });
  });

  it("a changed bundle of the same length never runs the old code: the old cache's header does not match, so it is not used", () => {
    const a = runBundle(bundle, cacheDir);
    const second = bundleSource("two");
    expect(second.length).toBe(bundleSource("one").length);
    writeFileSync(bundle, second);
    // The old cache file renamed to the name the new bundle's would have: only the header tells them apart.
    const newName = join(cacheDir, readdirSync(cacheDir)[0]!.replace(/-[0-9a-f]{16}-/, `-${cacheHeader(Buffer.from(second)).toString("latin1", 10, 26)}-`));
    copyFileSync(a.writeTo!, newName);
    // And beside the bundle, where the build puts its trained cache.
    copyFileSync(a.writeTo!, `${bundle}.jsc`);
    const b = runBundle(bundle, cacheDir);
    expect(b.outcome).toBe("none");
    expect(b.value).toBe("two file:");
  });

  it("readBundle stamps a verified hash and takes it from the stamp while the file is unchanged; a rewrite of the same length is hashed again", async () => {
    const one = readBundle(bundle, cacheDir, 0);
    expect(one.hashed).toBe(true);
    expect(one.header.equals(cacheHeader(Buffer.from(bundleSource("one"))))).toBe(true);
    expect(one.bytes.toString()).toBe(bundleSource("one"));
    const st = statSync(bundle);
    const stamp = join(cacheDir, `b.cjs-${st.dev}-${st.ino}.stamp`);
    expect(readFileSync(stamp, "latin1").startsWith(`TSVMMSTAMP1 ${st.size} `)).toBe(true);
    const again = readBundle(bundle, cacheDir, 0);
    expect(again.hashed).toBe(false);
    expect(again.header.equals(one.header)).toBe(true);
    // In place (same inode, same length), a few kernel clock ticks later: new mtime and ctime.
    await new Promise((r) => setTimeout(r, 30));
    writeFileSync(bundle, bundleSource("two"));
    expect(statSync(bundle).ino).toBe(st.ino);
    const two = readBundle(bundle, cacheDir, 0);
    expect(two.hashed).toBe(true);
    expect(two.header.equals(cacheHeader(Buffer.from(bundleSource("two"))))).toBe(true);
    expect(two.header.equals(one.header)).toBe(false);
  });

  it("readBundle writes no stamp for a file changed within the last STAMP_MIN_AGE_MS, and ignores a stamp writable by others", () => {
    expect(readBundle(bundle, cacheDir).hashed).toBe(true);
    expect(existsSync(cacheDir) ? readdirSync(cacheDir) : []).toEqual([]);
    readBundle(bundle, cacheDir, 0);
    const [name] = readdirSync(cacheDir);
    chmodSync(join(cacheDir, name!), 0o666);
    expect(readBundle(bundle, cacheDir, 0).hashed).toBe(true);
  });

  it("a bundle whose hash comes from its stamp runs with its cache, and runs its own code", () => {
    const a = runBundle(bundle, cacheDir);
    expect(a.outcome).toBe("none");
    readBundle(bundle, cacheDir, 0); // the stamp
    expect(readBundle(bundle, cacheDir).hashed).toBe(false);
    expect(runBundle(bundle, cacheDir)).toEqual({ outcome: "accepted", readFrom: a.writeTo, writeTo: null, value: "one file:" });
  });

  it("a cache V8 refuses (corrupt data under a valid header) is reported rejected, the bundle still runs and a fresh cache replaces it", () => {
    const a = runBundle(bundle, cacheDir);
    const good = readFileSync(a.writeTo!);
    const header = cacheHeader(readFileSync(bundle));
    const bad = Buffer.concat([header, Buffer.alloc(good.length - header.length, 0x5a)]);
    writeFileSync(a.writeTo!, bad);
    const b = runBundle(bundle, cacheDir);
    expect(b).toMatchObject({ outcome: "rejected", readFrom: a.writeTo, writeTo: a.writeTo, value: "one file:" });
    expect(runBundle(bundle, cacheDir).outcome).toBe("accepted");
  });

  it("a cache file writable by others is ignored (its bytecode would run as ours)", () => {
    const a = runBundle(bundle, cacheDir);
    chmodSync(a.writeTo!, 0o666);
    expect(runBundle(bundle, cacheDir).outcome).toBe("none");
  });

  it("an unwritable cache directory is no error: the bundle runs without a cache", () => {
    writeFileSync(join(dir, "file"), "not a directory");
    const r = runBundle(bundle, join(dir, "file", "cache"));
    expect(r).toMatchObject({ outcome: "none", value: "one file:" });
    expect(runBundle(bundle, join(dir, "file", "cache")).outcome).toBe("none");
  });

  it("writeAt soon (the vCPU worker's) writes the cache while the process still runs", () => {
    const a = runBundle(bundle, cacheDir, {}, "soon");
    expect(a.outcome).toBe("none");
    expect(runBundle(bundle, cacheDir).outcome).toBe("accepted");
  });

  it("writeAt soon writes before runCachedBundle returns: a worker whose run loop never yields still leaves its cache", () => {
    // The child never returns to its event loop after the call (process.exit right away), as a
    // vCPU worker whose start message was already queued enters KVM_RUN in the same turn.
    const script = `import { existsSync } from "node:fs";
import { runCachedBundle } from ${JSON.stringify(CODE_CACHE)};
const b = runCachedBundle(${JSON.stringify(bundle)}, { cacheDir: ${JSON.stringify(cacheDir)}, writeAt: "soon" });
console.log(JSON.stringify({ writeTo: b.writeTo, written: b.writeTo !== null && existsSync(b.writeTo) }));
process.reallyExit(0);`;
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 30_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout.trim().split("\n").at(-1)!)).toMatchObject({ written: true });
    expect(runBundle(bundle, cacheDir).outcome).toBe("accepted");
  });

  it("source: the bytes and header the caller read and hashed are what runs and keys the cache (the file is not read)", () => {
    const given = Buffer.from(bundleSource("two"));
    const script = (src: string): string => `import { runCachedBundle } from ${JSON.stringify(CODE_CACHE)};
const bytes = Buffer.from(${JSON.stringify(src)});
const header = Buffer.from(${JSON.stringify(cacheHeader(given).toString("latin1"))}, "latin1");
const b = runCachedBundle(${JSON.stringify(bundle)}, { cacheDir: ${JSON.stringify(cacheDir)}, writeAt: "soon", source: { bytes, header } });
console.log(JSON.stringify({ outcome: b.outcome, value: b.exports.value() }));`;
    const run = (): { outcome: string; value: string } => {
      const r = spawnSync(process.execPath, ["--input-type=module", "-e", script(given.toString())], { encoding: "utf8", timeout: 30_000 });
      if (r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr}`);
      return JSON.parse(r.stdout.trim().split("\n").at(-1)!) as { outcome: string; value: string };
    };
    // The file on disk says "one"; the given bytes say "two".
    expect(run()).toEqual({ outcome: "none", value: "two file:" });
    expect(run()).toEqual({ outcome: "accepted", value: "two file:" });
    // The cache written under the given header is the one of the given bytes: the file's own
    // bytes ("one", another header) find no cache of theirs.
    expect(runBundle(bundle, cacheDir).outcome).toBe("none");
  });

  it("a training run (TS_VMM_CODE_CACHE_TRAIN=1) reads nothing and writes beside the bundle", () => {
    runBundle(bundle, cacheDir);
    const t = runBundle(bundle, cacheDir, { TS_VMM_CODE_CACHE_TRAIN: "1" });
    expect(t).toMatchObject({ outcome: "disabled", readFrom: null, writeTo: `${bundle}.jsc` });
    expect(runBundle(bundle, cacheDir)).toMatchObject({ outcome: "accepted", readFrom: `${bundle}.jsc` });
  });

  it("TS_VMM_CODE_CACHE=0 reads and writes nothing", () => {
    expect(runBundle(bundle, cacheDir, { TS_VMM_CODE_CACHE: "0" })).toMatchObject({ outcome: "disabled", writeTo: null, value: "one file:" });
    expect(existsSync(cacheDir)).toBe(false);
  });

  it("the cache directory follows TS_VMM_CODE_CACHE_DIR, then XDG_CACHE_HOME, then ~/.cache", () => {
    expect(defaultCacheDir({ TS_VMM_CODE_CACHE_DIR: "/x/y" })).toBe("/x/y");
    expect(defaultCacheDir({ XDG_CACHE_HOME: "/xdg" })).toBe("/xdg/ts-vmm/code-cache");
    expect(defaultCacheDir({ XDG_CACHE_HOME: "relative" })).toMatch(/\/\.cache\/ts-vmm\/code-cache$/);
  });
});

describe("the ts-vmm binary and the build's cache", () => {
  it("the build wrote the CLI's and the vCPU worker's caches with their bundles' current headers", () => {
    for (const b of ["cli.run.cjs", "vcpu-worker.run.cjs"]) {
      const jsc = readFileSync(join(DIST, `${b}.jsc`));
      const header = cacheHeader(readFileSync(join(DIST, b)));
      expect(jsc.subarray(0, header.length).equals(header), b).toBe(true);
    }
  });

  it("the binary runs with the cache off and with an empty cache directory, and says so in the trace", () => {
    const home = mkdtempSync(join(tmpdir(), "ts-vmm-code-cache-home-"));
    try {
      for (const [env, want] of [
        [{ TS_VMM_CODE_CACHE: "0" }, "code cache disabled"],
        [{}, "code cache accepted"],
      ] as const) {
        const r = spawnSync(process.execPath, [BIN, "--version"], {
          encoding: "utf8", timeout: 30_000, env: { ...process.env, ...env, TS_VMM_CODE_CACHE_DIR: home, TS_VMM_TRACE_STARTUP: "live" },
        });
        expect(r.status, r.stderr).toBe(0);
        expect(r.stdout).toMatch(/\d+\.\d+\.\d+/);
        expect(r.stderr).toContain(want);
      }
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});

describeWith({ kvm: true }, "the ts-vmm binary without a usable cache", () => {
  it("boots the micro-guest with caching off, and with an unwritable per-user cache directory", () => {
    const guest = join(DIST, "guest", "micro-guest.elf");
    const dir = mkdtempSync(join(tmpdir(), "ts-vmm-code-cache-ro-"));
    try {
      writeFileSync(join(dir, "file"), "not a directory");
      for (const env of [{ TS_VMM_CODE_CACHE: "0" }, { TS_VMM_CODE_CACHE_DIR: join(dir, "file", "cache"), TS_VMM_CODE_CACHE_TRAIN: "" }]) {
        const r = spawnSync(process.execPath, [BIN, "run", "--kernel", guest, "--cmdline", "mode=hello", "--mem", "64"], {
          encoding: "utf8", timeout: 30_000, env: { ...process.env, ...env, TS_VMM_TRACE_STARTUP: "live" },
        });
        expect(r.stdout, r.stderr).toContain("hello from the ts-vmm micro-guest");
        expect(r.status, r.stderr).toBe(1); // debug-exit value 0
        expect(r.stderr).toMatch(/code cache (disabled|accepted)/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
