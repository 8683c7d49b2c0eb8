#!/usr/bin/env bash
# Sets up a fresh machine for ts-vmm and builds the workspace. Idempotent and quick
# when everything is already there. Needs: Node 20, npm, gcc, make (the machine's).
#   --quiet   print only what is being installed
set -euo pipefail
cd "$(dirname "$0")/.."
quiet=0; [ "${1:-}" = "--quiet" ] && quiet=1
say() { [ $quiet = 1 ] || echo "setup: $*"; }

PNPM_VERSION=10.34.9
export TS_VMM_CACHE="${TS_VMM_CACHE:-$HOME/.cache/ts-vmm}"
mkdir -p "$TS_VMM_CACHE"

# 1. Debian packages: QEMU is the peer VMM, iasl the independent ACPI parser,
#    busybox-static the Linux test guest's userland, iproute2 for tap/netns tests,
#    cpio, xz-utils and zstd to build initramfs images and unpack kernel payloads,
#    e2fsprogs (mke2fs -d) for the Linux guests' ext2 data disk, chromium (headless, driven by
#    playwright-core) for scripts/docs-check.mjs's look at the rendered API docs.
APT_PACKAGES="qemu-system-x86 acpica-tools busybox-static iproute2 cpio xz-utils zstd e2fsprogs chromium"
missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# 2. pnpm, pinned (corepack cannot verify signatures offline here, so use npm).
if [ "$(pnpm --version 2>/dev/null || true)" != "$PNPM_VERSION" ]; then
  echo "setup: installing pnpm $PNPM_VERSION"
  npm install -g --silent "pnpm@$PNPM_VERSION" >/dev/null
fi

# 3. Dependencies, then a build of every package (turbo caches outside the repo).
say "pnpm install"
pnpm install --frozen-lockfile --prefer-offline --reporter=silent
say "build"
pnpm exec turbo run build --cache-dir="$TS_VMM_CACHE/turbo" --concurrency=2 --output-logs=errors-only >/dev/null
say "ready"
