# shellcheck shell=bash
# bench/lib/runs.sh: the measured runs (sourced by bench/run.sh): wrk
# against one configuration with the CPU of every component around it,
# the interleaved repetitions, and the optional perf profile and memory
# check on the same stack.

# target CONFIG KIND: sets T_PORT T_PATH T_AUTH T_HEADERS and T_PIDS (the
# proxy's processes: nginx workers, or node)
target() {
    local cfg=$1 kind=$2 host
    T_PATH=/v1/chat/completions T_AUTH="Bearer sk-bench-not-a-real-key" T_HEADERS=
    [ "$kind" = sse ] && T_HEADERS="X-Mock-Stream: 1"
    case "$cfg" in
        direct)   T_PORT=$MOCK_PORT;   T_PIDS=$(workers_of "$MOCK_PID") ;;
        nginx)    T_PORT=$PLAIN_PORT;  T_PIDS=$(workers_of "$PLAIN_PID") ;;
        nokeep)   T_PORT=$NOKEEP_PORT; T_PIDS=$(workers_of "$NOKEEP_PID") ;;
        spendpol) T_PORT=$SP_PORT;     T_PIDS=$(workers_of "$SP_NGINX_PID")
                  T_PATH=/v1/openai/chat/completions T_AUTH="Bearer $SP_KEY" ;;
        portkey)  T_PORT=$PK_PORT;     T_PIDS=$PORTKEY_PID
                  host="http://127.0.0.1:$MOCK_PORT/v1"
                  [ "$kind" = sse ] && host="http://127.0.0.1:$MOCK_PORT/sse/v1"
                  T_HEADERS="${T_HEADERS:+$T_HEADERS|}x-portkey-provider: openai|x-portkey-custom-host: $host" ;;
        *) die "unknown configuration $cfg" ;;
    esac
}

# wrk_start KIND CONNS SECONDS OUT: wrk with bench/chat.lua against the
# current target (see `target`) in the background, its pid in WRK_PID
wrk_start() {
    local t=2
    [ "$2" -lt 2 ] && t=1
    BENCH_STREAM=$([ "$1" = sse ] && echo 1 || echo 0) BENCH_PATH=$T_PATH \
    BENCH_CACHEABLE=$([ "$1" = hit ] && echo 1 || echo 0) \
    BENCH_PROMPT_BYTES=$([ "$1" = p2k ] && echo 2048 || echo 0) \
    BENCH_AUTH=$T_AUTH BENCH_HEADERS=$T_HEADERS \
        wrk -t"$t" -c"$2" -d"${3}s" --timeout 10s -s "$BENCH/chat.lua" \
            "http://127.0.0.1:$T_PORT" >"$4" 2>&1 &
    WRK_PID=$!
}

# wrk_result LOG PREFIX: the BENCH_RESULT line of a wrk log as shell
# variables PREFIXrequests, PREFIXrps, PREFIXp50_us, ... (see chat.lua)
wrk_result() {
    local res
    res=$(grep '^BENCH_RESULT' "$1" | tail -n1)
    [ -n "$res" ] || return 1
    eval "$(sed 's/^BENCH_RESULT //; s/\([a-z0-9_]*\)=\([^ ]*\)/'"$2"'\1=\2;/g' <<<"$res")"
}

# component_cpu: CPU in microseconds, so far, of each component outside
# the proxy: "controld postgresql redis mock" (0 for what is not running)
component_cpu() {
    local ctl=0 pg=0 redis=0
    if [ -n "$CONTROLD_PID" ]; then
        ctl=$(cpu_us "$CONTROLD_PID")
        # shellcheck disable=SC2046
        pg=$(cpu_us $(pg_pids))
        # shellcheck disable=SC2046
        redis=$(cpu_us $(redis_pids))
    fi
    # shellcheck disable=SC2086
    echo "$ctl $pg $redis $(cpu_us $MOCK_WORKERS)"
}

