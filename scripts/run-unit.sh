#!/usr/bin/env bash
# Runs cmocka unit-test binaries: scripts/run-unit.sh BIN...
# Prints each binary's result and closes with "unit: N passed, M failed"
# (N and M count cmocka test cases; a binary that crashes or exits non-zero
# without a cmocka summary counts as one failure); exits non-zero when any
# failed.
set -uo pipefail

export ASAN_OPTIONS="${UNIT_ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UNIT_UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

passed=0
failed=0
failed_names=()
if [ $# -eq 0 ]; then
    echo "unit: no test binaries given" >&2
fi
for bin in "$@"; do
    name=$(basename "$bin")
    if [ ! -x "$bin" ]; then
        echo "FAIL $name (not built: $bin)"
        failed=$((failed + 1)); failed_names+=("$name")
        continue
    fi
    out=$(mktemp)
    start=$(date +%s%N)
    timeout --kill-after=5 300 "$bin" >"$out" 2>&1
    rc=$?
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    # cmocka's own summaries: "[  PASSED  ] 12 test(s)." "[  FAILED  ] 1 test(s), listed below:"
    np=$(sed -n 's/^\[  PASSED  \] *\([0-9][0-9]*\) test.*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
    nf=$(sed -n 's/^\[  FAILED  \] *\([0-9][0-9]*\) test.*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
    if [ $rc -eq 0 ] && [ "$nf" -eq 0 ]; then
        [ "$np" -eq 0 ] && np=1
        echo "ok   $name ($np passed, ${ms} ms)"
        passed=$((passed + np))
    else
        [ "$nf" -eq 0 ] && nf=1
        echo "FAIL $name (exit $rc, $np passed, $nf failed, ${ms} ms)"
        sed 's/^/    /' "$out" | tail -n 60
        passed=$((passed + np)); failed=$((failed + nf)); failed_names+=("$name")
    fi
    rm -f "$out"
done
[ $failed -gt 0 ] && echo "failed: ${failed_names[*]}"
echo "unit: $passed passed, $failed failed"
[ $failed -eq 0 ]
