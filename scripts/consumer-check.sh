#!/usr/bin/env bash
# Installs the public packages as a user would and runs the README examples against them:
#   1. builds the workspace (turbo, cached) and packs every public package with `pnpm pack`
#      (the addon packages' prepack puts prebuilds/linux-x64/node.abi<N>.node in the tarball);
#   2. installs all the tarballs with npm into a scratch project under $TMPDIR, outside the
#      workspace, with no compiler on PATH and npm_config_build_from_source=false, then checks
#      that no package has a build/ folder (the prebuilt addons were used, nothing compiled);
#   3. type-checks the examples there against the installed .d.ts (tsc), then runs each file of
#      examples/ (tsx, installed into the scratch project, runs the TypeScript ones; the
#      micro-guest ELF is copied in as guest.elf for the vmm examples).
# First, scripts/check-examples.mjs checks that examples/ holds the READMEs' code verbatim.
# Last line: {"check":"consumer","node":[...],"packages":N,"examples_passed":M,"examples_failed":F}.
# CONSUMER_CHECK_VERBOSE=1 also prints what each passing example printed. Exits non-zero on any failure. Needs /dev/kvm for the kvm-ioctls and vmm-reference examples.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache="${TS_VMM_CACHE:-$HOME/.cache/ts-vmm}"
dev() { node -p "require('./package.json').devDependencies['$1']"; }
tools=("tsx@$(dev tsx)" "typescript@$(dev typescript)" "@types/node@$(dev @types/node)")

scratch=$(mktemp -d "${TMPDIR:-/tmp}/ts-vmm-consumer.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/tarballs" "$scratch/project" "$scratch/bin"
log="$scratch/log"
fail() { echo "consumer-check: $*" >&2; [ -s "$log" ] && tail -40 "$log" >&2; exit 1; }

# 0. The example files are the READMEs' code blocks.
node scripts/check-examples.mjs || { echo "consumer-check: examples/ and the READMEs differ" >&2; exit 1; }

# 1. Build and pack.
pnpm exec turbo run build --cache-dir="$cache/turbo" --concurrency=1 --output-logs=errors-only >"$log" 2>&1 \
  || fail "workspace build failed"
packages=0
for dir in packages/*/; do
  node -e 'process.exit(require(process.argv[1]).private ? 1 : 0)' "$root/$dir/package.json" || continue
  (cd "$dir" && pnpm pack --pack-destination "$scratch/tarballs" >"$log" 2>&1) || fail "pnpm pack failed in $dir"
  packages=$((packages + 1))
done

# The micro-guest for the vmm-reference examples (built, or taken from its cache, in the workspace).
guest=$(cd packages/test-guests && node --input-type=module -e \
  'const { buildMicroGuest } = await import("@ts-vmm/test-guests"); console.log((await buildMicroGuest()).elf)' 2>"$log") \
  || fail "could not build the micro-guest"

# 2. Install with npm, without a compiler: PATH holds only node, npm and a shell.
for tool in node npm sh; do ln -s "$(command -v $tool)" "$scratch/bin/$tool"; done
cd "$scratch/project"
echo '{ "name": "consumer", "private": true, "type": "module" }' >package.json
start=$(date +%s)
env -i HOME="$HOME" PATH="$scratch/bin" TMPDIR="${TMPDIR:-/tmp}" npm_config_build_from_source=false \
  npm install --no-audit --no-fund --loglevel=error "$scratch"/tarballs/*.tgz "${tools[@]}" >"$log" 2>&1 \
  || fail "npm install of the tarballs failed (no compiler on PATH)"
echo "consumer-check: npm install of $packages tarballs: $(($(date +%s) - start)) s" >&2
built=$(find node_modules/@ts-vmm -mindepth 2 -maxdepth 2 -name build -type d)
[ -z "$built" ] || fail "a package built its addon at install instead of using its prebuild: $built"
cp "$guest" guest.elf

# 3. The examples: type-checked against the tarballs' .d.ts (as a user's editor sees them), then run.
cp "$root"/examples/* .
cat >tsconfig.json <<'JSON'
{ "compilerOptions": { "target": "es2022", "module": "nodenext", "strict": true, "noEmit": true,
  "skipLibCheck": false, "types": ["node"] }, "include": ["*.ts"] }
JSON
node_modules/.bin/tsc -p . >"$log" 2>&1 || fail "the examples do not type-check against the installed packages"
passed=0
failed=0
for example in "$root"/examples/*; do
  name=$(basename "$example")
  args=()
  [ "$name" = linux-loader.ts ] && args=(guest.elf)
  case "$name" in
    *.ts) cmd=(node --import tsx "./$name" "${args[@]}") ;;
    *) cmd=(node "./$name" "${args[@]}") ;;
  esac
  if timeout 60 "${cmd[@]}" >"$scratch/out" 2>"$scratch/err" && [ ! -s "$scratch/err" ]; then
    passed=$((passed + 1))
    echo "consumer-check: ok   $name" >&2
    [ -z "${CONSUMER_CHECK_VERBOSE:-}" ] || sed 's/^/    /' "$scratch/out" >&2
  else
    failed=$((failed + 1))
    echo "consumer-check: FAIL $name" >&2
    cat "$scratch/out" "$scratch/err" | tail -20 | sed 's/^/    /' >&2
  fi
done

# The installed `ts-vmm` binary (vmm-reference's bin: dist/bin.js and its one-file bundles, whose
# addon loaders must find kvm-ioctls and vmm-sys-util in npm's layout) boots the micro-guest.
set +e
timeout 60 node_modules/.bin/ts-vmm run --kernel guest.elf --cmdline mode=hello --mem 64 >"$scratch/out" 2>"$scratch/err"
status=$?
set -e
if [ "$status" = 1 ] && grep -q "hello from the ts-vmm micro-guest" "$scratch/out"; then
  passed=$((passed + 1))
  echo "consumer-check: ok   ts-vmm run (the installed binary)" >&2
else
  failed=$((failed + 1))
  echo "consumer-check: FAIL ts-vmm run (the installed binary): status $status" >&2
  cat "$scratch/out" "$scratch/err" | tail -20 | sed 's/^/    /' >&2
fi

echo "{\"check\":\"consumer\",\"node\":[\"$(node -p 'process.versions.node')\"],\"packages\":$packages,\"examples_passed\":$passed,\"examples_failed\":$failed}"
[ "$failed" = 0 ]