# run_wrk CONFIG KIND CONNS SECONDS TAG: one wrk run; prints the result
# fields "requests rps p50 p99 non2xx sockerr proxy_us controld_us
# postgresql_us redis_us mock_us" (CPU over the run, in microseconds)
run_wrk() {
    local cfg=$1 kind=$2 c=$3 secs=$4 tag=$5 out c0 c1 a0 a1
    target "$cfg" "$kind"
    out="$WORK/wrk/$tag-$cfg-$kind-c$c.log"
    # shellcheck disable=SC2086
    c0=$(cpu_us $T_PIDS); a0=$(component_cpu)
    wrk_start "$kind" "$c" "$secs" "$out"
    wait "$WRK_PID"
    # shellcheck disable=SC2086
    c1=$(cpu_us $T_PIDS); a1=$(component_cpu)
    wrk_result "$out" w_ || { cat "$out" >&2; die "wrk printed no result ($out)"; }
    # run_wrk runs in a subshell: Spendpol's answered requests go to a file
    [ "$cfg" = spendpol ] && echo "$w_requests $c" >>"$WORK/sp-sent"
    printf '%s %s %s %s %s %s %s ' "$w_requests" "$w_rps" "$w_p50_us" "$w_p99_us" "$w_non2xx" \
        $((w_connect + w_read + w_write + w_timeout)) $((c1 - c0))
    # the other components only count for Spendpol, whose stack they are
    paste -d' ' <(tr ' ' '\n' <<<"$a0") <(tr ' ' '\n' <<<"$a1") \
        | awk -v sp="$([ "$cfg" = spendpol ] && echo 1 || echo 0)" \
              '{ d = $2 - $1; printf "%s%s", (NR > 1 ? " " : ""), (NR < 4 && !sp) ? "-" : d } END { print "" }'
}

# runs_table: BENCH_WARMUP seconds of c=64 per configuration and kind,
# then BENCH_REPS repetitions, each running every configuration in turn
# (interleaved, so a slow minute of the machine hits them all); one line
# per run into $RUNS: rep config kind c, then run_wrk's fields
runs_table() {
    local total n=0 rep kind c cfg r
    total=$(( REPS * $(wc -w <<<"$CONFIGS") * $(wc -w <<<"$KINDS") * $(wc -w <<<"$CONNS") ))
    log "warm-up: ${WARMUP}s per configuration and kind"
    for cfg in $CONFIGS; do
        for kind in $KINDS; do
            run_wrk "$cfg" "$kind" 64 "$WARMUP" warmup >/dev/null
        done
    done
    log "$total runs of ${SECS}s (about $(( total * (SECS + 1) / 60 + 1 )) min)"
    for rep in $(seq 1 "$REPS"); do
        for kind in $KINDS; do
            for c in $CONNS; do
                for cfg in $CONFIGS; do
                    n=$((n + 1))
                    r=$(run_wrk "$cfg" "$kind" "$c" "$SECS" "r$rep")
                    printf '%s %s %s %s %s\n' "$rep" "$cfg" "$kind" "$c" "$r" | tr ' ' '\t' >>"$RUNS"
                    log "[$n/$total] rep $rep $cfg $kind c=$c: $(awk '{printf "%.0f req/s p50 %d us p99 %d us non2xx %d", $2, $3, $4, $5}' <<<"$r")"
                done
            done
        done
    done
}

# run_header: what was measured, where, with what
run_header() {
    local sp_version dirty
    sp_version=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
    dirty=$(git -C "$ROOT" status --porcelain -- controld libspendpol ngx_spendpol_module config 2>/dev/null)
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')  machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), $(uname -r)"
    echo "load before: $LOAD_BEFORE"
    echo "versions: $(/usr/sbin/nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}'), Spendpol $sp_version${dirty:+ (+ uncommitted changes)}${PK_PORT:+, @portkey-ai/gateway $(portkey_version) on node $(node -v)}"
    [ -n "${BENCH_LABEL:-}" ] && echo "build: $BENCH_LABEL"
    echo "runs: ${SECS}s each, $REPS interleaved repetitions; configs: $CONFIGS; kinds: $KINDS; c: $CONNS"
    [ -n "$BUDGET_NOTE" ] && echo "spendpol: $BUDGET_NOTE"
    return 0
}

