import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { promisify } from "node:util";
import { cacheDir, debianKernel } from "@ts-vmm/test-utils/node";
import { TestGuestsError } from "./error.js";
import { buildStaticTool, PEER_SOURCE, PTP_READ_SOURCE } from "./static-tool.js";

const run = promisify(execFile);

/** The line /init prints once userspace runs (the full-boot test waits for it). */
export const INIT_MARKER = "TS-VMM-INIT-OK";

/** The line /init prints after {@link INIT_MARKER}: `cpus=N flags : fpu vme …` from /proc/cpuinfo. */
export const CPU_MARKER = "TS-VMM-CPU";

/**
 * The line /init prints when /dev/vda exists: `TS-VMM-DISK <content>` of
 * {@link DISK_FILE} on it (mounted read-only as ext2/ext4), or
 * `TS-VMM-DISK unmountable`.
 */
export const DISK_MARKER = "TS-VMM-DISK";

/**
 * Lines /init prints for `tsvmm.net=PORT:G2H:H2G:SEED`: `TS-VMM-NET if=eth0
 * addr=10.0.2.15/24 ping=ok|fail …` after configuring the first interface
 * and pinging 10.0.2.2, then `TS-VMM-NET tcp result=… sent=N received=M`
 * from a TCP exchange with 10.0.2.2:PORT (see src/linux-devices.ts).
 */
export const NET_MARKER = "TS-VMM-NET";

/**
 * Lines /init prints for `tsvmm.vsock=HOSTPORT:GUESTPORT:G2H:H2G:SEED`:
 * `TS-VMM-VSOCK cid=N`, `TS-VMM-VSOCK listening port=GUESTPORT` (the host may
 * connect now), `TS-VMM-VSOCK g2h result=…` (the guest connected to CID 2
 * port HOSTPORT) and `TS-VMM-VSOCK h2g result=…` (the host's connection).
 */
export const VSOCK_MARKER = "TS-VMM-VSOCK";

/**
 * Lines /init prints for `tsvmm.balloon=MIB`: `TS-VMM-BALLOON touched mib=F
 * memtotal_kb=K` once it wrote and freed F MiB of guest memory (virtio_balloon
 * not loaded yet), then, after loading virtio_balloon, `TS-VMM-BALLOON
 * inflated|timeout pages=N want=W memtotal_kb=K` (pages from /proc/vmstat's
 * balloon_inflate).
 */
export const BALLOON_MARKER = "TS-VMM-BALLOON";

/**
 * Lines /init prints after the shell marker for `tsvmm.heartbeat=N` (the
 * snapshot test: a guest that keeps answering): `TS-VMM-BEAT n=I up=U` for
 * I = 1..N about every 0.5 s (U: /proc/uptime), every 4th beat with
 * ` disk=<file> reads=R` (the page cache dropped first, so the file on
 * /dev/vda is read through virtio-blk again; R: the disk's completed reads),
 * then `TS-VMM-BEAT-DMESG <line>` for each kernel message logged since the
 * shell marker, then `TS-VMM-BEAT-DONE n=N`, and /init powers off.
 */
export const BEAT_MARKER = "TS-VMM-BEAT";

/**
 * Lines /init prints for `tsvmm.rtc` (after loading the extra modules, e.g.
 * virtio_rtc): `TS-VMM-RTC ptp=ptpN name="<clock_name>" <ptp-read output>`
 * for each PTP clock (nested/ptp-read.c: `sec=S nsec=N realtime=R`, or
 * `error=…`), `TS-VMM-RTC rtc=rtcN name=<name> since_epoch=S` for each RTC
 * class device, then `TS-VMM-RTC done ptp=P rtc=R`.
 */
export const RTC_MARKER = "TS-VMM-RTC";

/** The guest's address on a tapped virtio-net in the device checks (L1 has 10.0.2.2). */
export const GUEST_NET_ADDRESS = "10.0.2.15";

/** The file /init reads from the root of /dev/vda (see {@link dataDisk}). */
export const DISK_FILE = "tsvmm.txt";

/**
 * Kernel options for early-boot runs on a host whose KVM emulates CPL0 (the
 * development machine): keep the emulator away from XSAVE/XRSTOR,
 * CMPXCHG16B, VEX-encoded and MOVBE instructions it cannot execute.
 */
export const EARLY_BOOT_CMDLINE = "console=ttyS0 earlyprintk=ttyS0 noxsave clearcpuid=cx16,bmi1,bmi2,avx,avx2,movbe";

