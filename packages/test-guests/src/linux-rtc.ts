import { execFile } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { cacheDir, compareVersions } from "@ts-vmm/test-utils/node";
import { TestGuestsError } from "./error.js";
import { buildInitramfs, RTC_MARKER } from "./linux-kit.js";

const run = promisify(execFile);

/*
 * Linux's virtio_rtc driver (drivers/virtio/virtio_rtc_*.c, Linux 6.16+) for the
 * nested tier. No Debian kernel enables it (checked 2026-12-03: bookworm's 6.12,
 * trixie-backports' 7.3.4, sid's 7.2.13 and experimental's 7.3~rc7, generic
 * and cloud flavours, all say `# CONFIG_VIRTIO_RTC is not set`), so the module
 * is built out of tree from Debian packages against sid's cloud kernel:
 * - linux-base/-binary/-modules-<v>-cloud-amd64: the kernel (bzImage, modules, config);
 * - linux-headers-<v>-cloud-amd64, linux-headers-<v>-common, linux-kbuild-<v>: the build tree;
 * - linux-source-<x.y> (164 MB): only drivers/virtio/virtio_rtc_* is taken from it;
 * - libc6 of the same suite: sid's kbuild tools (modpost, objtool) need a newer glibc than
 *   bookworm's, so they run through that libc's dynamic loader.
 * The host's gcc builds the module (sid's kernel was built with a newer gcc: the one flag
 * gcc 12 lacks, -fmin-function-alignment, is turned off; the module's ABI does not depend on
 * it); pahole is absent, so the module has no BTF. PTP_1588_CLOCK and RTC_CLASS are built in
 * (=y) in that config, so virtio_rtc.ko needs no other module. If a later config has
 * CONFIG_VIRTIO_RTC=m, the shipped module is used instead.
 * apt runs on a private configuration under the cache (sources, lists, package cache);
 * the system's apt configuration is not touched.
 */

/** The kernel with a virtio_rtc module, unpacked in the cache. */
export interface RtcKernel {
  /** Kernel release, e.g. `7.2.13+deb14-cloud-amd64`. */
  readonly version: string;
  /** The bzImage. */
  readonly bzImage: string;
  /** `lib/modules/<version>` (modules.order and the packaged modules). */
  readonly modulesDir: string;
  /** The virtio_rtc module (uncompressed), built here or the packaged one. */
  readonly virtioRtcModule: string;
  /** `built` (out of tree, from linux-source) or `packaged` (the config has it =m). */
  readonly origin: "built" | "packaged";
}

/** The suite the kernel comes from. */
const SUITE = "sid";
const SOURCES = `deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian ${SUITE} main\n`;
const BINARY_RE = /^linux-binary-(\d+\.\d+\.\d+\+deb\d+)-cloud-amd64$/;

function paths(dir: string, version: string, origin: "built" | "packaged"): RtcKernel {
  return {
    version,
    bzImage: join(dir, "lib", "modules", version, "vmlinuz"),
    modulesDir: join(dir, "lib", "modules", version),
    virtioRtcModule: join(dir, "virtio_rtc.ko"),
    origin,
  };
}

function readyIn(root: string): RtcKernel | undefined {
  const ready = readdirSync(root)
    .filter((d) => existsSync(join(root, d, ".ready")))
    .sort(compareVersions);
  const v = ready.at(-1);
  if (v === undefined) return undefined;
  const info = JSON.parse(readFileSync(join(root, v, ".ready"), "utf8")) as { origin?: string };
  return paths(join(root, v), v, info.origin === "packaged" ? "packaged" : "built");
}

/** apt-get / apt-cache on the private configuration. */
function aptRunner(aptDir: string): (tool: string, args: readonly string[], cwd?: string) => Promise<string> {
  for (const d of ["lists/partial", "cache/archives/partial", "etc"]) mkdirSync(join(aptDir, d), { recursive: true });
  writeFileSync(join(aptDir, "etc", "sources.list"), SOURCES);
  const conf = join(aptDir, "apt.conf");
  writeFileSync(
    conf,
    [
      `Dir::Etc::sourcelist "${join(aptDir, "etc", "sources.list")}";`,
      `Dir::Etc::sourceparts "${join(aptDir, "etc", "none")}";`,
      `Dir::State::Lists "${join(aptDir, "lists")}";`,
      `Dir::Cache "${join(aptDir, "cache")}";`,
      `Debug::NoLocking "true";`,
      `APT::Sandbox::User "root";`,
      "",
    ].join("\n"),
  );
  return async (tool, args, cwd) => {
    const { stdout } = await run(tool, [...args], { cwd, maxBuffer: 64 << 20, env: { ...process.env, APT_CONFIG: conf } });
    return stdout;
  };
}

