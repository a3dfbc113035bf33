#!/usr/bin/env bash
# bench/report.sh [TARGET OPTIONS] [--row DATE COMMIT] RUNS.tsv
#
# The table of a make bench run, its ratios and its targets, from the runs
# file bench/run.sh writes (one line per wrk run, tab-separated: rep config
# kind c requests req/s p50_us p99_us non2xx sock proxy_us controld_us
# postgresql_us redis_us mock_us; CPU in microseconds over the run, "-"
# for a component that is not that configuration's). Medians of the
# repetitions for req/s and latency; CPU per request from the summed CPU
# and requests of all repetitions.
#
# Targets (a number sets one, an empty value leaves it out of the verdicts;
# the defaults are issue 11's and the standing ones of issue 5):
#   --min-ratio R      Spendpol >= R x plain nginx req/s, c=64 JSON,
#                      everything on (0.6, issue 11)
#   --goal-ratio R     on the way to R x (0.8, issue 11; reported as the
#                      distance still to go, not as MET/MISSED)
#   --max-p50 US       <= US added p50 over plain nginx, c=1 JSON (30,
#                      issue 5)
#   --max-module US    <= US of nginx workers' CPU per request over plain
#                      nginx's, c=64 JSON: the module's own CPU (8, issue 11)
#   --max-ingest US    <= US of controld + PostgreSQL CPU per request,
#                      c=64 JSON (5, issue 11; bench/ingest.sh measures
#                      the same at a fixed 20,000 rows/s)
#   --min-hit-ratio R  cache hits >= R x plain nginx req/s proxying the
#                      same answer, c=64 (1.5, issue 12)
#   --min-portkey X    >= X x Portkey's req/s, c=64 JSON (none: issue 11
#                      asks for Portkey's figure, which is always shown)
#   --configs LIST     the order of the table's rows (default: first seen)
#   --row DATE COMMIT  also print the line for bench/RESULTS.md's table
set -euo pipefail

min_ratio=0.6 goal_ratio=0.8 max_p50=30 max_module=8 max_ingest=5 min_portkey=
min_hit_ratio=1.5
configs= row_date= row_commit=
while [ $# -gt 1 ]; do
    case "$1" in
        --min-ratio)   min_ratio=$2; shift 2 ;;
        --goal-ratio)  goal_ratio=$2; shift 2 ;;
        --max-p50)     max_p50=$2; shift 2 ;;
        --max-module)  max_module=$2; shift 2 ;;
        --max-ingest)  max_ingest=$2; shift 2 ;;
        --min-portkey) min_portkey=$2; shift 2 ;;
        --min-hit-ratio) min_hit_ratio=$2; shift 2 ;;
        --configs)     configs=$2; shift 2 ;;
        --row)         row_date=$2; row_commit=$3; shift 3 ;;
        *) echo "report.sh: unknown option $1 (see the top of bench/report.sh)" >&2; exit 2 ;;
    esac