/** The serial line that marks how far the Debian kernel gets under emulation here. */
export const EARLY_BOOT_MARKER = "x86/fpu: x87 FPU will use FXSAVE";

/**
 * Modules /init loads, in order. In Debian's 6.12 cloud config virtio,
 * virtio_ring, virtio_console and the 8250 are built in (=y); virtio_mmio,
 * virtio_blk, virtio_net (with failover, net_failover), virtio-rng,
 * virtio_balloon and the vsock transport are modules (=m).
 */
export const LINUX_GUEST_MODULES: readonly string[] = [
  "virtio_mmio", "virtio_blk", "failover", "net_failover", "virtio_net", "virtio-rng", "virtio_balloon",
  "vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport",
];

/** A Linux guest ready to boot: Debian's kernel plus the busybox initramfs. */
export interface LinuxGuest {
  readonly version: string;
  readonly bzImage: string;
  readonly vmlinux: string;
  /** gzip-compressed newc cpio archive. */
  readonly initramfs: string;
}

/** Options of {@link buildInitramfs}. */
export interface InitramfsOptions {
  /** `lib/modules/<version>` of the kernel (from debianKernel()). */
  readonly modulesDir: string;
  /** busybox-static binary (default /bin/busybox, installed by scripts/setup.sh). */
  readonly busybox?: string;
  /** Where to keep the image (default `cacheDir("initramfs")`). */
  readonly outDir?: string;
  /**
   * Modules not in the kernel's package (uncompressed `.ko`), loaded after
   * {@link LINUX_GUEST_MODULES} in this order, e.g. an out-of-tree virtio_rtc.
   */
  readonly extraModules?: readonly { readonly name: string; readonly path: string }[];
}

const INIT_SCRIPT = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Device checks, each behind a switch on the command line (src/linux-devices.ts).
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1"=*) echo "\${w#*=}"; return;; esac; done; }
balloon=$(arg tsvmm.balloon); net=$(arg tsvmm.net); vsock=$(arg tsvmm.vsock); beat=$(arg tsvmm.heartbeat); rtc=$(arg tsvmm.rtc)
# insmod (unlike modprobe) does not apply module.param= from the kernel command line:
# pass the virtio_mmio.device= entries the VMM appended to virtio_mmio by hand.
mmio=""
for w in $(cat /proc/cmdline); do case "$w" in virtio_mmio.device=*) mmio="$mmio device=\${w#virtio_mmio.device=}";; esac; done
for m in $(cat /etc/modules-load); do
  # With tsvmm.balloon the balloon's driver comes after the memory was touched (below).
  [ "$m" = virtio_balloon ] && [ -n "$balloon" ] && continue
  a=""; [ "$m" = virtio_mmio ] && a="$mmio"
  insmod /lib/modules/$m.ko $a || echo "init: insmod $m failed"
done
# From here on only /init writes to the console: kernel messages (late driver probes on
# another vCPU) would otherwise land in the middle of the marker lines.
dmesg -n 1
echo "${INIT_MARKER} kernel=$(uname -r) virtio=$(ls /sys/bus/virtio/devices 2>/dev/null | wc -l)"
echo "${CPU_MARKER} cpus=$(grep -c ^processor /proc/cpuinfo) $(grep -m1 ^flags /proc/cpuinfo | tr -s ' \\t' ' ')"
if [ -b /dev/vda ]; then
  mkdir -p /mnt
  if mount -t ext4 -o ro /dev/vda /mnt 2>/dev/null; then
    echo "${DISK_MARKER} $(cat /mnt/${DISK_FILE} 2>/dev/null || echo no-file)"
    umount /mnt
  else
    echo "${DISK_MARKER} unmountable"
  fi
