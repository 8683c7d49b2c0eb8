import { mkdirSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

/**
 * The directory for downloads and build products kept between runs (Debian
 * packages, kernels, initramfs images): `$TS_VMM_CACHE`, or `~/.cache/ts-vmm`.
 * It lives outside the repository so a clean checkout reuses it.
 */
export function cacheDir(...sub: string[]): string {
  const base = process.env["TS_VMM_CACHE"] ?? join(homedir(), ".cache", "ts-vmm");
  const dir = join(base, ...sub);
  mkdirSync(dir, { recursive: true });
  return dir;
}