# perf_profiles: perf record of Spendpol's and plain nginx's workers at
# c=64 of BENCH_PERF_KIND (json), the symbols and the shared objects into
# bench/results/
perf_profiles() {
    local cfg pids perf_pid kind=${BENCH_PERF_KIND:-json}
    for cfg in spendpol nginx; do
        has "$CONFIGS" "$cfg" || continue
        target "$cfg" "$kind"
        pids=$(tr ' ' ',' <<<"$T_PIDS" | sed 's/,*$//')
        log "perf record on $cfg workers ($pids), c=64 $kind, ${SECS}s"
        perf record -q -e cpu-clock -F 1999 -g -p "$pids" -o "$WORK/perf-$cfg.data" \
            -- sleep "$((SECS > 4 ? SECS - 2 : SECS))" >"$WORK/perf-$cfg.log" 2>&1 &
        perf_pid=$!
        sleep 0.5
        run_wrk "$cfg" "$kind" 64 "$SECS" perf >/dev/null
        wait "$perf_pid"
        perf report -i "$WORK/perf-$cfg.data" --stdio --no-children -g none --sort dso,sym --percent-limit 0.4 2>/dev/null \
            | grep -v '^$' | grep -v '^#' | grep '%' | head -n 80 >"$RESULTS/perf-$STAMP-$cfg.txt"
        perf report -i "$WORK/perf-$cfg.data" --stdio --no-children -g none --sort dso 2>/dev/null \
            | grep '%' | grep -v '^#' | head -n 15 >"$RESULTS/perf-$STAMP-$cfg-dso.txt"
        log "perf: $RESULTS/perf-$STAMP-$cfg.txt"
    done
}

# soak FILE: BENCH_SOAK seconds of JSON (c=32) and SSE (c=32) on Spendpol
# at once, each worker's (and controld's) RSS every BENCH_SOAK_INTERVAL
soak() {
    local wpids t line p f kind soak_req=0 soak_err=0
    wpids=$(workers_of "$SP_NGINX_PID")
    log "memory check: ${SOAK}s of JSON (c=32) + SSE (c=32) on Spendpol, RSS of workers $wpids every ${SOAK_INTERVAL}s"
    rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
    WRK_BG=
    for kind in json sse; do
        target spendpol "$kind"
        wrk_start "$kind" 32 "$((SOAK + 2))" "$WORK/wrk/soak-$kind.log"
        WRK_BG="$WRK_BG $WRK_PID"
    done
    sleep 1
    : >"$WORK/rss.tsv"
    t=0
    while [ $t -le "$SOAK" ]; do
        line="$t"
        for p in $wpids $CONTROLD_PID; do line="$line $(rss "$p")"; done
        echo "$line" >>"$WORK/rss.tsv"
        [ $t -ge "$SOAK" ] && break
        sleep "$SOAK_INTERVAL" &
        wait $!
        t=$((t + SOAK_INTERVAL))
    done
    for p in $WRK_BG; do wait "$p"; done
    WRK_BG=
    for f in "$WORK/wrk/soak-json.log" "$WORK/wrk/soak-sse.log"; do
        wrk_result "$f" s_ || continue
        soak_req=$((soak_req + s_requests)); soak_err=$((soak_err + s_non2xx))
    done
    SP_SENT=$((SP_SENT + soak_req))
    {
        echo "memory check $(date -u '+%Y-%m-%d %H:%M UTC'): ${SOAK}s, Spendpol under JSON c=32 + SSE c=32, $soak_req requests, $soak_err non-2xx"
        echo "RSS in KiB, sampled every ${SOAK_INTERVAL}s:"
        awk -v iv="$SOAK_INTERVAL" -v names="$(for p in $wpids; do printf 'worker-%s ' "$p"; done)controld-$CONTROLD_PID" '
            { for (i = 2; i <= NF; i++) { v = $i + 0; if (NR == 1) s[i] = v; e[i] = v; if (v > mx[i]) mx[i] = v; if (NR == 2) s2[i] = v } n = NF }
            END {
                split(names, nm, " ")
                printf "  %-22s %9s %9s %9s %9s  %s\n", "process", "start", "at " iv "s", "end", "max", "end - at " iv "s"
                for (i = 2; i <= n; i++)
                    printf "  %-22s %9d %9d %9d %9d  %+d KiB\n", nm[i-1], s[i], s2[i], e[i], mx[i], e[i] - s2[i]
            }' "$WORK/rss.tsv"
        echo "samples (t, RSS of each process above):"
        sed 's/^/  /' "$WORK/rss.tsv"
    } >"$1"
}
