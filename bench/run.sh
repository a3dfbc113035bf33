#!/usr/bin/env bash
# make bench: Spendpol against plain nginx and the Portkey gateway, side by
# side in one run on the same fast mock upstream. See bench/README.md.
#
# This file is the driver; the parts are:
#   bench/conf/*.conf       the nginx confs of mock, nginx and nokeep
#   bench/lib/common.sh     logging, process lifecycle, CPU from /proc
#   bench/lib/upstreams.sh  the mock, plain nginx, nokeep, Portkey
#   bench/lib/spendpol.sh   Spendpol's stack, the governance checks before
#                           and the audit check after
#   bench/lib/runs.sh       wrk runs with the CPU of each component, perf,
#                           the memory check
#   bench/report.sh         the table, ratios and targets (parameters)
#   bench/swap.sh           the snapshot swap under load
#   bench/ingest.sh         ingest alone at a fixed rate (when present)
#
# Starts (all on 127.0.0.1, free ports, everything under one temp dir):
#   mock      a plain nginx answering `return 200` with an OpenAI
#             chat.completion JSON body, or a static SSE body with a usage
#             chunk (X-Mock-Stream: 1, or the path /sse/v1/chat/completions)
#   nginx     plain nginx proxy_pass to the mock, 2 workers, upstream keepalive
#   spendpol  the whole stack through scripts/lib/stack.sh: private PostgreSQL,
#             Redis, controld, nginx with the module (2 workers); a provider,
#             a budget and a key made through the admin API
#   portkey   @portkey-ai/gateway from bench/portkey (npm ci when missing)
# then wrk (bench/chat.lua) at c=1 (-t1) and c=64 (-t2), JSON and SSE, each
# configuration in turn inside each repetition (interleaved), and prints the
# table and the ratios; then swaps a 1,000,000-key snapshot into Spendpol
# under load (BENCH_SWAP) and reports latency before, during and after.
# Everything it started is stopped on exit, Ctrl-C too.
#
# Env:
#   BENCH_SECONDS=10            length of one wrk run
#   BENCH_REPS=3                interleaved repetitions (0: no table, e.g. soak only)
#   BENCH_CONFIGS="direct nginx spendpol portkey"
#                               (also: nokeep, plain nginx without upstream
#                               keepalive, proxied the way `spendpol on` does)
#   BENCH_CONNS="1 64"          connection counts (-t1 for c=1, else -t2)
#   BENCH_KINDS="json sse hit p2k"
#                               (hit: JSON with "temperature": 0, which
#                               Spendpol's response cache answers after the
#                               first request; plain nginx proxies it as
#                               any JSON request; p2k: JSON with a 2 KB
#                               user prompt of clean prose, the PII scan's
#                               and the tokenizer's work per request)
#   BENCH_WARMUP=2              seconds of warm-up per configuration and kind
#   BENCH_SOAK=0                seconds of the memory check (300: 5 minutes):
#                               Spendpol under JSON+SSE load, each worker's RSS
#                               sampled every BENCH_SOAK_INTERVAL (10) seconds
#   BENCH_PERF_KIND=json        the kind BENCH_PERF profiles (json, sse, hit)
#   BENCH_PERF=0                1: perf record the Spendpol and plain nginx
#                               workers at c=64 JSON after the table
#   BENCH_SWAP=1                the snapshot swap under load (0: skip; default
#                               0 when there is no table or no spendpol):
#                               BENCH_SWAP_KEYS (1000000) keys inserted into
#                               PostgreSQL, controld publishes them, wrk c=64
#                               JSON runs across it in phases: before
#                               (BENCH_SWAP_BEFORE=5 s), load, swap, after
#                               (BENCH_SWAP_AFTER=5 s); BENCH_SWAP_TIMEOUT=600
#                               seconds from the INSERT to the last swap
#   BENCH_INGEST=1              run bench/ingest.sh on the stack after the
#                               audit check, its output appended to the
#                               report (default 1 when the file exists and
#                               Spendpol is in the table, else 0)
#   BENCH_TARGET_RATIO=0.6      targets, passed to bench/report.sh (empty:
#   BENCH_GOAL_RATIO=0.8        not a target): Spendpol/nginx req/s at c=64
#   BENCH_TARGET_P50_US=30      JSON and its goal, added p50 at c=1 JSON,
#   BENCH_TARGET_MODULE_US=8    nginx workers' CPU over plain nginx's and
#   BENCH_TARGET_INGEST_US=5    controld+PostgreSQL CPU per request at c=64
#   BENCH_TARGET_PORTKEY=       JSON, Spendpol/Portkey req/s
#   BENCH_TARGET_HIT_RATIO=1.5  cache hits over plain nginx req/s, c=64
#   BENCH_KEEP=0                1: keep the temp dir (logs, wrk output)
#   BENCH_HOLD=0                seconds to keep everything running after the
#                               report, for inspection (endpoints printed)
#   SPENDPOL_BUILD_DIR=build    where controld and the module come from
#   BENCH_LABEL                 a line on what was measured, printed in the report
# Results are also written to bench/results/ (not committed; the figures
# worth keeping go into bench/RESULTS.md, the report prints their row).
set -uo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
SP_REPO_ROOT=$ROOT
# shellcheck source=../scripts/lib/stack.sh
. "$ROOT/scripts/lib/stack.sh"
STACK="$ROOT/scripts/stack.sh"
for part in common upstreams spendpol runs; do
    # shellcheck source=/dev/null
    . "$BENCH/lib/$part.sh"
