import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { cacheDir } from "./cache.js";

const run = promisify(execFile);

/** A Debian cloud kernel unpacked in the cache, with its decompressed ELF. */
export interface DebianKernel {
  /** Kernel release, e.g. `6.12.117+deb12-cloud-amd64`. */
  readonly version: string;
  /** The bzImage (`/boot/vmlinuz-<version>` from the package). */
  readonly bzImage: string;
  /** The ELF vmlinux decompressed from the bzImage's payload (has the PVH note). */
  readonly vmlinux: string;
  /** `lib/modules/<version>` (virtio_mmio, virtio_blk… are modules in this config). */
  readonly modulesDir: string;
  /** The kernel's `.config`. */
  readonly config: string;
  /** Root of the unpacked package. */
  readonly root: string;
}

/** Options of {@link debianKernel}. */
export interface DebianKernelOptions {
  /**
   * Kernel release to use (`6.12.117+deb12-cloud-amd64`). Default:
   * `$TS_VMM_KERNEL_VERSION`, else the newest one already in the cache, else
   * the newest `linux-image-6.12.*-cloud-amd64-unsigned` apt knows.
   */
  readonly version?: string;
}

const PKG_RE = /^linux-image-(6\.12\.\d+\+deb\d+-cloud-amd64)-unsigned$/;

