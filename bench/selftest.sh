#!/usr/bin/env bash
# bench/selftest.sh: checks the parts of make bench that need no stack, in
# a second: bench/report.sh's table, ratios and target verdicts on a runs
# file whose figures are known, its refusal of a bad target, and the conf
# templates (every placeholder filled, a missing value refused, nginx -t
# passing on the rendered confs when nginx is installed).
set -uo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
SP_REPO_ROOT=$ROOT
# shellcheck source=../scripts/lib/stack.sh
. "$ROOT/scripts/lib/stack.sh"
# shellcheck source=lib/common.sh
. "$BENCH/lib/common.sh"
# shellcheck source=lib/upstreams.sh
. "$BENCH/lib/upstreams.sh"

WORK=$(mktemp -d /tmp/spendpol-bench-selftest.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
failed=0
check() { # NAME COMMAND...: COMMAND must succeed
    local name=$1
    shift
    if "$@"; then echo "ok   $name"; else echo "FAIL $name"; failed=1; fi
}
contains() { grep -qF -- "$2" <<<"$1" || { echo "  missing: $2" >&2; return 1; }; }

# two repetitions of nginx and spendpol, JSON at c=1 and c=64, one portkey
# run: medians 29,500 and 14,500 req/s at c=64 (0.49x); CPU per request
# at c=64: nginx 8.5 s / 295,000 = 28.8 us, spendpol 16 s / 290,000 =
# 55.2 us (+26.4), controld 1.8 s and PostgreSQL 11 s / 290,000 = 6.2 and
# 37.9 us (44.1 us of ingest), Redis 0.3 us
tab=$'\t'
runs="$WORK/runs.tsv"
while read -r line; do printf '%s\n' "${line// /$tab}"; done >"$runs" <<'EOF'
1 nginx json 1 100000 10000 90 1400 0 0 4700000 - - - 2500000
1 spendpol json 1 80000 8000 95 3400 0 0 5000000 200000 4800000 30000 1800000
1 portkey json 64 15000 1500 37000 690000 0 0 12000000 - - - 300000
1 nginx json 64 145000 29000 2000 6800 0 0 4250000 - - - 2050000
1 spendpol json 64 140000 14000 4200 14800 0 0 8000000 900000 5500000 50000 2600000
2 nginx json 64 150000 30000 1900 6700 0 0 4250000 - - - 2050000
2 spendpol json 64 150000 15000 4100 14000 0 0 8000000 900000 5500000 50000 2600000
EOF

out=$(bash "$BENCH/report.sh" --row 2026-12-04 abc1234 "$runs")
check "report: the c=64 JSON row with CPU by component" contains "$out" \
    "spendpol  json    64     14500     4150     14400     55.2     6.2    37.9     0.3    99.7    17.9       0     0"
check "report: the ratio line" contains "$out" \
    "spendpol/nginx req/s 0.49x, added p50 +2200 us, added CPU +26.4 us/req (proxy), +70.8 us/req (all);  spendpol/portkey req/s 9.7x (portkey 1500 req/s)"
check "report: 0.6x missed, 0.8x goal distance" contains "$out" \
    ">= 0.6x plain nginx req/s at c=64 JSON, everything on:  0.49x  MISSED  (goal 0.8x: 9100 req/s to go)"
check "report: c=1 p50 met" contains "$out" "<= 30 us added p50 at c=1 JSON:  +5 us  MET"
check "report: module CPU" contains "$out" "(the module):  +26.4 us  MISSED"
check "report: ingest CPU" contains "$out" "(ingest):  44.1 us  MISSED"
check "report: Portkey is no target by default" bash -c '! grep -q "Portkey req/s at c=64" <<<"$1"' _ "$out"
check "report: the RESULTS.md row" contains "$out" \
    "| 2026-12-04 | abc1234 | 0.49x | 14500 / 29500 | +5 us | 14400 / 6750 | 55.2 / 6.2 / 37.9 / 0.3 | - | 9.7x |  |"

out=$(bash "$BENCH/report.sh" --min-ratio 0.45 --goal-ratio "" --max-ingest "" --min-portkey 5 "$runs")
check "report: other targets as parameters" contains "$out" \
    ">= 0.45x plain nginx req/s at c=64 JSON, everything on:  0.49x  MET"
check "report: an empty target is left out" bash -c '! grep -q "(ingest)" <<<"$1" && ! grep -q "goal" <<<"$1"' _ "$out"
check "report: Portkey as a target" contains "$out" ">= 5x Portkey req/s at c=64 JSON:  9.7x  MET"

sed 's/^\(1\tspendpol\tjson\t64\t[0-9]*\t[0-9]*\t[0-9]*\t[0-9]*\t\)0/\13/' "$runs" >"$WORK/bad.tsv"
out=$(bash "$BENCH/report.sh" "$WORK/bad.tsv")
check "report: non-2xx from Spendpol make the targets NOT VALID" contains "$out" "targets: NOT VALID"
check "report: a target that is no number is refused" \
    bash -c '! bash "$1" --max-p50 30us "$2" 2>/dev/null' _ "$BENCH/report.sh" "$runs"

# the templates
printf 'a @ONE@ b\n    @MANY@\n' >"$WORK/t.conf"
check "render: values, and a multi-line value indented like its placeholder" \
    test "$(render "$WORK/t.conf" ONE=1 MANY=$'x;\ny;')" = $'a 1 b\n    x;\n    y;'
check "render: a placeholder without a value is refused" \
    bash -c '! (. "$1/lib/common.sh"; . "$1/lib/upstreams.sh"; render "$2" ONE=1) 2>/dev/null' _ "$BENCH" "$WORK/t.conf"
MOCK_PORT=1
json=$(ngx_body "$BENCH/mock/chat.json" mock_json_) && sse=$(ngx_body "$BENCH/mock/chat.sse" mock_sse_)
nginx_conf mock 2 JSON_BODY="$json" SSE_BODY="$sse" && nginx_conf nginx 3 MOCK_PORT=1 \
    && nginx_conf nokeep 4 MOCK_PORT=1
for c in mock nginx nokeep; do
    check "conf $c: every placeholder filled" bash -c '! grep -q "@[A-Z_]*@" "$1"' _ "$WORK/$c/nginx.conf"
    if [ -x /usr/sbin/nginx ]; then
        check "conf $c: nginx -t" /usr/sbin/nginx -t -q -p "$WORK/$c/" -c "$WORK/$c/nginx.conf" -e "$WORK/$c/error.log"
    fi
done

[ $failed = 0 ] && echo "bench selftest: all passed"
exit $failed