done
[ $# -eq 1 ] && [ -f "$1" ] || { echo "usage: bench/report.sh [OPTIONS] RUNS.tsv" >&2; exit 2; }
for v in "$min_ratio" "$goal_ratio" "$max_p50" "$max_module" "$max_ingest" "$min_portkey" \
         "$min_hit_ratio"; do
    [[ -z $v || $v =~ ^[0-9]+(\.[0-9]+)?$ ]] \
        || { echo "report.sh: a target must be a number or empty, not \"$v\"" >&2; exit 2; }
done

awk -F'\t' -v order="$configs" -v min_ratio="$min_ratio" -v goal_ratio="$goal_ratio" \
    -v max_p50="$max_p50" -v max_module="$max_module" -v max_ingest="$max_ingest" \
    -v min_portkey="$min_portkey" -v min_hit_ratio="$min_hit_ratio" -v row_date="$row_date" -v row_commit="$row_commit" '
function median(s,   a, n, i, j, t) {
    n = split(s, a, " ")
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
    return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
# per request, one decimal, or "-" when not measured for that row
function per(total, k) { return (total == "-" || !req[k]) ? "-" : sprintf("%.1f", total / req[k]) }
function add(sum, v) { return (v == "-" || sum == "-") ? "-" : sum + v }
function has(cfg, kd, cc) { return R[cfg, kd, cc] > 0 }
function verdict(ok) { return ok ? "MET" : "MISSED" }
{
    k = $2 SUBSEP $3 SUBSEP $4
    if (!(k in seen)) {
        seen[k] = 1; keys[++nk] = k
        if (!($2 in cseen)) { cseen[$2] = 1; firstcfg = firstcfg " " $2 }
        ctl[k] = pg[k] = rds[k] = 0
    }
    rps[k] = rps[k] " " $6; p50[k] = p50[k] " " $7; p99[k] = p99[k] " " $8
    req[k] += $5; err[k] += $9; sock[k] += $10; cpu[k] += $11; mck[k] += $15
    ctl[k] = add(ctl[k], $12); pg[k] = add(pg[k], $13); rds[k] = add(rds[k], $14)
}
END {
    if (order == "") order = firstcfg
    printf "%-9s %-5s %4s %9s %8s %9s %8s %7s %7s %7s %7s %7s %7s %5s\n", "config", "kind", "c", \
        "req/s", "p50 us", "p99 us", "proxy/r", "ctl/r", "pg/r", "redis/r", "all/r", "mock/r", "non2xx", "sock"
    nc = split(order, cfgs, " ")
    # kinds and c in first-seen order
    for (i = 1; i <= nk; i++) {
        split(keys[i], f, SUBSEP)
        g = f[2] SUBSEP f[3]
        if (!(g in gseen)) { gseen[g] = 1; groups[++ng] = g }
    }
    for (gi = 1; gi <= ng; gi++) {
        split(groups[gi], gf, SUBSEP)
        for (ci = 1; ci <= nc; ci++) {
            cf = cfgs[ci]; k = cf SUBSEP gf[1] SUBSEP gf[2]
            if (!(k in seen)) continue
            m = median(rps[k]); q = median(p50[k]); q99 = median(p99[k])
            cu = req[k] ? cpu[k] / req[k] : 0
            all = add(add(add(cpu[k], ctl[k]), pg[k]), rds[k])
            printf "%-9s %-5s %4s %9.0f %8.0f %9.0f %8.1f %7s %7s %7s %7s %7s %7d %5d\n", cf, gf[1], gf[2], \
                m, q, q99, cu, per(ctl[k], k), per(pg[k], k), per(rds[k], k), \
                (all == "-" ? sprintf("%.1f", cu) : per(all, k)), per(mck[k], k), err[k], sock[k]
            R[cf, gf[1], gf[2]] = m; P[cf, gf[1], gf[2]] = q; P99[cf, gf[1], gf[2]] = q99
            C[cf, gf[1], gf[2]] = cu
            A[cf, gf[1], gf[2]] = (all == "-") ? cu : all / req[k]
            ING[cf, gf[1], gf[2]] = (ctl[k] == "-" || !req[k]) ? -1 : (ctl[k] + pg[k]) / req[k]
            if (cf == "spendpol" && err[k] > 0) bad = 1
        }
    }
    print ""
    print "ratios (medians of the repetitions):"
    for (gi = 1; gi <= ng; gi++) {
        split(groups[gi], gf, SUBSEP); kd = gf[1]; cc = gf[2]
        s = ""
        if (has("nginx", kd, cc) && has("spendpol", kd, cc))
            s = s sprintf("  spendpol/nginx req/s %.2fx, added p50 %+d us, added CPU %+.1f us/req (proxy), %+.1f us/req (all);", \
                R["spendpol", kd, cc] / R["nginx", kd, cc], P["spendpol", kd, cc] - P["nginx", kd, cc], \
                C["spendpol", kd, cc] - C["nginx", kd, cc], A["spendpol", kd, cc] - A["nginx", kd, cc])
        if (has("nokeep", kd, cc) && has("nginx", kd, cc))
            s = s sprintf("  nokeep/nginx req/s %.2fx, CPU %+.1f us/req;", \
                R["nokeep", kd, cc] / R["nginx", kd, cc], C["nokeep", kd, cc] - C["nginx", kd, cc])
        if (has("nokeep", kd, cc) && has("spendpol", kd, cc))
            s = s sprintf("  spendpol over nokeep CPU %+.1f us/req;", C["spendpol", kd, cc] - C["nokeep", kd, cc])
        if (has("portkey", kd, cc) && has("spendpol", kd, cc))
            s = s sprintf("  spendpol/portkey req/s %.1fx (portkey %.0f req/s)", \
                R["spendpol", kd, cc] / R["portkey", kd, cc], R["portkey", kd, cc])
        else if (has("portkey", kd, cc))
            s = s sprintf("  portkey %.0f req/s", R["portkey", kd, cc])
        if (s != "") printf "  %-4s c=%-3s%s\n", kd, cc, s
    }
    print ""
    print "targets:" (bad ? " NOT VALID: Spendpol answered non-2xx responses (see the audit line for their codes)" : "")
    nt = 0
    if (min_ratio != "" && has("nginx", "json", 64) && has("spendpol", "json", 64)) {
        r = R["spendpol", "json", 64] / R["nginx", "json", 64]; nt++
        v = verdict(r >= min_ratio)
        printf "  >= %sx plain nginx req/s at c=64 JSON, everything on:  %.2fx  %s", min_ratio, r, v
        if (goal_ratio != "") {
            togo = goal_ratio * R["nginx", "json", 64] - R["spendpol", "json", 64]
            printf "  (goal %sx: %s)", goal_ratio, (togo <= 0 ? "reached" : sprintf("%.0f req/s to go", togo))
        }
        print ""
    }
    if (max_p50 != "" && has("nginx", "json", 1) && has("spendpol", "json", 1)) {
        d = P["spendpol", "json", 1] - P["nginx", "json", 1]; nt++
        v = verdict(d <= max_p50)
        printf "  <= %s us added p50 at c=1 JSON:  %+d us  %s\n", max_p50, d, v
    }
    if (max_module != "" && has("nginx", "json", 64) && has("spendpol", "json", 64)) {
        d = C["spendpol", "json", 64] - C["nginx", "json", 64]; nt++
        v = verdict(d <= max_module)
        printf "  <= %s us of nginx workers CPU per request over plain nginx, c=64 JSON (the module):  %+.1f us  %s\n", \
            max_module, d, v
    }
    if (max_ingest != "" && ING["spendpol", "json", 64] >= 0 && has("spendpol", "json", 64)) {
        d = ING["spendpol", "json", 64]; nt++
        v = verdict(d <= max_ingest)
        printf "  <= %s us of controld + PostgreSQL CPU per request, c=64 JSON (ingest):  %.1f us  %s\n", \
            max_ingest, d, v
    }
    if (min_portkey != "" && has("portkey", "json", 64) && has("spendpol", "json", 64)) {
        r = R["spendpol", "json", 64] / R["portkey", "json", 64]; nt++
        v = verdict(r >= min_portkey)
        printf "  >= %sx Portkey req/s at c=64 JSON:  %.1fx  %s\n", min_portkey, r, v
    }
    if (min_hit_ratio != "" && has("nginx", "hit", 64) && has("spendpol", "hit", 64)) {
        r = R["spendpol", "hit", 64] / R["nginx", "hit", 64]; nt++
        v = verdict(r >= min_hit_ratio)
        printf "  >= %sx plain nginx req/s for cache hits at c=64 (nginx proxies the same answer):  %.2fx  %s\n", \
            min_hit_ratio, r, v
    }
    if (nt == 0) print "  none measurable in this run (they need nginx and spendpol at c=1 or c=64, JSON)"
    if (row_date != "") {
        print ""
        print "row for bench/RESULTS.md:"
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |  |\n", row_date, row_commit, \
            ratio("spendpol", "nginx", "json", 64, 2), \
            pair("json", 64, R, "%.0f"), \
            (has("nginx", "json", 1) && has("spendpol", "json", 1)) ? sprintf("%+d us", P["spendpol", "json", 1] - P["nginx", "json", 1]) : "-", \
            pair("json", 64, P99, "%.0f"), \
            components("json", 64), \
            ratio("spendpol", "nginx", "sse", 64, 2), \
            ratio("spendpol", "portkey", "json", 64, 1)
    }
}
function ratio(a, b, kd, cc, digits) {
    return (has(a, kd, cc) && has(b, kd, cc)) ? sprintf("%." digits "fx", R[a, kd, cc] / R[b, kd, cc]) : "-"
}
# "Spendpol / nginx" of one figure
function pair(kd, cc, F, fmt) {
    return (has("spendpol", kd, cc) && has("nginx", kd, cc)) ? \
        sprintf(fmt " / " fmt, F["spendpol", kd, cc], F["nginx", kd, cc]) : "-"
}
# Spendpol CPU us/req: nginx workers / controld / PostgreSQL / Redis
function components(kd, cc,   k) {
    k = "spendpol" SUBSEP kd SUBSEP cc
    if (!(k in seen) || ctl[k] == "-" || !req[k]) return "-"
    return sprintf("%.1f / %.1f / %.1f / %.1f", cpu[k] / req[k], ctl[k] / req[k], pg[k] / req[k], rds[k] / req[k])
}' "$1"

cat <<'EOF'

proxy/r: the proxy's own CPU per request (nginx workers, or the node process; the mock's workers for direct), from /proc/<pid>/stat
ctl/r, pg/r, redis/r: controld's, PostgreSQL's (postmaster and backends) and Redis's CPU per Spendpol request, on the same cores
all/r: proxy + controld + PostgreSQL + Redis, everything the configuration costs besides the mock and wrk
mock/r: the mock upstream's CPU per request (new upstream connections cost it too; nginx and spendpol keep theirs alive)
non2xx: wrk's responses with status >= 400 (all repetitions); sock: connect/read/write/timeout errors
EOF
