/**
 * Small static C programs of the nested tier (nested/*.c): kvm-anchor, which
 * L1's /init runs, and tsvmm-peer, the far end of net and vsock that runs in
 * L1 and in the L2 initramfs. Built with the machine's gcc as static
 * binaries (neither L1 nor the L2 initramfs has a C library) and cached by
 * a hash of the source and the flags.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, renameSync } from "node:fs";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { cacheDir } from "@ts-vmm/test-utils/node";
import { TestGuestsError } from "./error.js";

/** nested/kvm-anchor.c: holds one idle VM open for L1's life (see DESIGN.md, "Keeping kernel text still"). */
export const ANCHOR_SOURCE = fileURLToPath(new URL("../nested/kvm-anchor.c", import.meta.url));

/** nested/peer.c: the stream peer for TCP, Unix sockets (Firecracker's vsock convention) and AF_VSOCK, and a QMP client. */
export const PEER_SOURCE = fileURLToPath(new URL("../nested/peer.c", import.meta.url));

/** nested/ptp-read.c: reads PTP clock devices (/dev/ptpN) with clock_gettime, for the virtio_rtc check. */
export const PTP_READ_SOURCE = fileURLToPath(new URL("../nested/ptp-read.c", import.meta.url));

const FLAGS = ["-static", "-s", "-O2", "-Wall", "-Wextra", "-Werror"];

/**
 * Builds `source` with `gcc -static` into `cacheDir("nested", "tools")`, named
 * by the source's base name and a hash of its content and the flags; a second
 * call with the same source returns the cached binary.
 *
 * @throws {@link TestGuestsError} `MissingTool` when gcc (with a static C
 *   library) cannot build it.
 */
export function buildStaticTool(source: string): string {
  const src = readFileSync(source);
  const hash = createHash("sha256").update(src).update(FLAGS.join(" ")).digest("hex").slice(0, 16);
  const out = join(cacheDir("nested", "tools"), `${basename(source, ".c")}-${hash}`);
  if (existsSync(out)) return out;
  const tmp = `${out}.tmp-${process.pid}`;
  const r = spawnSync("gcc", [...FLAGS, "-o", tmp, source], { encoding: "utf8" });
  if (r.error || r.status !== 0) {
    throw new TestGuestsError("MissingTool", `gcc -static could not build ${source}: ${r.error?.message ?? r.stderr.trim()}`);
  }
  renameSync(tmp, out);
  return out;
}
