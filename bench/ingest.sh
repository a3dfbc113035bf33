#!/usr/bin/env bash
# Ingest alone: controld's and PostgreSQL's CPU per journal line.
#
#   bash bench/ingest.sh                      20,000 lines/s for 10 s
#   INGEST_ROWS=400000 INGEST_RATE=20000 bash bench/ingest.sh
#   SPENDPOL_BUILD_DIR=/path/to/other/build SPENDPOL_MIGRATIONS_DIR=... bash bench/ingest.sh
#   INGEST_PERF=1 bash bench/ingest.sh        and where the CPU goes (perf)
#
# Starts a private PostgreSQL, Redis and controld exactly as `make run`
# does (scripts/lib/stack.sh; no nginx), makes an organisation budget, a
# project budget and a department budget and a key through the admin API,
# then appends INGEST_ROWS journal lines at INGEST_RATE lines/s with
# bench/ingest/gen.c (the module's own format, sp_journal_format; unique
# ids; the key, department and project of the budgets, so every line is
# attributed to three budgets). It waits until controld has committed the
# whole file, checks that every line is in audit_logs and counted once in
# each budget, and prints utime+stime (/proc) of controld and of every
# PostgreSQL process, per line, over the run (generator excluded).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../scripts/lib/stack.sh
. "$ROOT/scripts/lib/stack.sh"
# shellcheck source=lib/common.sh
. "$ROOT/bench/lib/common.sh"
# shellcheck source=lib/spendpol.sh
. "$ROOT/bench/lib/spendpol.sh"
STACK="$ROOT/scripts/stack.sh"
CLK_TCK=$(getconf CLK_TCK)

ROWS=${INGEST_ROWS:-200000}
RATE=${INGEST_RATE:-20000}
BUILD=$(sp_abs "${SPENDPOL_BUILD_DIR:-$ROOT/build}")
export SPENDPOL_MIGRATIONS_DIR="${SPENDPOL_MIGRATIONS_DIR:-$ROOT/migrations}"
WORK=$(mktemp -d /tmp/spendpol-ingest-bench.XXXXXX)
SPDATA="$WORK/data"
CONTROLD_PID= STARTED_PG=0 STARTED_REDIS=0

cleanup() {
    set +e
    stop_proc "$CONTROLD_PID" TERM 10
    [ $STARTED_REDIS = 1 ] && sp_redis_stop "$SPDATA" >/dev/null 2>&1
    [ $STARTED_PG = 1 ] && sp_pg_stop "$SPDATA" >/dev/null 2>&1
    [ "${INGEST_KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

[ -x "$BUILD/controld" ] || die "no $BUILD/controld (make build)"
[ -f "$BUILD/libspendpol.a" ] || die "no $BUILD/libspendpol.a (make build)"
cc -std=gnu11 -O2 -I"$ROOT/libspendpol" "$ROOT/bench/ingest/gen.c" \
    "$BUILD/libspendpol.a" -ljansson -lcrypto -lpcre2-8 -lm -o "$WORK/gen" \
    || die "cannot build bench/ingest/gen.c"

spendpol_controld_start

# api_ok METHOD PATH [JSON]: the admin API, dies unless 2xx
api_ok() {
    api "$@"
    case "$API_STATUS" in 2??) ;; *) die "$1 $2 -> $API_STATUS $API_BODY" ;; esac
}
for b in '"scope":{"type":"organization"}' '"scope":{"type":"project","value":"bench"}' \
         '"scope":{"type":"department","value":"bench"},"model":"gpt-4o-mini"'; do
    api_ok POST /budgets "{\"name\":\"bench\",$b,\"limit_usd\":\"1000000\",\"period\":\"monthly\",\"action\":\"warn\"}"
done
api_ok POST /api-keys '{"name":"bench","department":"bench","project":"bench"}'
KEY_ID=$(jq -r .id <<<"$API_BODY")
OWNER_URL=$(sp_pg_owner_url "$PG_PORT" "$SPDATA")
JOURNAL="$SPDATA/journal/journal.log"

# the controld process and every PostgreSQL process
CONTROLD=$(pgrep -f "^$BUILD/controld" -s "$CONTROLD_PID" | head -1 || true)
[ -n "$CONTROLD" ] || CONTROLD=$(pgrep -n -x controld)
POSTMASTER=$(sp_pg_pid "$SPDATA")
pg_pids() { echo "$POSTMASTER" $(workers_of "$POSTMASTER"); }
# PostgreSQL's CPU by role: "backends", "background" (wal writer,
# checkpointer, autovacuum: exited workers count in the postmaster's)
pg_roles() {
    local p b=0 g=0 t
    for p in $(workers_of "$POSTMASTER"); do
        t=$(cpu_us "$p")
        case "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" in
            *spendpol_*|*postgres\ postgres*) b=$((b + t)) ;;
            *) g=$((g + t)) ;;
        esac
    done
    echo "$b $(( g + $(cpu_us "$POSTMASTER") ))"
}