/** Orders Debian kernel versions by their numbers (6.12.9 before 6.12.118); for `sort`. */
export function compareVersions(a: string, b: string): number {
  const na = a.match(/\d+/g)?.map(Number) ?? [];
  const nb = b.match(/\d+/g)?.map(Number) ?? [];
  for (let i = 0; i < Math.max(na.length, nb.length); i++) {
    const d = (na[i] ?? 0) - (nb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function newestCached(root: string): string | undefined {
  const ready = readdirSync(root).filter((d) => existsSync(join(root, d, ".ready")));
  return ready.sort(compareVersions).at(-1);
}

async function newestInApt(): Promise<string> {
  const list = async (): Promise<string[]> => {
    const { stdout } = await run("apt-cache", ["pkgnames", "linux-image-6.12."], { maxBuffer: 16 << 20 });
    return stdout.split("\n").flatMap((l) => {
      const m = PKG_RE.exec(l.trim());
      return m ? [m[1]!] : [];
    });
  };
  let versions = await list();
  if (versions.length === 0) {
    // A fresh machine has empty package lists: update once (needs root).
    await run("apt-get", ["update", "-qq"], { maxBuffer: 16 << 20 });
    versions = await list();
  }
  const v = versions.sort(compareVersions).at(-1);
  if (!v) throw new Error("apt knows no linux-image-6.12.*-cloud-amd64-unsigned package (is deb.debian.org bookworm-security in sources.list?)");
  return v;
}

/** Compression of a bzImage payload, by magic (arch/x86/boot/compressed/Makefile). */
function decompressor(payload: Uint8Array): [string, string[]] {
  const m = (...b: number[]): boolean => b.every((x, i) => payload[i] === x);
  if (m(0x28, 0xb5, 0x2f, 0xfd)) return ["zstd", ["-d", "-q", "-c"]];
  if (m(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) return ["xz", ["-d", "-q", "-c"]];
  if (m(0x1f, 0x8b)) return ["gzip", ["-d", "-q", "-c"]];
  if (m(0x02, 0x21, 0x4c, 0x18)) return ["lz4", ["-d", "-q", "-c"]];
  throw new Error(`unknown bzImage payload compression (magic ${Buffer.from(payload.subarray(0, 6)).toString("hex")})`);
}

/**
 * Extracts the ELF vmlinux from a bzImage: the payload is at
 * `payload_offset`/`payload_length` (setup header 0x248/0x24c, relative to the
 * protected-mode code at `(setup_sects + 1) * 512`); its last 4 bytes are the
 * decompressed size (appended by the kernel build), which the CLI
 * decompressors would reject as trailing garbage, so they are cut off and
 * checked against the output.
 */
export async function extractVmlinux(bzImagePath: string, outPath: string): Promise<void> {
  const bz = readFileSync(bzImagePath);
  const setupSects = bz[0x1f1] || 4;
  const off = (setupSects + 1) * 512 + bz.readUInt32LE(0x248);
  const len = bz.readUInt32LE(0x24c);
  const payload = bz.subarray(off, off + len);
  const expected = payload.readUInt32LE(len - 4);
  const [tool, args] = decompressor(payload);
  const tmpIn = `${outPath}.payload`;
  writeFileSync(tmpIn, payload.subarray(0, len - 4));
  try {
    await run("sh", ["-c", `${tool} ${args.join(" ")} "$1" > "$2"`, "sh", tmpIn, outPath]);
  } catch (e) {
    throw new Error(`${tool} could not decompress the bzImage payload (is ${tool} installed? scripts/setup.sh lists it): ${String(e)}`);
  } finally {
    rmSync(tmpIn, { force: true });
  }
  const got = readFileSync(outPath).byteLength;
  if (got !== expected) throw new Error(`decompressed vmlinux is ${got} bytes; the payload trailer says ${expected}`);
}

function paths(root: string, version: string): DebianKernel {
  return {
    version,
    root,
    bzImage: join(root, "boot", `vmlinuz-${version}`),
    vmlinux: join(root, "vmlinux"),
    config: join(root, "boot", `config-${version}`),
    modulesDir: join(root, "lib", "modules", version),
  };
}

/**
 * Returns Debian's 6.12 cloud kernel, unpacked under `cacheDir("kernel", version)`.
 *
 * The first call downloads the package with `apt-get download` (about 34 MB;
 * runs `apt-get update` first only if apt knows no such package), unpacks it
 * with `dpkg-deb -x` and decompresses the bzImage payload into an ELF
 * `vmlinux` (about 58 MB); this takes ~10 s. Later calls find the `.ready`
 * marker and return at once, offline. Concurrent callers (vitest workers)
 * each unpack into a private directory and the first rename wins.
 *
 * @throws Error when apt cannot provide the package or a tool (apt-get,
 * dpkg-deb, zstd/xz) is missing.
 */
export async function debianKernel(options: DebianKernelOptions = {}): Promise<DebianKernel> {
  const kroot = cacheDir("kernel");
  const version = options.version ?? process.env["TS_VMM_KERNEL_VERSION"] ?? newestCached(kroot) ?? (await newestInApt());
  const dir = join(kroot, version);
  if (existsSync(join(dir, ".ready"))) return paths(dir, version);

  const pkg = `linux-image-${version}-unsigned`;
  const debs = cacheDir("kernel", "debs");
  let deb = readdirSync(debs).find((f) => f.startsWith(`${pkg}_`) && f.endsWith(".deb"));
  if (!deb) {
    const tmp = join(debs, `.dl-${process.pid}-${Date.now()}`);
    mkdirSync(tmp, { recursive: true });
    try {
      await run("apt-get", ["download", "-qq", pkg], { cwd: tmp, maxBuffer: 16 << 20 });
      const got = readdirSync(tmp).find((f) => f.endsWith(".deb"));
      if (!got) throw new Error(`apt-get download ${pkg} produced no .deb`);
      renameSync(join(tmp, got), join(debs, got));
      deb = got;
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }

  const work = `${dir}.tmp-${process.pid}-${Date.now()}`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    await run("dpkg-deb", ["-x", join(debs, deb), work]);
    const p = paths(work, version);
    if (!existsSync(p.bzImage)) throw new Error(`${deb} has no boot/vmlinuz-${version}`);
    await extractVmlinux(p.bzImage, p.vmlinux);
    writeFileSync(join(work, ".ready"), JSON.stringify({ version, deb, at: new Date().toISOString() }) + "\n");
    if (existsSync(dir) && !existsSync(join(dir, ".ready"))) rmSync(dir, { recursive: true, force: true });
    try {
      renameSync(work, dir);
    } catch (e) {
      if (!existsSync(join(dir, ".ready"))) throw e;
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return paths(dir, version);
}