async function sh(script: string, ...args: string[]): Promise<string> {
  const { stdout } = await run("sh", ["-c", script, "sh", ...args], { maxBuffer: 64 << 20 });
  return stdout;
}

/**
 * Returns sid's cloud kernel with a virtio_rtc module, from the cache or built
 * once (see the comment at the top of this file): about 240 MB of packages
 * are downloaded with `apt-get download` (`apt-get update` of sid's lists into
 * the cache first), the module is compiled (~10 s; most of the time is
 * decompressing linux-source), and only the kernel, its modules and
 * virtio_rtc.ko (~45 MB) are kept. `$TS_VMM_RTC_KERNEL_VERSION` picks a
 * release (it must be in sid's lists or the cache).
 *
 * @throws {@link TestGuestsError} `DownloadFailed` when apt cannot provide the
 *   packages, `BuildFailed` when the module does not build, `MissingTool`
 *   without gcc/make/dpkg-deb/xz.
 */
export async function rtcKernel(): Promise<RtcKernel> {
  const root = cacheDir("kernel-rtc");
  const want = process.env["TS_VMM_RTC_KERNEL_VERSION"];
  if (want !== undefined) {
    const p = join(root, want);
    if (existsSync(join(p, ".ready"))) {
      const info = JSON.parse(readFileSync(join(p, ".ready"), "utf8")) as { origin?: string };
      return paths(p, want, info.origin === "packaged" ? "packaged" : "built");
    }
  } else {
    const cached = readyIn(root);
    if (cached) return cached;
  }
  for (const t of ["gcc", "make", "dpkg-deb", "xz", "apt-get"]) {
    try {
      await sh(`command -v ${t}`);
    } catch (cause) {
      throw new TestGuestsError("MissingTool", `${t} is needed to build virtio_rtc.ko`, { cause });
    }
  }
  const apt = aptRunner(join(root, "apt"));
  let v: string;
  let debVersion: string;
  try {
    await apt("apt-get", ["update", "-qq"]);
    const names = (await apt("apt-cache", ["pkgnames", "linux-binary-"])).split("\n").flatMap((l) => {
      const m = BINARY_RE.exec(l.trim());
      return m ? [m[1]!] : [];
    });
    const picked = want?.replace(/-cloud-amd64$/, "") ?? names.sort(compareVersions).at(-1);
    if (picked === undefined) throw new Error(`${SUITE} lists no linux-binary-*-cloud-amd64 package`);
    v = picked;
    const show = await apt("apt-cache", ["show", "--no-all-versions", `linux-binary-${v}-cloud-amd64`]);
    const dv = /^Version: (\S+)$/m.exec(show)?.[1];
    if (dv === undefined) throw new Error(`no Version for linux-binary-${v}-cloud-amd64`);
    debVersion = dv;
  } catch (cause) {
    throw new TestGuestsError("DownloadFailed", `apt (${SUITE}, private configuration) could not list the kernel: ${String(cause)}`, { cause });
  }
  const version = `${v}-cloud-amd64`;
  const majorMinor = /^(\d+\.\d+)/.exec(v)![1]!;

  const work = join(root, `.work-${process.pid}-${Date.now()}`);
  const debs = join(work, "debs");
  const tree = join(work, "root");
  mkdirSync(debs, { recursive: true });
  try {
    const kernelPkgs = ["base", "binary", "modules"].map((p) => `linux-${p}-${version}`);
    try {
      await apt("apt-get", ["download", "-qq", ...kernelPkgs], debs);
    } catch (cause) {
      throw new TestGuestsError("DownloadFailed", `apt-get download ${kernelPkgs.join(" ")} failed: ${String(cause)}`, { cause });
    }
    for (const f of readdirSync(debs)) await run("dpkg-deb", ["-x", join(debs, f), tree]);
    const modulesDir = join(tree, "usr", "lib", "modules", version);
    const config = readFileSync(join(modulesDir, "config"), "utf8");
    const need = (opt: string, values: readonly string[]): void => {
      const m = new RegExp(`^${opt}=(.*)$`, "m").exec(config);
      if (!m || !values.includes(m[1]!)) throw new TestGuestsError("BuildFailed", `${version}: ${opt} is ${m?.[1] ?? "not set"}, virtio_rtc needs ${values.join(" or ")}`);
    };
    need("CONFIG_VIRTIO", ["y"]);
    need("CONFIG_PTP_1588_CLOCK", ["y"]);
    need("CONFIG_RTC_CLASS", ["y"]);
    const out = join(work, "out");
    mkdirSync(out);
    let origin: "built" | "packaged";
    if (/^CONFIG_VIRTIO_RTC=m$/m.test(config)) {
      origin = "packaged";
      const rel = readFileSync(join(modulesDir, "modules.order"), "utf8").split("\n").find((l) => /\/virtio_rtc\.ko/.test(l));
      const ko = rel && ["", ".xz"].map((e) => join(modulesDir, rel + e)).find((p) => existsSync(p));
      if (!ko) throw new TestGuestsError("BuildFailed", `${version} says CONFIG_VIRTIO_RTC=m but ships no virtio_rtc.ko`);
      await sh(ko.endsWith(".xz") ? 'xz -d -q -c "$1" > "$2"' : 'cp "$1" "$2"', ko, join(out, "virtio_rtc.ko"));
    } else {
      origin = "built";
      await buildModule(apt, { debs, tree, version, v, majorMinor, debVersion, out });
    }
    // Keep the kernel, its modules and the module; drop the packages and the build tree.
    const dir = join(root, version);
    const stage = join(work, "final");
    mkdirSync(join(stage, "lib", "modules"), { recursive: true });
    renameSync(modulesDir, join(stage, "lib", "modules", version));
    copyFileSync(join(out, "virtio_rtc.ko"), join(stage, "virtio_rtc.ko"));
    writeFileSync(join(stage, ".ready"), JSON.stringify({ version, debVersion, origin, at: new Date().toISOString() }) + "\n");
    if (existsSync(dir) && !existsSync(join(dir, ".ready"))) rmSync(dir, { recursive: true, force: true });
    try {
      renameSync(stage, dir);
    } catch (e) {
      if (!existsSync(join(dir, ".ready"))) throw e;
    }
    return paths(dir, version, origin);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

interface BuildDirs {
  readonly debs: string;
  readonly tree: string;
  readonly version: string;
  readonly v: string;
  readonly majorMinor: string;
  readonly debVersion: string;
  readonly out: string;
}

const KBUILD = `obj-m += virtio_rtc.o
virtio_rtc-y := virtio_rtc_driver.o virtio_rtc_ptp.o virtio_rtc_class.o
ccflags-y += -DCONFIG_VIRTIO_RTC_PTP=1 -DCONFIG_VIRTIO_RTC_CLASS=1
`;

async function buildModule(apt: (tool: string, args: readonly string[], cwd?: string) => Promise<string>, d: BuildDirs): Promise<void> {
  const pkgs = [
    `linux-headers-${d.version}`, `linux-headers-${d.v}-common`, `linux-kbuild-${d.v}`,
    `linux-source-${d.majorMinor}=${d.debVersion}`, "libc6",
  ];
  const dl = join(d.debs, "build");
  mkdirSync(dl);
  try {
    await apt("apt-get", ["download", "-qq", ...pkgs], dl);
  } catch (cause) {
    throw new TestGuestsError("DownloadFailed", `apt-get download ${pkgs.join(" ")} failed: ${String(cause)}`, { cause });
  }
  const files = readdirSync(dl);
  const libcDir = join(d.tree, "..", "libc");
  const src = join(d.tree, "..", "src");
  mkdirSync(src);
  for (const f of files) {
    if (f.startsWith("linux-source-")) {
      // Only the driver's files out of the 1.5 GB tree.
      const top = `linux-source-${d.majorMinor}`;
      await sh(
        `dpkg-deb --fsys-tarfile "$1" | tar -xO "./usr/src/${top}.tar.xz" | xz -dc | ` +
          `tar -x -C "$2" --strip-components=3 --wildcards '${top}/drivers/virtio/virtio_rtc_*'`,
        join(dl, f), src,
      );
    } else {
      await run("dpkg-deb", ["-x", join(dl, f), f.startsWith("libc6_") ? libcDir : d.tree]);
    }
  }
  for (const f of ["virtio_rtc_driver.c", "virtio_rtc_ptp.c", "virtio_rtc_class.c", "virtio_rtc_internal.h"]) {
    if (!existsSync(join(src, f))) throw new TestGuestsError("BuildFailed", `linux-source-${d.majorMinor} has no drivers/virtio/${f}`);
  }
  writeFileSync(join(src, "Kbuild"), KBUILD);
  // The headers' Makefile names /usr/src/… and the kbuild tools need the newer libc:
  // point the one at the unpacked tree, wrap the others with that libc's loader.
  const headers = join(d.tree, "usr", "src", `linux-headers-${d.version}`);
  const mk = join(headers, "Makefile");
  writeFileSync(mk, readFileSync(mk, "utf8").replaceAll("/usr/src/", `${join(d.tree, "usr", "src")}/`));
  const lib = join(libcDir, "usr", "lib", "x86_64-linux-gnu");
  const kbuild = join(d.tree, "usr", "lib", `linux-kbuild-${d.v}`);
  const wrap = (target: string, at: string): void => {
    writeFileSync(at, `#!/bin/sh\nexec "${lib}/ld-linux-x86-64.so.2" --library-path "${lib}" "${target}" "$@"\n`, { mode: 0o755 });
  };
  // Debian's modpost and objtool are dispatchers that exec `<argv0>.real-lsb-64` / `objtool.real-x86`.
  const modpost = join(kbuild, "scripts", "mod");
  renameSync(join(modpost, "modpost"), join(modpost, "modpost.dispatch"));
  wrap(join(modpost, "modpost.real-lsb-64"), join(modpost, "modpost"));
  const objtool = join(d.tree, "..", "objtool");
  wrap(join(kbuild, "tools", "objtool", "objtool.real-x86"), objtool);
  try {
    await run("make", [
      "-C", headers, `M=${src}`, "CC=gcc", "CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT=", "CONFIG_DEBUG_INFO_BTF_MODULES=",
      `objtool=${objtool}`, "modules",
    ], { maxBuffer: 64 << 20 });
  } catch (cause) {
    const e = cause as { stderr?: string };
    throw new TestGuestsError("BuildFailed", `make virtio_rtc.ko against ${d.version} failed: ${(e.stderr ?? String(cause)).slice(-3000)}`, { cause });
  }
  const ko = join(src, "virtio_rtc.ko");
  const info = await sh('objcopy -O binary -j .modinfo "$1" /dev/stdout | tr "\\0" "\\n"', ko);
  if (!info.includes(`vermagic=${d.version} `)) throw new TestGuestsError("BuildFailed", `virtio_rtc.ko has the wrong vermagic: ${info}`);
  copyFileSync(ko, join(d.out, "virtio_rtc.ko"));
}

/** Sid's kernel with virtio_rtc and a busybox initramfs that loads it. */
export interface LinuxRtcGuest {
  readonly kernel: RtcKernel;
  /** gzip-compressed newc cpio archive ({@link buildInitramfs} with virtio_rtc as an extra module). */
  readonly initramfs: string;
  /** Kernel command-line switch that makes /init print the {@link RTC_MARKER} lines. */
  readonly cmdline: string;
}

/**
 * {@link rtcKernel} plus its initramfs: /init loads virtio_mmio, then
 * virtio_rtc, and with `tsvmm.rtc` prints each PTP clock's name and time.
 *
 * @throws {@link TestGuestsError} as {@link rtcKernel} and {@link buildInitramfs}.
 */
export async function linuxRtcGuest(): Promise<LinuxRtcGuest> {
  const kernel = await rtcKernel();
  const initramfs = await buildInitramfs({ modulesDir: kernel.modulesDir, extraModules: [{ name: "virtio_rtc", path: kernel.virtioRtcModule }] });
  return { kernel, initramfs, cmdline: "tsvmm.rtc=1" };
}

/** One PTP clock as /init read it (a {@link RTC_MARKER} `ptp=` line). */
export interface RtcLinuxReading {
  /** `ptp0`… */
  readonly device: string;
  /** The driver's clock_name, `Virtio PTP type T/variant V`. */
  readonly name: string;
  /** virtio_rtc clock type T from the name, or null for another PTP clock. */
  readonly type: number | null;
  /** The clock's time in seconds (with the nanoseconds), or null when the read failed. */
  readonly seconds: number | null;
  /** The ptp-read error, if any. */
  readonly error: string | null;
}

const PTP_LINE = new RegExp(`^${RTC_MARKER} ptp=(ptp\\d+) name="([^"]*)" (?:sec=(-?\\d+) nsec=(\\d+) realtime=-?\\d+|error=(.*))$`);

/**
 * Checks the {@link RTC_MARKER} lines of a guest's serial output: the
 * device with ID 17 is bound to virtio_rtc and the kernel logged no error
 * about it; and against our device's three clocks (device.ts: UTC, TAI, MONOTONIC) read by Linux's
 * virtio_rtc: three PTP clocks of types 0, 1 and 2, each read without error;
 * UTC within `slackS` of the host's clock between `hostStartS` and `hostEndS`
 * (epoch seconds taken before and after the run); TAI − UTC within 2 s of
 * `taiOffsetS` (37 s by default, the device's default); MONOTONIC positive and
 * below the run's length plus `slackS` (the VMM host's CLOCK_MONOTONIC, which
 * in the nested tier is L1's uptime).
 *
 * @returns the readings and the problems found (empty when all holds).
 */
export function rtcLinuxProblems(
  serial: string,
  opts: { readonly hostStartS: number; readonly hostEndS: number; readonly slackS?: number; readonly taiOffsetS?: number },
): { readonly readings: readonly RtcLinuxReading[]; readonly problems: readonly string[] } {
  const slack = opts.slackS ?? 60;
  const readings: RtcLinuxReading[] = [];
  const problems: string[] = [];
  let done = false;
  for (const raw of serial.split("\n")) {
    const line = raw.replace(/\r$/, "");
    if (line.startsWith(`${RTC_MARKER} done`)) done = true;
    const m = PTP_LINE.exec(line);
    if (!m) continue;
    const t = /^Virtio PTP type (\d+)\/variant \d+$/.exec(m[2]!);
    readings.push({
      device: m[1]!,
      name: m[2]!,
      type: t ? Number(t[1]) : null,
      seconds: m[3] !== undefined ? Number(m[3]) + Number(m[4]) / 1e9 : null,
      error: m[5] ?? null,
    });
  }
  const bound = /^TS-VMM-RTC virtio=(virtio\d+) driver=(\S+)\r?$/m.exec(serial);
  if (!bound) problems.push("no virtio device with ID 17 in the guest's /sys/bus/virtio");
  else if (bound[2] !== "virtio_rtc") problems.push(`${bound[1]} (ID 17) is bound to ${bound[2]}, not virtio_rtc`);
  // The driver logs only when something is off (a clock it cannot expose, a failed request).
  // An out-of-tree, unsigned module taints the kernel and says so: expected, not the device's doing.
  const expected = /loading out-of-tree module taints kernel|module verification failed: signature and\/or required key missing/;
  const said = serial.split("\n").filter((l) => l.startsWith(`${RTC_MARKER}-DMESG`) && /fail|error|cannot|invalid|timeout|warn/i.test(l) && !expected.test(l));
  for (const l of said) problems.push(`kernel: ${l.slice(RTC_MARKER.length + 7).trim()}`);
  if (!done) problems.push(`no "${RTC_MARKER} done" line: /init did not finish the rtc check`);
  const byType = (type: number): RtcLinuxReading | undefined => readings.find((r) => r.type === type);
  for (const r of readings) if (r.error !== null) problems.push(`${r.device} (${r.name}): read failed: ${r.error}`);
  const utc = byType(0);
  const tai = byType(1);
  const mono = byType(2);
  const virtio = readings.filter((r) => r.type !== null);
  if (virtio.length !== 3) problems.push(`expected 3 virtio_rtc PTP clocks (UTC, TAI, MONOTONIC), found ${virtio.map((r) => r.name).join(", ") || "none"}`);
  if (utc?.seconds != null) {
    if (utc.seconds < opts.hostStartS - slack || utc.seconds > opts.hostEndS + slack) {
      problems.push(`UTC clock read ${utc.seconds.toFixed(3)}, host time was ${opts.hostStartS}..${opts.hostEndS} (±${slack} s)`);
    }
  } else if (utc) problems.push("UTC clock has no time");
  else problems.push("no UTC clock (type 0)");
  if (utc?.seconds != null && tai?.seconds != null) {
    const d = tai.seconds - utc.seconds;
    const want = opts.taiOffsetS ?? 37;
    if (Math.abs(d - want) > 2) problems.push(`TAI − UTC read ${d.toFixed(3)} s, want ${want} ± 2`);
  } else problems.push("no TAI reading (type 1)");
  if (mono?.seconds != null) {
    const max = opts.hostEndS - opts.hostStartS + slack;
    if (!(mono.seconds > 0 && mono.seconds < max)) problems.push(`MONOTONIC clock read ${mono.seconds.toFixed(3)} s, want 0 < t < ${max}`);
  } else problems.push("no MONOTONIC reading (type 2)");
  return { readings, problems };
}
