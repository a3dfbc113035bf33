#!/usr/bin/env bash
# Integration tests: scripts/test-integration.sh [BUILDDIR] [TEST_FILE...]
#
# Every tests/integration/*.test.mjs file starts its own stack (private
# PostgreSQL, Redis, controld, nginx with the module, a fixture provider) on
# free loopback ports, with the binaries from BUILDDIR (build or build/san),
# and drives it with the official openai npm client. Files run in parallel.
#
# Env: SPENDPOL_TEST_CONCURRENCY (default 3), SPENDPOL_KEEP_DATA=1 keeps
# every test stack's data dir (those that failed to start or logged a
# problem are always kept).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-build}
[ $# -gt 0 ] && shift
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
IT="$ROOT/tests/integration"

label=$(basename "$BUILD")
[ "$label" = san ] && label="san (ASan+UBSan)" || label="plain"

for f in "$BUILD/controld" "$BUILD/nginx/objs/ngx_http_spendpol_module.so"; do
    [ -e "$f" ] || echo "[integration] warning: $f is missing (make build); stack tests will fail" >&2
done

command -v node >/dev/null || { echo "[integration] node not found: make deps" >&2; exit 1; }
if [ ! -d "$IT/node_modules/openai" ]; then
    bash "$ROOT/scripts/install-deps.sh"
fi

export SPENDPOL_BUILD_DIR="$BUILD"
export SPENDPOL_REPO_ROOT="$ROOT"
# the unit tests' settings must not leak into the stack's processes
unset ASAN_OPTIONS UBSAN_OPTIONS LD_PRELOAD

if [ $# -gt 0 ]; then
    files=()
    for f in "$@"; do
        case "$f" in /*) files+=("$f") ;; *) files+=("$(pwd)/$f") ;; esac
    done
else
    files=("$IT"/*.test.mjs)
fi

args=(--test)
conc=${SPENDPOL_TEST_CONCURRENCY:-3}
# --test-concurrency exists from node 20.10; older runners pick their own
if node --test-concurrency=1 -e 0 >/dev/null 2>&1; then
    args+=("--test-concurrency=$conc")
fi
if node --test-timeout=1000 -e 0 >/dev/null 2>&1; then
    args+=("--test-timeout=240000")
fi

echo "[integration] $label build: $BUILD, ${#files[@]} files"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cd "$IT"
set +e
timeout --kill-after=10 900 node "${args[@]}" "${files[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

# one plain closing line, whatever reporter node picked (tap: "# pass N", spec: "ℹ pass N")
pass=$(grep -aE '^(# |ℹ )pass [0-9]+' "$log" | tail -n1 | grep -oE '[0-9]+$' || true)
fail=$(grep -aE '^(# |ℹ )fail [0-9]+' "$log" | tail -n1 | grep -oE '[0-9]+$' || true)
[ $rc -eq 124 ] && echo "[integration] timed out after 900 s"
echo "integration: ${pass:-0} passed, ${fail:-0} failed"
if [ $rc -ne 0 ] && [ "${fail:-0}" = 0 ]; then
    echo "[integration] node exited $rc" >&2
fi
exit $rc
