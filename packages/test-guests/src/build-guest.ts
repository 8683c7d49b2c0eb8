import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { TestGuestsError } from "./error.js";

const run = promisify(execFile);

/** The package root (the directory holding guest/ and out/). */
export const PACKAGE_DIR: string = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** Directory of the micro-guest's C and assembly sources. */
export const GUEST_SOURCE_DIR: string = join(PACKAGE_DIR, "guest");

/**
 * gcc flags for the micro-guest: freestanding, no SSE (CPL0 code runs through
 * KVM's instruction emulator on the development machine), no red zone (traps
 * arrive on the same stack at CPL0), and no loop-to-memset rewriting (the guest
 * defines memset itself).
 */
export const GUEST_CFLAGS: readonly string[] = [
  "-m64", "-O2", "-std=gnu11", "-ffreestanding", "-fno-pic", "-fno-pie", "-mno-red-zone",
  "-mgeneral-regs-only", "-fno-stack-protector", "-fno-asynchronous-unwind-tables", "-fno-builtin",
  "-fno-tree-loop-distribute-patterns", "-nostdlib", "-Wall", "-Wextra", "-Werror",
];

const LDFLAGS = [
  "-nostdlib", "-static", "-no-pie", "--build-id=none", "-z", "noexecstack", "-z", "max-page-size=4096",
  "--no-warn-rwx-segments",
];

/** Options of {@link buildMicroGuest}. */
export interface BuildOptions {
  /** Where built guests go (default: the package's out/ directory, gitignored). */
  readonly outDir?: string;
  /** C compiler (default `gcc`). */
  readonly cc?: string;
  /** Linker (default `ld`). */
  readonly ld?: string;
}

/** A built micro-guest. */
export interface BuiltGuest {
  /** Absolute path of the PVH ELF. */
  readonly elf: string;
  /** Content hash of sources, flags and tool versions: the cache key. */
  readonly hash: string;
  /** True if this call compiled it, false if it came from the cache. */
  readonly built: boolean;
}

async function toolVersion(tool: string): Promise<string> {
  try {
    const { stdout } = await run(tool, ["--version"]);
    return stdout.split("\n")[0] ?? "";
  } catch (cause) {
    throw new TestGuestsError("MissingTool", `${tool} is needed to build the micro-guest`, { cause });
  }
}

/**
 * Builds the PVH micro-guest from guest/*.c, guest/*.S and guest/guest.ld with
 * the machine's gcc and ld, into `<outDir>/<hash>/guest.elf`. The hash covers
 * every source file, the flags and the tool versions, so a second call with
 * nothing changed returns the cached ELF without compiling. Safe to call from
 * concurrent test processes (each builds in a private directory, then renames).
 *
 * @throws {@link TestGuestsError} `MissingTool` if gcc or ld is absent,
 *   `BuildFailed` with the compiler's output if compiling or linking fails.
 */
export async function buildMicroGuest(options: BuildOptions = {}): Promise<BuiltGuest> {
  const cc = options.cc ?? "gcc";
  const ld = options.ld ?? "ld";
  const outDir = options.outDir ?? join(PACKAGE_DIR, "out");
  const files = readdirSync(GUEST_SOURCE_DIR)
    .filter((f) => /\.(c|S|h|ld)$/.test(f))
    .sort();
  const h = createHash("sha256");
  h.update(JSON.stringify([GUEST_CFLAGS, LDFLAGS, await toolVersion(cc), await toolVersion(ld)]));
  for (const f of files) {
    h.update(`\0${f}\0`);
    h.update(readFileSync(join(GUEST_SOURCE_DIR, f)));
  }
  const hash = h.digest("hex").slice(0, 16);
  const finalDir = join(outDir, hash);
  const elf = join(finalDir, "guest.elf");
  if (existsSync(elf)) return { elf, hash, built: false };

  const tmp = join(outDir, `.tmp-${hash}-${process.pid}-${Date.now()}`);
  mkdirSync(tmp, { recursive: true });
  try {
    const objects: string[] = [];
    for (const f of files.filter((x) => x.endsWith(".c") || x.endsWith(".S"))) {
      const obj = join(tmp, `${f}.o`);
      await compile(cc, [...GUEST_CFLAGS, "-c", join(GUEST_SOURCE_DIR, f), "-o", obj]);
      objects.push(obj);
    }
    await compile(ld, [...LDFLAGS, "-T", join(GUEST_SOURCE_DIR, "guest.ld"), "-o", join(tmp, "guest.elf"), ...objects]);
    try {
      renameSync(tmp, finalDir);
    } catch {
      // another process won the race: its result is identical
      if (!existsSync(elf)) throw new TestGuestsError("BuildFailed", `could not move the build to ${finalDir}`);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return { elf, hash, built: true };
}

async function compile(tool: string, args: string[]): Promise<void> {
  try {
    await run(tool, args, { maxBuffer: 16 << 20 });
  } catch (cause) {
    const e = cause as { stderr?: string; stdout?: string };
    throw new TestGuestsError(
      "BuildFailed",
      `${tool} ${args.join(" ")} failed:\n${e.stderr ?? ""}${e.stdout ?? ""}`,
      { cause },
    );
  }
}