done
# shellcheck source=swap.sh
. "$BENCH/swap.sh"
# the mock provider listens on loopback, which is refused by default
export SPENDPOL_UPSTREAM_ALLOW="${SPENDPOL_UPSTREAM_ALLOW:-127.0.0.0/8}"

SECS=${BENCH_SECONDS:-10}
REPS=${BENCH_REPS:-3}
CONFIGS=${BENCH_CONFIGS:-direct nginx spendpol portkey}
CONNS=${BENCH_CONNS:-1 64}
KINDS=${BENCH_KINDS:-json sse hit p2k}
WARMUP=${BENCH_WARMUP:-2}
SOAK=${BENCH_SOAK:-0}
SOAK_INTERVAL=${BENCH_SOAK_INTERVAL:-10}
PERF=${BENCH_PERF:-0}
SWAP=${BENCH_SWAP:-}
SWAP_KEYS=${BENCH_SWAP_KEYS:-1000000}
SWAP_BEFORE=${BENCH_SWAP_BEFORE:-5}
SWAP_AFTER=${BENCH_SWAP_AFTER:-5}
SWAP_TIMEOUT=${BENCH_SWAP_TIMEOUT:-600}
INGEST=${BENCH_INGEST:-}
KEEP=${BENCH_KEEP:-0}
BUILD=$(sp_abs "${SPENDPOL_BUILD_DIR:-$ROOT/build}")
CLK_TCK=$(getconf CLK_TCK)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$BENCH/results"

# the swap phase and the ingest measurement come with the table when
# Spendpol is in it
with_table=0
[ "$REPS" -gt 0 ] && has "$CONFIGS" spendpol && with_table=1
[ -n "$SWAP" ] || SWAP=$with_table
if [ -z "$INGEST" ]; then
    INGEST=0
    [ -f "$BENCH/ingest.sh" ] && INGEST=$with_table
fi

# ------------------------------------------------------------ prerequisites

need_pkgs=()
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v jq >/dev/null || need_pkgs+=(jq)
command -v psql >/dev/null || need_pkgs+=(postgresql-client)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]} (Debian packages)"
    [ "$(id -u)" -eq 0 ] || die "run as root or install: ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null \
        || die "apt-get install ${need_pkgs[*]} failed"