if [ "${INGEST_STATEMENTS:-0}" = 1 ]; then
    psql "$(sp_pg_superuser_url "$PG_PORT" "$SPDATA")" -qc "ALTER SYSTEM SET log_min_duration_statement = 0" \
        -c "SELECT pg_reload_conf()" >/dev/null
fi
sleep 1
C0=$(cpu_us "$CONTROLD"); P0=$(cpu_us $(pg_pids)); read -r B0 G0 <<<"$(pg_roles)"
log "$ROWS lines at $RATE/s into $JOURNAL (controld $CONTROLD, postmaster $POSTMASTER, build $BUILD)"
PERF_PID=
if [ "${INGEST_PERF:-0}" = 1 ]; then
    perf record -q -o "$WORK/perf.data" -p "$(pg_pids | tr ' ' ','),$CONTROLD" 2>/dev/null &
    PERF_PID=$!
fi
GEN=$("$WORK/gen" "$JOURNAL" "$ROWS" "$RATE" org_default "$KEY_ID" bench)
SIZE=$(stat -c %s "$JOURNAL")
for _ in $(seq 1 1200); do
    OFF=$(psql "$OWNER_URL" -Atqc "SELECT coalesce(max(\"offset\"), 0) FROM journal_offsets")
    [ "$OFF" = "$SIZE" ] && break
    sleep 0.1
done
C1=$(cpu_us "$CONTROLD"); P1=$(cpu_us $(pg_pids)); read -r B1 G1 <<<"$(pg_roles)"
if [ -n "$PERF_PID" ]; then
    kill -INT "$PERF_PID"; wait "$PERF_PID" || true
    perf report -i "$WORK/perf.data" --no-children --sort "${INGEST_PERF_SORT:-comm,dso,symbol}" --stdio 2>/dev/null \
        | grep -v '^#' | grep '%' | head -n "${INGEST_PERF_LINES:-40}" >&2
fi
[ "$OFF" = "$SIZE" ] || die "controld committed $OFF of $SIZE bytes within 120 s"

ROWS_IN=$(psql "$OWNER_URL" -Atqc "SELECT count(*) FROM audit_logs WHERE id LIKE 'evt_%'")
SPENT=$(psql "$OWNER_URL" -Atqc "SELECT string_agg(requests::text, ',' ORDER BY budget_id) FROM budget_spend")
[ "$ROWS_IN" = "$ROWS" ] || die "audit_logs has $ROWS_IN of $ROWS lines"
[ "$SPENT" = "$ROWS,$ROWS,$ROWS" ] || die "budget_spend requests $SPENT, expected $ROWS in each of 3 budgets"

if [ "${INGEST_STATEMENTS:-0}" = 1 ]; then
    # wall ms per statement kind over the run, from the server log
    grep -h 'duration: ' "$SPDATA"/pg/data/log/* "$SPDATA"/logs/postgres.log 2>/dev/null \
        | sed -E 's/.*duration: ([0-9.]+) ms +(statement|execute [^:]*|parse [^:]*|bind [^:]*): *(.{0,60}).*/\1\t\3/' \
        | awk -F'\t' '{ t[$2] += $1; n[$2]++ } END { for (k in t) printf "%10.1f ms %6d x  %s\n", t[k], n[k], k }' \
        | sort -rn | head -15 >&2
fi
read -r _ SECS <<<"$GEN"
awk -v c="$((C1 - C0))" -v p="$((P1 - P0))" -v b="$((B1 - B0))" -v g="$((G1 - G0))" -v n="$ROWS" -v secs="$SECS" -v rate="$RATE" 'BEGIN {
    us = 1 / n
    printf "ingest: %d lines offered at %d/s in %.1f s, all loaded and counted in 3 budgets\n", n, rate, secs
    printf "  controld    %6.2f us CPU per line\n", c * us
    printf "  PostgreSQL  %6.2f us CPU per line (backends %.2f, background %.2f)\n", p * us, b * us, g * us
    printf "  together    %6.2f us CPU per line (target: 5)\n", (c + p) * us
}'
