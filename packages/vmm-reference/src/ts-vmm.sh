#!/bin/sh
# The `ts-vmm` executable (package.json `bin`; the build copies this file to dist/ts-vmm).
# It runs dist/bin.cjs, beside it, on the `node` that PATH finds, as `#!/usr/bin/env node` would,
# with one change: NODE_EXTRA_CA_CERTS is unset. Node 20 reads and parses that file at every start,
# before any JavaScript runs (Node 22 and later load it only when TLS is first used): with a system
# bundle of ~150 certificates that is ~36 ms of a ~60 ms start here (DESIGN.md, start-up). The VMM
# opens no TLS connection, so nothing it does uses the variable. TS_VMM_KEEP_NODE_EXTRA_CA_CERTS=1
# keeps it (for an embedder's hook loaded with NODE_OPTIONS that does). `node dist/bin.cjs` still
# works and keeps the environment as it is.
self=$0
# npm links the bin into node_modules/.bin as a symlink; pnpm's and yarn's shims run this file by its path.
if [ -L "$self" ]; then self=$(readlink -f -- "$self") || exit 127; fi
case $self in */*) ;; *) self=./$self ;; esac
[ "${TS_VMM_KEEP_NODE_EXTRA_CA_CERTS:-}" = 1 ] || unset NODE_EXTRA_CA_CERTS
exec node "${self%/*}/bin.cjs" "$@"