fi
[ -x "$BUILD/controld" ] || die "$BUILD/controld not built (make build)"
[ -f "$(sp_module_so "$BUILD")" ] || die "$(sp_module_so "$BUILD") not built (make build)"
has "$CONFIGS" portkey && portkey_install

# ------------------------------------------------------------ lifecycle

WORK=$(mktemp -d /tmp/spendpol-bench.XXXXXX)
chmod 0755 "$WORK"
SPDATA="$WORK/spendpol"
MOCK_PID= PLAIN_PID= NOKEEP_PID= SP_NGINX_PID= CONTROLD_PID= PORTKEY_PID=
MOCK_PORT= PLAIN_PORT= NOKEEP_PORT= PK_PORT= MOCK_WORKERS=
STARTED_PG=0 STARTED_REDIS=0 WRK_BG= SWAP_WRK= SWAP_WATCH= SWAP_INSERT=
CLEANED=0

cleanup() {
    [ $CLEANED = 1 ] && return 0
    CLEANED=1
    trap '' INT TERM
    log "stopping everything this run started"
    local p
    # the swap phase's psql, while it is still the child of SWAP_INSERT
    if [ -n "$SWAP_INSERT" ] && [ -f "$WORK/swap/insert.pid" ]; then
        p=$(cat "$WORK/swap/insert.pid")
        [ "$(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' ')" = "$SWAP_INSERT" ] && kill -TERM "$p" 2>/dev/null
    fi
    for p in $WRK_BG $SWAP_WRK $SWAP_WATCH $SWAP_INSERT; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    stop_proc "$PORTKEY_PID" TERM 5
    # Spendpol's nginx first, so the journal is complete before controld stops
    stop_proc "$SP_NGINX_PID" QUIT 10
    stop_proc "$CONTROLD_PID" TERM 10
    [ $STARTED_REDIS = 1 ] && sp_redis_stop "$SPDATA"
    [ $STARTED_PG = 1 ] && sp_pg_stop "$SPDATA"
    stop_proc "$PLAIN_PID" QUIT 5
    stop_proc "$NOKEEP_PID" QUIT 5
    stop_proc "$MOCK_PID" QUIT 5
    rm -rf "$(sp_snapshot_dir "$SPDATA")"
    if [ "$KEEP" = 1 ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ------------------------------------------------------------ start

start_mock
has "$CONFIGS" nginx && start_plain
has "$CONFIGS" nokeep && start_nokeep
if has "$CONFIGS" spendpol || [ "$SOAK" -gt 0 ] || [ "$SWAP" = 1 ] || [ "$INGEST" = 1 ]; then
    spendpol_start
    spendpol_verify
fi
if has "$CONFIGS" portkey; then
    start_portkey
    verify_portkey
fi

# ------------------------------------------------------------ measure

mkdir -p "$RESULTS" "$WORK/wrk"
RUNS="$WORK/runs.tsv"
OUTFILE="$RESULTS/bench-$STAMP.txt"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$RUNS"
if [ "$REPS" -gt 0 ]; then
    runs_table
    {
        run_header
        echo
        bash "$BENCH/report.sh" --configs "$CONFIGS" \
            --min-ratio "${BENCH_TARGET_RATIO-0.6}" --goal-ratio "${BENCH_GOAL_RATIO-0.8}" \
            --max-p50 "${BENCH_TARGET_P50_US-30}" --max-module "${BENCH_TARGET_MODULE_US-8}" \
            --max-ingest "${BENCH_TARGET_INGEST_US-5}" --min-portkey "${BENCH_TARGET_PORTKEY-}" \
            --min-hit-ratio "${BENCH_TARGET_HIT_RATIO-1.5}" \
            --row "$(date -u '+%Y-%m-%d %H:%M')" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" \
            "$RUNS" || die "bench/report.sh failed on $RUNS"
    } >"$OUTFILE"
    cp "$RUNS" "$RESULTS/runs-$STAMP.tsv"
fi
if [ "$PERF" = 1 ] && command -v perf >/dev/null; then
    perf_profiles
fi
SOAKF=
if [ "$SOAK" -gt 0 ] && [ -n "$SP_KEY" ]; then
    SOAKF="$RESULTS/soak-$STAMP.txt"
    soak "$SOAKF"
fi
SWAPF=
if [ "$SWAP" = 1 ] && [ -n "$SP_KEY" ]; then
    SWAPF="$RESULTS/swap-$STAMP.txt"
    swap_phase "$SWAPF"
fi
[ -n "$SP_KEY" ] && spendpol_audit

# bench/ingest.sh (the ingest alone at a fixed rate) on the same stack,
# after the audit check so that its rows cannot blur the count. What it
# gets: BENCH_SPDATA (the stack's data dir: journal/, logs/, pg/),
# BENCH_PG_URL (PostgreSQL as the schema owner), BENCH_CONTROLD_PID,
# BENCH_BUILD, BENCH_API and BENCH_ADMIN_KEY (this run's admin API),
# BENCH_KEY and BENCH_BUDGET_ID (the bench key and its budget),
# BENCH_WORK (a directory of its own), BENCH_RESULTS and BENCH_STAMP. Its
# stdout goes into the report, its stderr to the terminal.
INGESTF=
if [ "$INGEST" = 1 ] && [ -n "$SP_KEY" ]; then
    INGESTF="$RESULTS/ingest-$STAMP.txt"
    if [ -f "$BENCH/ingest.sh" ]; then
        log "ingest: bash bench/ingest.sh on this stack"
        mkdir -p "$WORK/ingest"
        BENCH_SPDATA=$SPDATA BENCH_PG_URL=$(sp_pg_owner_url "$PG_PORT" "$SPDATA") \
        BENCH_CONTROLD_PID=$CONTROLD_PID BENCH_BUILD=$BUILD BENCH_API=$SP_API \
        BENCH_ADMIN_KEY=$SP_ADMIN BENCH_KEY=$SP_KEY BENCH_BUDGET_ID=$BUDGET_ID \
        BENCH_WORK="$WORK/ingest" BENCH_RESULTS=$RESULTS BENCH_STAMP=$STAMP \
            bash "$BENCH/ingest.sh" >"$INGESTF"
        rc=$?
        [ $rc = 0 ] || echo "FAILED: bench/ingest.sh exited with $rc" >>"$INGESTF"
    else
        echo "ingest: BENCH_INGEST=1 but there is no bench/ingest.sh in this checkout" >"$INGESTF"
    fi
fi

# ------------------------------------------------------------ report

{
    [ "$REPS" -gt 0 ] && cat "$OUTFILE"
    if [ ${#VERIFY[@]} -gt 0 ]; then
        echo
        echo "Spendpol governs (checked before the runs):"
        for l in "${VERIFY[@]}"; do echo "  $l"; done
    fi
    [ -n "$SWAPF" ] && [ -f "$SWAPF" ] && { echo; cat "$SWAPF"; }
    [ -n "$AUDIT_LINE" ] && { echo; echo "$AUDIT_LINE"; }
    for f in "$INGESTF" "$SOAKF"; do
        [ -n "$f" ] && [ -f "$f" ] && { echo; cat "$f"; }
    done
} | tee "$RESULTS/report-$STAMP.txt"
[ "$REPS" -gt 0 ] && cp "$RESULTS/report-$STAMP.txt" "$OUTFILE"
log "report: $RESULTS/report-$STAMP.txt"
if [ "${BENCH_HOLD:-0}" -gt 0 ]; then
    log "holding the stack ${BENCH_HOLD}s for inspection: mock :$MOCK_PORT${PLAIN_PORT:+ nginx :$PLAIN_PORT}${SP_PORT:+ spendpol :$SP_PORT api :$API_PORT pg :$PG_PORT key $SP_KEY admin $SP_ADMIN}${PK_PORT:+ portkey :$PK_PORT} data $WORK"
    sleep "$BENCH_HOLD" &
    wait $!
fi
exit 0
