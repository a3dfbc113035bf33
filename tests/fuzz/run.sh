#!/usr/bin/env bash
# libFuzzer targets for libspendpol and controld; see tests/fuzz/README.md.
#
#   bash tests/fuzz/run.sh smoke          every target briefly (make test)
#   bash tests/fuzz/run.sh long           every target for long (make fuzz)
#   bash tests/fuzz/run.sh build          only build build/fuzz/
#   bash tests/fuzz/run.sh seeds          regenerate the generated seeds
#   bash tests/fuzz/run.sh smoke sse ...  only the named targets
#
# Environment: FUZZ_SECONDS (per target; smoke 6, long 600), FUZZ_JOBS
# (targets run at once; default: the number of cores, at most 2).
#
# Each target fuzzes its seed corpus (tests/fuzz/corpus/<name>/, read
# only), the seeds gen_seeds writes for the current formats
# (build/fuzz/seeds/<name>/) and a working corpus in
# build/fuzz/corpus/<name>/ that keeps what earlier runs found. Crashes go to build/fuzz/crashes/<name>/. The last
# line is "fuzz: N passed, M failed"; the exit status is non-zero when a
# target crashed or could not be built.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

OUT=build/fuzz
MODE=${1:-smoke}
shift || true

case "$MODE" in
    smoke) SECONDS_EACH=${FUZZ_SECONDS:-6} ;;
    long)  SECONDS_EACH=${FUZZ_SECONDS:-600} ;;
    build|seeds) SECONDS_EACH=0 ;;
    *) echo "usage: $0 smoke|long|build|seeds [target...]" >&2; exit 2 ;;
esac

# clang 14 and its libFuzzer runtime, from Debian, only when absent
need_toolchain() {
    command -v clang >/dev/null 2>&1 || return 0
    ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a \
        >/dev/null 2>&1 || return 0
    return 1
}

if need_toolchain; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "fuzz: clang and libclang-rt-14-dev are missing; install them" \
             "as root: apt-get install clang libclang-rt-14-dev" >&2
        echo "fuzz: 0 passed, 1 failed"
        exit 1
    fi
    echo "fuzz: installing clang libclang-rt-14-dev"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && \
        apt-get install -y -qq clang libclang-rt-14-dev >/dev/null || {
        echo "fuzz: apt-get install clang libclang-rt-14-dev failed" >&2
        echo "fuzz: 0 passed, 1 failed"
        exit 1
    }
fi

if ! make -s -f tests/fuzz/fuzz.mk OUT="$OUT" -j"$(nproc)" all; then
    echo "fuzz: build failed" >&2
    echo "fuzz: 0 passed, 1 failed"
    exit 1
fi

if [ "$MODE" = build ]; then
    exit 0
fi

if [ "$MODE" = seeds ]; then
    "$OUT/gen_seeds" tests/fuzz/corpus && echo "fuzz: seeds written"
    exit $?
fi

# generated seeds in the current formats, next to the committed ones
rm -rf "$OUT/seeds"
mkdir -p "$OUT/seeds"
if ! "$OUT/gen_seeds" "$OUT/seeds"; then
    echo "fuzz: gen_seeds failed" >&2
    echo "fuzz: 0 passed, 1 failed"
    exit 1
fi

if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    TARGETS=()
    for src in tests/fuzz/fuzz_*.c; do
        name=$(basename "$src" .c)
        TARGETS+=("${name#fuzz_}")
    done
fi

JOBS=${FUZZ_JOBS:-$(nproc)}
[ "$JOBS" -gt 2 ] && [ -z "${FUZZ_JOBS:-}" ] && JOBS=2
[ "$JOBS" -lt 1 ] && JOBS=1

export ASAN_OPTIONS="${FUZZ_ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${FUZZ_UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

mkdir -p "$OUT/logs"

# one target: exit 0 when it ran clean
run_target() {
    local name=$1 bin="$OUT/fuzz_$1" seeds="tests/fuzz/corpus/$1"
    local work="$OUT/corpus/$1" crashes="$OUT/crashes/$1"
    local log="$OUT/logs/$1.log" dict="tests/fuzz/$1.dict"
    local args=() dirs=()

    mkdir -p "$work" "$crashes" "$seeds"

    args=(-max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048
          -max_len=65536 -len_control=100 -print_final_stats=1
          -artifact_prefix="$crashes/")
    [ -f "$dict" ] && args+=(-dict="$dict")

    dirs=("$work" "$seeds")
    [ -d "$OUT/seeds/$1" ] && dirs+=("$OUT/seeds/$1")

    "$bin" "${args[@]}" "${dirs[@]}" >"$log" 2>&1
}

passed=0
failed=0
failed_names=()
declare -A pids=()
start_all=$(date +%s)

report() {
    local name=$1 rc=$2 log="$OUT/logs/$1.log" execs crash
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        echo "ok   $name (${execs:-?} runs in ${SECONDS_EACH}s)"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        crash=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -1 \
                | sed 's/^Test unit written to //')
        echo "FAIL $name (exit $rc; log $log)"
        grep -m3 -E 'ERROR: |runtime error|invariant failed' "$log" \
            | sed 's/^/     /'
        if [ -n "$crash" ]; then
            echo "     reproducer: $crash"
            echo "     replay: $OUT/fuzz_$name $crash"
        fi
    fi
}

for name in "${TARGETS[@]}"; do
    if [ ! -x "$OUT/fuzz_$name" ]; then
        failed=$((failed + 1))
        failed_names+=("$name")
        echo "FAIL $name (no target $OUT/fuzz_$name)"
        continue
    fi

    while [ "${#pids[@]}" -ge "$JOBS" ]; do
        wait -n -p done_pid
        rc=$?
        report "${pids[$done_pid]}" "$rc"
        unset "pids[$done_pid]"
    done

    run_target "$name" 2>/dev/null &
    pids[$!]=$name
done

while [ "${#pids[@]}" -gt 0 ]; do
    wait -n -p done_pid
    rc=$?
    report "${pids[$done_pid]}" "$rc"
    unset "pids[$done_pid]"
done

echo "fuzz: $MODE took $(( $(date +%s) - start_all ))s"
if [ "$failed" -gt 0 ]; then
    echo "fuzz: failed: ${failed_names[*]}"
fi
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
