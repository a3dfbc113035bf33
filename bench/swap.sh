# shellcheck shell=bash
# bench/swap.sh: the snapshot swap under load, one phase of bench/run.sh
# (sourced; swap_phase FILE writes its report to FILE). It runs on the
# Spendpol stack of the run: SPDATA, SP_NGINX_PID, CONTROLD_PID, SP_KEY,
# PG_PORT, SP_PORT, and its pids (SWAP_WRK, SWAP_WATCH, SWAP_INSERT) are
# the driver's, which stops them on exit.

# swap_pg ARG...: psql as the owner, stopping at the first error
swap_pg() { sp_psql -v ON_ERROR_STOP=1 -qtA "$@"; }

# swap_mem PID: "VmRSS RssAnon RssShmem VmHWM" in KiB
swap_mem() {
    awk '/^VmRSS/ {r = $2} /^RssAnon/ {a = $2} /^RssShmem/ {s = $2} /^VmHWM/ {h = $2}
         END {print r + 0, a + 0, s + 0, h + 0}' "/proc/$1/status" 2>/dev/null
}

# swap_wrk PHASE SECONDS: one wrk run (JSON, c=64, the bench key) in the
# background (SWAP_WRK)
swap_wrk() {
    target spendpol json
    echo "$EPOCHREALTIME" >"$SW/$1.start"
    wrk_start json 64 "$2" "$SW/$1.log"
    SWAP_WRK=$WRK_PID
}

# swap_wrk_end PHASE [stop]: waits for it; stop: SIGINT first (wrk
# stops within its 100 ms tick and reports what it measured)
swap_wrk_end() {
    [ -n "${2:-}" ] && kill -INT "$SWAP_WRK" 2>/dev/null
    wait "$SWAP_WRK"
    SWAP_WRK=
    echo "$EPOCHREALTIME" >"$SW/$1.end"
    wrk_result "$SW/$1.log" sw_ || { cat "$SW/$1.log" >&2; die "swap: wrk reported nothing in phase $1"; }
    echo "$sw_requests 64" >>"$WORK/sp-sent"
}

# swap_until EVENT: the watcher's events up to EVENT, into $SW/events;
# dies on its timeout, on its end, or when the INSERT failed. A plain
# blocking read: bash 5.2 crashes when a trap runs during `read -t`.
swap_until() {
    local line
    while IFS= read -r -u "$swap_fd" line; do
        echo "$line" >>"$SW/events"
        case "$line" in
            "$1 "*) return 0 ;;
            "insert 0 "*) ;;
            insert*) die "swap: the INSERT failed: $(cat "$SW/insert.out")" ;;
            timeout*) die "swap: no '$1' within ${SWAP_TIMEOUT}s (BENCH_SWAP_TIMEOUT); events in $SW/events" ;;
        esac
    done
    die "swap: the watcher stopped: $(cat "$SW/watch.err")"
}

# swap_try KEY: "status cost" of one request through the new snapshot
swap_try() {
    local code
    code=$(sp_chat "$1" -D "$SW/try.h" -o /dev/null -w '%{http_code}')
    echo "$code $(header_of "$SW/try.h" x-spendpol-cost)"
}