fi
kv() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }
if [ -n "$rtc" ]; then
  # virtio_rtc registers a PTP clock for each of the device's clocks (and an RTC class device
  # for a UTC_SMEARED one); give its probe a moment on a slow (nested) machine.
  i=0; while [ -z "$(ls /sys/class/ptp 2>/dev/null)" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  np=0; nr=0
  # Which virtio device (ID 17) the driver bound, and what the kernel said about it.
  for d in /sys/bus/virtio/devices/*; do
    [ "$(cat $d/device 2>/dev/null)" = 0x0011 ] || continue
    drv=none; [ -e $d/driver ] && drv=$(basename $(readlink $d/driver))
    echo "${RTC_MARKER} virtio=\${d##*/} driver=$drv"
    dmesg | grep -e "\${d##*/}:" -e virtio_rtc | while IFS= read -r m; do echo "${RTC_MARKER}-DMESG $m"; done
  done
  for c in /sys/class/ptp/ptp*; do
    [ -e "$c" ] || continue; p=\${c##*/}; np=$((np+1))
    echo "${RTC_MARKER} ptp=$p name=\\"$(cat $c/clock_name)\\" $(tsvmm-ptp-read /dev/$p | cut -d' ' -f2-)"
  done
  for c in /sys/class/rtc/rtc*; do
    [ -e "$c" ] || continue; nr=$((nr+1))
    echo "${RTC_MARKER} rtc=\${c##*/} name=$(cat $c/name | tr ' ' _) since_epoch=$(cat $c/since_epoch 2>/dev/null || echo none)"
  done
  echo "${RTC_MARKER} done ptp=$np rtc=$nr"
fi
if [ -n "$balloon" ]; then
  # Write and free most of the free memory first, so the pages the balloon takes are resident in
  # the VMM (its RSS can only drop for pages the guest touched), then load the driver: it inflates
  # to the device's target (given at start, or set by the host after this marker).
  fill=$(( $(kv MemFree: /proc/meminfo) / 1024 - 32 )); [ $fill -gt 0 ] || fill=0
  mkdir -p /fill && mount -t tmpfs -o size=\${fill}m tmpfs /fill && dd if=/dev/zero of=/fill/x bs=1M count=$fill 2>/dev/null
  rm -f /fill/x; umount /fill 2>/dev/null
  echo "${BALLOON_MARKER} touched mib=$fill memtotal_kb=$(kv MemTotal: /proc/meminfo)"
  sleep 2
  insmod /lib/modules/virtio_balloon.ko || echo "init: insmod virtio_balloon failed"
  want=$((balloon * 256)); end=$(( $(cut -d. -f1 /proc/uptime) + 90 )); n=0
  while [ $(cut -d. -f1 /proc/uptime) -lt $end ]; do
    n=$(kv balloon_inflate /proc/vmstat); [ "\${n:-0}" -ge $want ] && break; sleep 0.2
  done
  st=inflated; [ "\${n:-0}" -ge $want ] || st=timeout
  echo "${BALLOON_MARKER} $st pages=\${n:-0} want=$want memtotal_kb=$(kv MemTotal: /proc/meminfo)"
  # The host samples the VMM's RSS when it reads that line: keep the VMM running a moment.
  sleep 2
fi
if [ -n "$net" ]; then
  set -- $(echo "$net" | tr : ' ')
  ifc=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
  ip link set lo up; ip link set "$ifc" up && ip addr add ${GUEST_NET_ADDRESS}/24 dev "$ifc"
  p=fail; ping -c 3 -W 5 10.0.2.2 >/tmp/ping 2>&1 && p=ok
  echo "${NET_MARKER} if=$ifc addr=${GUEST_NET_ADDRESS}/24 ping=$p $(grep -o '[0-9]* packets received' /tmp/ping | tr ' ' _)"
  t=$(tsvmm-peer tcp-connect 10.0.2.2 $1 $2 $3 $4 60)
  echo "${NET_MARKER} tcp $t"
fi
if [ -n "$vsock" ]; then
  set -- $(echo "$vsock" | tr : ' ')
  echo "${VSOCK_MARKER} $(tsvmm-peer vsock-cid)"
  # The host's connection: the host sends H2G bytes first (its stream is seed + 1).
  tsvmm-peer vsock-listen $2 $4 $3 $(( ($5 + 1) % 4294967296 )) 90 >/tmp/vl.out 2>/tmp/vl.err &
  vl=$!
  i=0; while ! grep -q listening /tmp/vl.err && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
  echo "${VSOCK_MARKER} listening port=$2"
  # Both results are printed after the listener ended (in the order the host expects them).
  g=$(tsvmm-peer vsock-connect 2 $1 $3 $4 $5 60)
  wait $vl
  echo "${VSOCK_MARKER} g2h $g"
  echo "${VSOCK_MARKER} h2g $(cat /tmp/vl.out) $(grep -v '^listening$' /tmp/vl.err | head -c 200 | tr '\\n' ' ')"
fi
if grep -q tsvmm.shell /proc/cmdline; then exec sh; fi
echo 'echo ${INIT_MARKER}-SHELL' | sh
if [ -n "$beat" ]; then
  d0=$(dmesg | wc -l)
  disk=no; [ -b /dev/vda ] && mkdir -p /mnt && mount -t ext4 -o ro /dev/vda /mnt 2>/dev/null && disk=yes
  i=0
  while [ $i -lt $beat ]; do
    i=$((i+1))
    l="${BEAT_MARKER} n=$i up=$(cut -d' ' -f1 /proc/uptime)"
    if [ $disk = yes ] && [ $((i % 4)) = 0 ]; then
      echo 3 > /proc/sys/vm/drop_caches
      l="$l disk=$(cat /mnt/${DISK_FILE} 2>/dev/null || echo unreadable) reads=$(awk '{ print $1 }' /sys/block/vda/stat)"
    fi
    echo "$l"
    sleep 0.5
  done
  dmesg | tail -n +$((d0 + 1)) | while IFS= read -r m; do echo "${BEAT_MARKER}-DMESG $m"; done
  echo "${BEAT_MARKER}-DONE n=$i"
  [ $disk = yes ] && umount /mnt
fi
poweroff -f
`;

async function need(tool: string): Promise<void> {
  try {
    await run("sh", ["-c", `command -v ${tool}`]);
  } catch (cause) {
    throw new TestGuestsError("MissingTool", `${tool} is needed to build the initramfs (scripts/setup.sh installs it)`, { cause });
  }
}

/** Finds `name.ko[.xz|.zst|.gz]` under the modules directory via modules.order. */
function findModule(modulesDir: string, name: string): string | undefined {
  const order = readFileSync(join(modulesDir, "modules.order"), "utf8").split("\n");
  const want = name.replace(/-/g, "_");
  const rel = order.find((l) => basename(l).replace(/\.ko.*$/, "").replace(/-/g, "_") === want);
  if (!rel) return undefined;
  for (const ext of ["", ".xz", ".zst", ".gz"]) {
    const p = join(modulesDir, rel + ext);
    if (existsSync(p)) return p;
  }
  return undefined;
}

async function decompressModule(src: string, dst: string): Promise<void> {
  if (src.endsWith(".ko")) return copyFileSync(src, dst);
  const tool = src.endsWith(".xz") ? "xz" : src.endsWith(".zst") ? "zstd" : "gzip";
  await run("sh", ["-c", `${tool} -d -q -c "$1" > "$2"`, "sh", src, dst]);
}

/**
 * Builds a gzip'd newc initramfs with busybox-static, an /init that loads the
 * virtio modules, prints {@link INIT_MARKER} and powers off (or execs a shell
 * with `tsvmm.shell` on the kernel command line), and the modules of
 * {@link LINUX_GUEST_MODULES} that this kernel has as loadable modules,
 * decompressed. Cached by content hash of busybox, modules and /init.
 *
 * @throws {@link TestGuestsError} `MissingTool` if cpio, gzip or xz is
 *   missing, `DownloadFailed` if busybox is not installed.
 */
export async function buildInitramfs(options: InitramfsOptions): Promise<string> {
  const busybox = options.busybox ?? "/bin/busybox";
  if (!existsSync(busybox)) {
    throw new TestGuestsError("DownloadFailed", `${busybox} not found: install busybox-static (scripts/setup.sh)`);
  }
  for (const t of ["cpio", "gzip", "xz"]) await need(t);
  const mods = LINUX_GUEST_MODULES.flatMap((m) => {
    const p = findModule(options.modulesDir, m);
    return p ? [[m, p] as const] : [];
  });
  for (const x of options.extraModules ?? []) {
    if (!/^[A-Za-z0-9_-]+$/.test(x.name)) throw new TestGuestsError("InvalidArgument", `module name ${JSON.stringify(x.name)}`);
    if (!existsSync(x.path)) throw new TestGuestsError("InvalidArgument", `module ${x.path} does not exist`);
    mods.push([x.name, x.path]);
  }
  const peer = buildStaticTool(PEER_SOURCE);
  const ptpRead = buildStaticTool(PTP_READ_SOURCE);
  const h = createHash("sha256");
  h.update(readFileSync(busybox));
  h.update(readFileSync(peer));
  h.update(readFileSync(ptpRead));
  h.update(INIT_SCRIPT);
  for (const [m, p] of mods) h.update(`${m}\0${p}\0`);
  for (const x of options.extraModules ?? []) h.update(readFileSync(x.path));
  const hash = h.digest("hex").slice(0, 16);
  const outDir = options.outDir ?? cacheDir("initramfs");
  const out = join(outDir, `initramfs-${hash}.cpio.gz`);
  if (existsSync(out)) return out;

  const stage = join(outDir, `.stage-${process.pid}-${Date.now()}`);
  try {
    for (const d of ["bin", "etc", "lib/modules", "proc", "sys", "dev", "tmp"]) mkdirSync(join(stage, d), { recursive: true });
    copyFileSync(busybox, join(stage, "bin", "busybox"));
    chmodSync(join(stage, "bin", "busybox"), 0o755);
    copyFileSync(peer, join(stage, "bin", "tsvmm-peer"));
    chmodSync(join(stage, "bin", "tsvmm-peer"), 0o755);
    copyFileSync(ptpRead, join(stage, "bin", "tsvmm-ptp-read"));
    chmodSync(join(stage, "bin", "tsvmm-ptp-read"), 0o755);
    writeFileSync(join(stage, "init"), INIT_SCRIPT, { mode: 0o755 });
    for (const [m, p] of mods) await decompressModule(p, join(stage, "lib", "modules", `${m}.ko`));
    writeFileSync(join(stage, "etc", "modules-load"), mods.map(([m]) => m).join("\n") + "\n");
    const tmp = `${out}.tmp-${process.pid}`;
    await run("sh", ["-c", `cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -9 > "$2"`, "sh", stage, tmp], {
      maxBuffer: 16 << 20,
    });
    renameSync(tmp, out);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
  return out;
}

/**
 * Obtains Debian's 6.12 cloud kernel (through `debianKernel()` of
 * @ts-vmm/test-utils: apt-get download, cached in `cacheDir("kernel")`) and
 * builds the busybox initramfs for it.
 *
 * @throws {@link TestGuestsError} as {@link buildInitramfs}; `DownloadFailed`
 *   (with the cause) if the kernel package cannot be fetched.
 */
export async function linuxGuest(): Promise<LinuxGuest> {
  let k;
  try {
    k = await debianKernel();
  } catch (cause) {
    throw new TestGuestsError("DownloadFailed", `could not obtain the Debian kernel: ${String(cause)}`, { cause });
  }
  const initramfs = await buildInitramfs({ modulesDir: k.modulesDir });
  return { version: k.version, bzImage: k.bzImage, vmlinux: k.vmlinux, initramfs };
}

/** A disk image in a fresh temp directory; `remove()` deletes both. */
export interface DataDisk {
  /** The raw ext2 image. */
  readonly path: string;
  /** Deletes the image and its directory. */
  remove(): void;
}

/**
 * Makes a small raw ext2 disk (`mke2fs -d`, no root needed) whose root holds
 * {@link DISK_FILE} with `text`, for /init to mount from virtio-blk and print.
 *
 * @throws {@link TestGuestsError} `MissingTool` if mke2fs (e2fsprogs) is
 *   missing, `InvalidArgument` for a size outside 1..1024 MiB.
 */
export async function dataDisk(text: string, sizeMiB = 16): Promise<DataDisk> {
  if (!Number.isInteger(sizeMiB) || sizeMiB < 1 || sizeMiB > 1024) {
    throw new TestGuestsError("InvalidArgument", `sizeMiB must be an integer in 1..1024, got ${sizeMiB}`);
  }
  await need("mke2fs");
  const dir = mkdtempSync(join(tmpdir(), "ts-vmm-datadisk-"));
  const remove = (): void => rmSync(dir, { recursive: true, force: true });
  try {
    const root = join(dir, "root");
    mkdirSync(root);
    writeFileSync(join(root, DISK_FILE), text);
    const path = join(dir, "disk.img");
    await run("mke2fs", ["-q", "-F", "-t", "ext2", "-d", root, path, `${sizeMiB}M`]);
    rmSync(root, { recursive: true, force: true });
    return { path, remove };
  } catch (e) {
    remove();
    throw e instanceof TestGuestsError ? e : new TestGuestsError("MissingTool", `mke2fs failed: ${String(e)}`, { cause: e });
  }
}

/**
 * True if the host CPU can run a Linux guest at full speed: /proc/cpuinfo
 * lists `vmx` or `svm`. (The development machine's nested PVM KVM has
 * neither, and emulates all guest CPL0 code.)
 */
export function hostHasVirtualizationExtensions(): boolean {
  try {
    return /^flags\s*:.*\b(vmx|svm)\b/m.test(readFileSync("/proc/cpuinfo", "utf8"));
  } catch {
    return false;
  }
}
