#!/bin/sh
# Records the CPUID table of the nested tier's L1 (QEMU TCG, -cpu EPYC,+svm,+npt)
# and, after loading kvm-amd there, its KVM_GET_SUPPORTED_CPUID, as JSON.
#
#   scripts/cpuid-recorder/record-tcg-l1.sh [OUT.json]
#
# Needs gcc (static libc), busybox-static, cpio, xz and qemu-system-x86_64, and
# the Debian cloud kernel unpacked by @ts-vmm/test-utils' debianKernel() under
# ${TS_VMM_CACHE:-~/.cache/ts-vmm}/kernel/<version> (TS_VMM_KERNEL_VERSION
# picks one; default: the newest there). Takes about a minute under TCG.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../test/fixtures/cpuid/tcg-l1-epyc.json}
cache=${TS_VMM_CACHE:-$HOME/.cache/ts-vmm}
ver=${TS_VMM_KERNEL_VERSION:-$(ls "$cache/kernel" | grep -v '^debs$' | sort -V | tail -n 1)}
kdir=$cache/kernel/$ver
[ -f "$kdir/.ready" ] || { echo "no unpacked kernel in $kdir: run debianKernel() from @ts-vmm/test-utils first" >&2; exit 1; }
mods=$kdir/lib/modules/$ver/kernel
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

gcc -static -O2 -Wall -o "$work/cpuid-dump" "$here/cpuid-dump.c"
root=$work/root
mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/lib/modules"
cp "$(command -v busybox)" "$root/bin/busybox"
cp "$work/cpuid-dump" "$root/bin/cpuid-dump"
for m in virt/lib/irqbypass arch/x86/kvm/kvm arch/x86/kvm/kvm-amd; do
  xz -dc "$mods/$m.ko.xz" > "$root/lib/modules/$(basename "$m").ko"
done
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for m in irqbypass kvm kvm-amd; do /bin/busybox insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
echo "=== cpuid-dump begin ==="
/bin/cpuid-dump
echo "=== cpuid-dump end ==="
/bin/busybox poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) > "$work/initrd.cpio"

timeout 600 qemu-system-x86_64 -accel tcg -cpu EPYC,+svm,+npt -m 1024 -smp 1 \
  -nographic -no-reboot -kernel "$kdir/boot/vmlinuz-$ver" -initrd "$work/initrd.cpio" \
  -append "console=ttyS0 quiet panic=-1 rdinit=/init" > "$work/console.txt" 2>&1 || true
sed -n '/=== cpuid-dump begin ===/,/=== cpuid-dump end ===/p' "$work/console.txt" | tr -d '\r' | sed '1d;$d' > "$work/dump.json"
[ -s "$work/dump.json" ] || { echo "no dump on the L1 console:" >&2; tail -n 30 "$work/console.txt" >&2; exit 1; }
qv=$(qemu-system-x86_64 --version | head -n 1)
{
  printf '{\n "name": "tcg-l1-epyc",\n "source": "recorded by scripts/cpuid-recorder/record-tcg-l1.sh: %s, -accel tcg -cpu EPYC,+svm,+npt, L1 kernel %s with kvm-amd loaded, on %s",\n "vendor": "amd",\n' "$qv" "$ver" "$(date -u +%Y-%m-%d)"
  sed '1d' "$work/dump.json"
} > "$out"
echo "wrote $out" >&2