# Issue 5: "a snapshot of 1,000,000 keys swaps in without stalling
# requests". The keys go into PostgreSQL as controld stores keys (the
# SHA-256 of the key, in the bench key's organisation), so the new
# snapshot still holds the provider, prices, budget and bench key;
# controld sees state_version move and publishes, the workers verify the
# file in steps and swap. wrk (JSON, c=64, the bench key) runs throughout,
# one run per phase, each stopped by SIGINT (wrk still reports) at the
# event that ends its phase, as bench/swap-watch.pl sees it:
#   before  BENCH_SWAP_BEFORE seconds
#   load    the INSERT; controld noticing it (it polls every 2 s), reading
#           the rows and building the snapshot in memory
#   swap    from controld starting to write the file, through each
#           worker's verification and swap, to 1 s after the last swap
#   after   BENCH_SWAP_AFTER seconds
swap_phase() {
    SW="$WORK/swap"
    mkdir -p "$SW" "$RESULTS"
    swap_snap="$(sp_snapshot_dir "$SPDATA")/policy.snap"
    swap_workers=$(workers_of "$SP_NGINX_PID")
    # PostgreSQL's sha256 must be sp_key_hash, or no inserted key would work
    swap_org=$(swap_pg -c "select org_id from api_keys where key_hash = sha256(convert_to('$SP_KEY', 'UTF8'))")
    [ -n "$swap_org" ] || die "swap: no api_keys row has the SHA-256 of the bench key"
    for p in $swap_workers $CONTROLD_PID; do echo "$p $(swap_mem "$p")"; done >"$SW/mem-before"
    swap_errlog_from=$(stat -c %s "$SPDATA/logs/error.log" 2>/dev/null || echo 0)
    swap_loadavg=$(cut -d' ' -f1-3 /proc/loadavg)

    mkfifo "$SW/events.fifo"
    # shellcheck disable=SC2086
    perl "$BENCH/swap-watch.pl" "$swap_snap" "$SWAP_TIMEOUT" $swap_workers \
        >"$SW/events.fifo" 2>"$SW/watch.err" &
    SWAP_WATCH=$!
    exec {swap_fd}<"$SW/events.fifo"
    swap_until ready
    swap_had=$(swap_pg -c 'select count(*) from api_keys where active')

    log "swap: ${SWAP_BEFORE}s of JSON c=64 on Spendpol before"
    swap_wrk before "$SWAP_BEFORE"
    swap_wrk_end before
    log "swap: inserting $SWAP_KEYS keys into $swap_org while wrk runs; then controld publishes, the workers swap"
    swap_wrk load $((SWAP_TIMEOUT + 60))
    echo "$EPOCHREALTIME" >"$SW/insert.start"
    # its end goes to the watcher's fifo as "insert RC TIME" (opened
    # read-write, so it never blocks); psql is started itself, not
    # through swap_pg, so that insert.pid is psql's for the cleanup
    (
        psql "$(sp_pg_owner_url "$PG_PORT" "$SPDATA")" -v ON_ERROR_STOP=1 -qtA \
            -c "INSERT INTO api_keys (id, org_id, name, key_hash, key_prefix, department, project)
                SELECT 'key_b0b0' || lpad(to_hex(g), 20, '0'), '$swap_org', 'swap ' || g,
                       sha256(convert_to(k, 'UTF8')), left(k, 11), 'swap', 'swap'
                  FROM (SELECT g, 'sp_key_' || lpad(to_hex(g), 48, '0') AS k
                          FROM generate_series(1, $SWAP_KEYS) g) keys" \
            -c "SELECT extract(epoch FROM clock_timestamp())" >"$SW/insert.out" 2>&1 &
        echo $! >"$SW/insert.pid"
        wait $!
        echo "insert $? $EPOCHREALTIME" 1<>"$SW/events.fifo"
    ) &
    SWAP_INSERT=$!
    swap_until writing
    swap_wrk_end load stop
    swap_wrk swap $((SWAP_TIMEOUT + 60))
    swap_until "done"
    sleep 1
    swap_wrk_end swap stop
    log "swap: ${SWAP_AFTER}s after"
    swap_wrk after "$SWAP_AFTER"
    swap_wrk_end after
    # the INSERT committed before controld could publish its keys
    wait "$SWAP_INSERT"
    SWAP_INSERT=
    wait "$SWAP_WATCH"
    SWAP_WATCH=
    exec {swap_fd}<&-
    for p in $swap_workers $CONTROLD_PID; do echo "$p $(swap_mem "$p")"; done >"$SW/mem-after"

    swap_mid=$(( (SWAP_KEYS + 1) / 2 ))
    read -r swap_bench_code swap_bench_cost <<<"$(swap_try "$SP_KEY")"
    read -r swap_new_code swap_new_cost <<<"$(swap_try "$(printf 'sp_key_%048x' "$swap_mid")")"
    SP_SENT=$((SP_SENT + 2))

    # the same window from the server's side, without wrk's phase gaps:
    # the audit rows (request start, latency_ms) by 100 ms, once ingested
    swap_t0=$(cat "$SW/insert.start")
    swap_from=$(awk '$1 == "writing" {printf "%.6f", $2 - 0.5}' "$SW/events")
    swap_to=$(awk '$1 == "done" {printf "%.6f", $2 + 1}' "$SW/events")
    for i in $(seq 1 60); do
        [ "$(swap_pg -c "select count(*) > 0 from audit_logs where created_at >= to_timestamp($swap_to)")" = t ] && break
        sleep 0.5
    done
    swap_pg -F ' ' -c "select floor((extract(epoch from created_at) - $swap_t0) * 10) / 10 b, count(*),
                              round(avg(latency_ms), 1), max(latency_ms)
                         from audit_logs
                        where created_at >= to_timestamp($swap_from) and created_at < to_timestamp($swap_to)
                        group by b order by b" >"$SW/timeline"

    {
        # times in seconds from the start of the INSERT
        rel() { awk -v a="$1" -v b="$swap_t0" 'BEGIN {printf "%.2f", a - b}'; }
        ev() { awk -v k="$1" -v p="${2:-}" '$1 == k && (p == "" || $3 == p) {print $2; exit}' "$SW/events"; }
        committed=$(tail -n1 "$SW/insert.out")
        read -r _ _ _ pub_size <<<"$(grep '^published' "$SW/events")"
        pub_log=$(grep -h 'snapshot: published generation' "$SPDATA/logs/controld.err" "$SPDATA/logs/controld.out" 2>/dev/null \
                  | tail -n1 | sed 's/.*snapshot: //')
        echo "snapshot swap under load $(date -u '+%Y-%m-%d %H:%M UTC') (load before: $swap_loadavg): $SWAP_KEYS keys added to $swap_had, Spendpol JSON c=64 (wrk -t2, the bench key) throughout; t = 0 at the INSERT"
        echo "  INSERT ... SELECT generate_series, keys hashed like controld's: committed at t=$(rel "$committed") s"
        echo "  controld published ${pub_size:-?} bytes: writing from t=$(rel "$(ev writing)") s, in place at t=$(rel "$(ev published)") s ($(awk -v a="$(ev published)" -v b="$committed" 'BEGIN {printf "%.2f", a - b}') s after the commit, of which up to 2 s its poll)"
        echo "    controld: $pub_log"
        for p in $swap_workers; do
            v=$(ev verify "$p"); w=$(ev swapped "$p")
            if [ -n "$w" ]; then
                echo "  worker $p: mapped it at t=$(rel "$v") s, swapped at t=$(rel "$w") s ($(awk -v a="$w" -v b="$v" 'BEGIN {printf "%.3f", a - b}') s verifying)"
            else
                echo "  worker $p: $(grep " $p\$" "$SW/events" | tr '\n' ';')"
            fi
        done
        newlog=$(tail -c +"$((swap_errlog_from + 1))" "$SPDATA/logs/error.log" 2>/dev/null)
        echo "  nginx error.log: $(grep -c 'spendpol: snapshot generation .* loaded' <<<"$newlog") x \"$(grep -o 'snapshot generation .* loaded ([0-9]* keys)' <<<"$newlog" | tail -n1)\"; $(grep -c '\[error\]\|\[crit\]\|\[alert\]\|\[emerg\]' <<<"$newlog") lines at [error] or worse during the phase"
        echo
        printf '  %-7s %7s %7s %9s %8s %8s %8s %9s %8s %7s %5s\n' phase "from s" "to s" requests "req/s" "p50 us" "p99 us" "p99.9 us" "max us" non2xx sock
        swap_bad=0
        for ph in before load swap after; do
            wrk_result "$SW/$ph.log" sw_
            sock=$((sw_connect + sw_read + sw_write + sw_timeout))
            [ "$sw_non2xx" = 0 ] && [ "$sock" = 0 ] || swap_bad=1
            printf '  %-7s %7s %7s %9d %8.0f %8d %8d %9d %8d %7d %5d\n' "$ph" "$(rel "$(cat "$SW/$ph.start")")" "$(rel "$(cat "$SW/$ph.end")")" \
                "$sw_requests" "$sw_rps" "$sw_p50_us" "$sw_p99_us" "$sw_p999_us" "$sw_max_us" "$sw_non2xx" "$sock"
        done
        echo "  load: PostgreSQL inserting, controld polling, reading the rows and building (on these cores; PostgreSQL would not be in production)"
        echo "  swap: controld writing the file, each worker verifying it in 4 MiB steps and swapping, then 1 s"
        echo "  between two phases one wrk stops (within 0.1 s) and the next connects: those moments are in no phase"
        echo
        echo "  the audit rows around the swap (server side: nginx's time from the access phase to the journal write), by 100 ms of request start:"
        echo "        t s  requests  mean ms  max ms"
        awk -v t0="$swap_t0" '
            FNR == NR { if ($1 != "ready" && $1 != "insert" && $1 != "done") { at[++n] = $2 - t0; what[n] = $1 == "verify" ? "worker " $3 " verifying" : ($1 == "published" || $1 == "writing") ? "controld " $1 : "worker " $3 " " $1 } next }
            {
                m = ""
                for (i = 1; i <= n; i++) if (at[i] >= $1 && at[i] < $1 + 0.1) m = m (m == "" ? "  <- " : ", ") what[i]
                printf "  %9.1f %9d %8.1f %7d%s\n", $1, $2, $3, $4, m
            }' "$SW/events" "$SW/timeline"
        echo
        echo "  after the swap: the bench key -> $swap_bench_code (X-Spendpol-Cost $swap_bench_cost); inserted key $swap_mid -> $swap_new_code (X-Spendpol-Cost $swap_new_cost)"
        echo "  memory in KiB, before -> after: RSS (anon, shared snapshot pages); for controld RSS and its peak"
        while read -r p r a s _; do
            read -r _ r2 a2 s2 h2 <<<"$(grep "^$p " "$SW/mem-after")"
            if [ "$p" = "$CONTROLD_PID" ]; then
                echo "    controld $p: $r -> $r2, peak $h2"
            else
                echo "    worker $p: $r ($a, $s) -> $r2 ($a2, $s2)"
            fi
        done <"$SW/mem-before"
        if [ $swap_bad = 0 ] && [ "$swap_bench_code" = 200 ] && [ "$swap_new_code" = 200 ]; then
            echo "  governed throughout: every wrk request answered 2xx, no socket errors, both keys 200 after the swap"
        else
            echo "  FAILED: non-2xx responses or socket errors in a phase, or a key refused after the swap (see above; logs in $SW with BENCH_KEEP=1)"
        fi
    } >"$1"
}
