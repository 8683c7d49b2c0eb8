#!/bin/sh
# Boots the nested tier's L1 (QEMU TCG, -cpu EPYC,+svm,+npt, the Debian cloud
# kernel with kvm-amd: a hardware-style KVM) with node and the built ts-vmm
# packages in its initramfs, and runs there:
#   - readback-probe.mjs (every template and switch: policy vs KVM_GET_CPUID2),
#   - ts-vmm cpu-features --json (host template) and with --cpu-features +shstk.
# Writes test/fixtures/cpuid/tcg-l1-readback.json. Build the packages first
# (pnpm exec turbo run build). Needs what record-tcg-l1.sh needs.
#   scripts/cpuid-recorder/run-in-tcg-l1.sh [OUT.json]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
pkgs=$(cd "$here/../../.." && pwd)
out=${1:-$here/../../test/fixtures/cpuid/tcg-l1-readback.json}
cache=${TS_VMM_CACHE:-$HOME/.cache/ts-vmm}
ver=${TS_VMM_KERNEL_VERSION:-$(ls "$cache/kernel" | grep -v '^debs$' | sort -V | tail -n 1)}
kdir=$cache/kernel/$ver
[ -f "$kdir/.ready" ] || { echo "no unpacked kernel in $kdir: run debianKernel() from @ts-vmm/test-utils first" >&2; exit 1; }
mods=$kdir/lib/modules/$ver/kernel
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/lib/modules" "$root/app/packages"
cp "$(command -v busybox)" "$root/bin/busybox"
for m in virt/lib/irqbypass arch/x86/kvm/kvm arch/x86/kvm/kvm-amd arch/x86/kernel/cpuid; do
  xz -dc "$mods/$m.ko.xz" > "$root/lib/modules/$(basename "$m").ko"
done
node=$(command -v node)
mkdir -p "$root/usr/bin"
cp "$node" "$root/usr/bin/node"
for lib in $(ldd "$node" | awk '$3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# The packages the reference VMM loads at run time: package.json, dist/, native addons, templates.
for p in vmm-sys-util kvm-ioctls vm-memory virtio-queue virtio-devices linux-loader vmm-reference; do
  d=$root/app/packages/$p
  mkdir -p "$d/node_modules/@ts-vmm"
  cp "$pkgs/$p/package.json" "$d/"
  cp -r "$pkgs/$p/dist" "$d/"
  [ -d "$pkgs/$p/build/Release" ] && mkdir -p "$d/build/Release" && cp "$pkgs/$p/build/Release/"*.node "$d/build/Release/"
  [ -d "$pkgs/$p/cpu-templates" ] && cp -r "$pkgs/$p/cpu-templates" "$d/"
  for dep in vmm-sys-util kvm-ioctls vm-memory virtio-queue virtio-devices linux-loader; do
    [ "$dep" != "$p" ] && ln -s "../../../$dep" "$d/node_modules/@ts-vmm/$dep"
  done
  # The registry run-time dependencies (node-gyp-build, zod: packages without dependencies of their own).
  for dep in $(node -e 'const d = require(process.argv[1]).dependencies ?? {}; console.log(Object.keys(d).filter((n) => !n.startsWith("@ts-vmm/")).join(" "))' "$pkgs/$p/package.json"); do
    if [ -e "$pkgs/$p/node_modules/$dep" ]; then
      mkdir -p "$(dirname "$d/node_modules/$dep")"
      cp -rL "$pkgs/$p/node_modules/$dep" "$d/node_modules/$dep"
    fi
  done
done
mkdir -p "$root/app/packages/vmm-reference/scripts"
cp "$here/readback-probe.mjs" "$root/app/packages/vmm-reference/scripts/"
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for m in irqbypass kvm kvm-amd cpuid; do /bin/busybox insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
cd /app/packages/vmm-reference
echo "=== probe begin ==="; /usr/bin/node scripts/readback-probe.mjs; echo "=== probe end ==="
echo "=== report begin ==="; /usr/bin/node dist/cli.js cpu-features --json; echo "=== report end ==="
echo "=== shstk begin ==="; /usr/bin/node dist/cli.js run --kernel /dev/null --cpu-features +shstk 2>&1; echo "exit status $?"; echo "=== shstk end ==="
/bin/busybox poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) > "$work/initrd.cpio"
t0=$(date +%s)
timeout 900 qemu-system-x86_64 -accel tcg -cpu EPYC,+svm,+npt -m 2048 -smp 1 \
  -nographic -no-reboot -kernel "$kdir/boot/vmlinuz-$ver" -initrd "$work/initrd.cpio" \
  -append "console=ttyS0 quiet panic=-1 rdinit=/init" > "$work/console.txt" 2>&1 || true
t1=$(date +%s)
part() { sed -n "/=== $1 begin ===/,/=== $1 end ===/p" "$work/console.txt" | tr -d '\r' | sed '1d;$d'; }
part probe > "$work/probe.json"
part report > "$work/report.json"
part shstk > "$work/shstk.txt"
[ -s "$work/probe.json" ] || { echo "no probe output on the L1 console:" >&2; tail -n 40 "$work/console.txt" >&2; exit 1; }
node -e '
const fs = require("fs");
const [probe, report, shstk, out, secs, qv] = process.argv.slice(1);
const doc = { name: "tcg-l1-readback", source: `recorded by scripts/cpuid-recorder/run-in-tcg-l1.sh in the nested tier L1 (${qv}, -accel tcg -cpu EPYC,+svm,+npt, kvm-amd); the L1 run took ${secs} s`,
  ...JSON.parse(fs.readFileSync(probe, "utf8")), report: JSON.parse(fs.readFileSync(report, "utf8")), shstkRun: fs.readFileSync(shstk, "utf8").trim() };
fs.writeFileSync(out, JSON.stringify(doc) + "\n");
' "$work/probe.json" "$work/report.json" "$work/shstk.txt" "$out" "$((t1 - t0))" "$(qemu-system-x86_64 --version | head -n 1)"
echo "wrote $out ($((t1 - t0)) s in L1)" >&2
