# shellcheck shell=bash
# bench/lib/spendpol.sh: the Spendpol stack of the bench (sourced by
# bench/run.sh). Started through scripts/lib/stack.sh exactly as `make run`
# does (private PostgreSQL, Redis, controld, nginx with the module, the
# generated conf untouched), provisioned through the admin API, checked
# to govern before the runs, and audited after them.

SP_KEY= SP_ADMIN= SP_API= SP_PORT= PG_PORT= API_PORT= BUDGET_ID= BUDGET_NOTE=
SP_SENT=0   # requests Spendpol answered to curl (and, in $WORK/sp-sent, to wrk)
VERIFY=()
AUDIT_LINE=

# pids of each component whose CPU the table shows
pg_pids() {
    local pm
    pm=$(sp_pg_pid "$SPDATA" 2>/dev/null) || return 0
    [ -n "$pm" ] || return 0
    printf '%s %s\n' "$pm" "$(workers_of "$pm")"
}
redis_pids() { sp_redis_pid "$SPDATA" 2>/dev/null; }

sp_psql() { psql "$(sp_pg_owner_url "$PG_PORT" "$SPDATA")" "$@"; }

# sp_chat KEY CURL_ARG...: one small chat completion through Spendpol
sp_chat() {
    local key=$1
    shift
    curl -s "$@" "http://127.0.0.1:$SP_PORT/v1/openai/chat/completions" \
        -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
        -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8}'
}

# api METHOD PATH [JSON]: the admin API; sets API_BODY and API_STATUS
api() {
    local out
    out=$(curl -s -w '\n%{http_code}' -X "$1" "$SP_API$2" -H "Authorization: Bearer $SP_ADMIN" \
          -H 'Content-Type: application/json' ${3:+-d "$3"})
    API_STATUS=${out##*$'\n'}
    API_BODY=${out%$'\n'*}
}

spendpol_start() {
    SP_PORT=$(sp_free_port)
    spendpol_controld_start
    log "Spendpol: nginx :$SP_PORT"

    bash "$STACK" nginx-conf "$SPDATA" "$BUILD" "127.0.0.1:$SP_PORT" >/dev/null || die "nginx-conf failed"
    bash "$STACK" nginx-test "$SPDATA" "$BUILD" || die "nginx -t failed on Spendpol's conf"
    setsid bash "$STACK" nginx-exec "$SPDATA" "$BUILD" \
        >>"$SPDATA/logs/nginx.out" 2>>"$SPDATA/logs/nginx.err" &
    SP_NGINX_PID=$!
    wait_port 127.0.0.1 "$SP_PORT" "$SP_NGINX_PID" "Spendpol nginx" \
        "$SPDATA/logs/error.log" "$SPDATA/logs/nginx.err"
    spendpol_provision
}

# spendpol_controld_start: PostgreSQL, Redis and controld in $SPDATA, as
# `make run` starts them (bench/run.sh, and bench/ingest.sh without nginx);
# sets PG_PORT, REDIS_PORT, API_PORT, SP_API, SP_ADMIN and CONTROLD_PID
spendpol_controld_start() {
    local i
    mkdir -p "$SPDATA/logs" "$SPDATA/journal"
    PG_PORT=$(sp_free_port)
    REDIS_PORT=$(sp_free_port)
    API_PORT=$(sp_free_port)
    SP_API="http://127.0.0.1:$API_PORT"
    SP_ADMIN="sp_key_$(openssl rand -hex 24)"
    log "Spendpol: PostgreSQL :$PG_PORT, Redis :$REDIS_PORT, controld :$API_PORT ($SPDATA)"
    sp_pg_start "$SPDATA" "$PG_PORT" || die "PostgreSQL did not start"
    STARTED_PG=1
    sp_redis_start "$SPDATA" "$REDIS_PORT" || die "Redis did not start"
    STARTED_REDIS=1
    # private, as controld demands (it refuses a directory others can
    # read or write); created here too so a looser mkdir cannot win
    mkdir -p -m 0700 "$(sp_snapshot_dir "$SPDATA")"
    SPENDPOL_ADMIN_KEY=$SP_ADMIN setsid bash "$STACK" controld-exec "$SPDATA" "$BUILD" \
        "127.0.0.1:$API_PORT" "$(sp_pg_url "$PG_PORT" "$SPDATA")" "redis://127.0.0.1:$REDIS_PORT" \
        "$(sp_pg_owner_url "$PG_PORT" "$SPDATA")" "$(sp_pg_api_url "$PG_PORT" "$SPDATA")" \
        >>"$SPDATA/logs/controld.out" 2>>"$SPDATA/logs/controld.err" &
    CONTROLD_PID=$!
    for i in $(seq 1 600); do
        grep -q 'controld ready' "$SPDATA/logs/controld.out" 2>/dev/null && break
        kill -0 "$CONTROLD_PID" 2>/dev/null \
            || { tail -n 20 "$SPDATA/logs/controld.err" >&2; die "controld exited during start"; }
        sleep 0.1
    done
    grep -q 'controld ready' "$SPDATA/logs/controld.out" || die "controld not ready within 60 s"
    if [ -f "$SPDATA/controld/admin.key" ] \
        && ! curl -sf -o /dev/null -H "Authorization: Bearer $SP_ADMIN" "$SP_API/providers"; then
        SP_ADMIN=$(tr -d ' \n\r' <"$SPDATA/controld/admin.key")
    fi
}

# the provider pointing at the mock, a blocking organisation budget, and
# the key last: the snapshot that has it has the provider and budget too
spendpol_provision() {
    api PUT /providers/openai "{\"api_key\":\"sk-bench-not-a-real-key\",\"base_url\":\"http://127.0.0.1:$MOCK_PORT/v1\"}"
    [ "$API_STATUS" = 200 ] || die "PUT /providers/openai -> $API_STATUS $API_BODY"
    api POST /budgets '{"name":"bench","scope":{"type":"organization"},"limit_usd":"1000000","period":"monthly"}'
    case "$API_STATUS" in
        201) BUDGET_ID=$(jq -r .id <<<"$API_BODY")
             BUDGET_NOTE="organization budget $BUDGET_ID, \$1,000,000 monthly, blocking: every request reserves and settles" ;;
        404|405) BUDGET_NOTE="no budget: POST /budgets is not served by this controld ($API_STATUS), so no reservation is made" ;;
        *) die "POST /budgets -> $API_STATUS $API_BODY" ;;
    esac
    log "$BUDGET_NOTE"
    api POST /api-keys '{"name":"bench","department":"bench","project":"bench"}'
    [ "$API_STATUS" = 201 ] || die "POST /api-keys -> $API_STATUS $API_BODY"
    SP_KEY=$(jq -r .key <<<"$API_BODY")
}

# usd_to_nano DECIMAL: "8.34387675" -> 8343876750 (string arithmetic: the
# API's decimal dollars, exactly, against the audit log's integer nano-USD)
usd_to_nano() {
    local v=$1 int frac
    [[ $v =~ ^[0-9]+(\.[0-9]{0,9})?$ ]] || return 0
    int=${v%%.*}
    frac=${v#"$int"}; frac=${frac#.}000000000
    echo $((10#$int * 1000000000 + 10#${frac:0:9}))
}

# header_of FILE NAME: the value of a response header in a curl -D dump
header_of() { grep -i "^$2:" "$1" | tr -d '\r' | awk '{print $2}'; }

# spendpol_verify: before the runs, Spendpol must answer the bench key with
# its cost, tokens and audit id (JSON), and cost and tokens as trailers
# after [DONE] (SSE); otherwise no figure of the run would mean anything
spendpol_verify() {
    local i code hdr cost tokens audit
    for i in $(seq 1 100); do
        code=$(sp_chat "$SP_KEY" -o /dev/null -w '%{http_code}')
        SP_SENT=$((SP_SENT + 1))
        [ "$code" = 200 ] && break
        sleep 0.1
    done
    [ "$code" = 200 ] || die "Spendpol does not answer 200 with the bench key (last $code); see $SPDATA/logs/error.log"
    hdr="$WORK/verify-json.txt"
    sp_chat "$SP_KEY" -D "$hdr" -o "$WORK/verify-json.body"
    SP_SENT=$((SP_SENT + 1))
    cost=$(header_of "$hdr" x-spendpol-cost)
    tokens=$(header_of "$hdr" x-spendpol-tokens)
    audit=$(header_of "$hdr" x-spendpol-audit-id)
    [ -n "$cost" ] && [ -n "$tokens" ] && [ -n "$audit" ] \
        || { cat "$hdr" >&2; die "Spendpol's JSON response has no X-Spendpol-Cost/-Tokens/-Audit-Id"; }
    VERIFY+=("JSON: X-Spendpol-Cost $cost, X-Spendpol-Tokens $tokens, X-Spendpol-Audit-Id $audit")
    hdr="$WORK/verify-sse.txt"
    curl -s -D "$hdr" -o "$WORK/verify-sse.body" "http://127.0.0.1:$SP_PORT/v1/openai/chat/completions" \
        -H "Authorization: Bearer $SP_KEY" -H 'Content-Type: application/json' -H 'X-Mock-Stream: 1' \
        -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"stream":true,"stream_options":{"include_usage":true}}'
    SP_SENT=$((SP_SENT + 1))
    cost=$(header_of "$hdr" x-spendpol-cost)
    tokens=$(header_of "$hdr" x-spendpol-tokens)
    [ -n "$cost" ] && [ -n "$tokens" ] && grep -q '^data: \[DONE\]' "$WORK/verify-sse.body" \
        || { cat "$hdr" >&2; die "Spendpol's SSE response has no X-Spendpol-Cost/-Tokens trailers or no [DONE]"; }
    VERIFY+=("SSE: trailers X-Spendpol-Cost $cost, X-Spendpol-Tokens $tokens; the stream ends with [DONE]")
    for i in "${VERIFY[@]}"; do log "verified $i"; done
}

# ingest_settle: waits until controld has committed the whole journal
# (its offset in journal_offsets, for the journal's inode, reaches the
# file's size; nginx is idle by now), or until the offset has not moved
# for 30 s; says which in INGEST_SETTLED. Waiting for the row count to
# stand still for 5 s, as this check did before, gave up while controld
# was still behind (twice on 2026-12-03, 3 s runs of all four
# configurations on a loaded machine: 11,581 and 74,990 rows short).
ingest_settle() {
    local journal="$SPDATA/journal/journal.log" size inode off prev=-1 t0 moved
    INGEST_SETTLED="ingest: no journal at $journal"
    [ -f "$journal" ] || return 0
    log "waiting for controld to ingest the journal"
    t0=$SECONDS moved=$SECONDS
    while :; do
        size=$(stat -c %s "$journal") inode=$(stat -c %i "$journal")
        off=$(sp_psql -tAc "select coalesce(max(\"offset\"), 0) from journal_offsets where inode = $inode" 2>/dev/null)
        [ -n "$off" ] || off=0
        if [ "$off" -ge "$size" ]; then
            INGEST_SETTLED="ingest: the whole journal ($size bytes) committed $((SECONDS - t0)) s after the runs"
            return 0
        fi
        [ "$off" != "$prev" ] && moved=$SECONDS prev=$off
        if [ $((SECONDS - moved)) -ge 30 ]; then
            INGEST_SETTLED="ingest: NOT SETTLED, controld's offset stayed at $off of $size bytes for 30 s ($((SECONDS - t0)) s after the runs)"
            log "$INGEST_SETTLED"
            return 0
        fi
        sleep 0.5
    done
}

# spendpol_audit: after everything, once controld's ingest settles: the
# audit rows against the requests wrk and curl counted, by status, the
# module's own time, and the budget's spend against the audit log's sum
spendpol_audit() {
    local n stats ok bad costn bystatus gw bound verdict rl sp spn
    [ -f "$WORK/sp-sent" ] && SP_SENT=$((SP_SENT + $(awk '{s += $1} END {print s + 0}' "$WORK/sp-sent")))
    touch "$WORK/sp-sent"
    ingest_settle
    n=$(sp_psql -tAc 'select count(*) from audit_logs' 2>/dev/null || echo -1)
    stats=$(sp_psql -tA -F' ' -c \
        "select count(*) filter (where status between 200 and 299), count(*) filter (where status not between 200 and 299), coalesce(sum(cost_nano),0) from audit_logs" 2>/dev/null || echo "? ? ?")
    read -r ok bad costn <<<"$stats"
    bystatus=$(sp_psql -tA -F' ' -c \
        "select status || coalesce(' ' || error_code, '') || ': ' || count(*) from audit_logs group by status, error_code order by 1" 2>/dev/null | paste -sd, -)
    gw=$(sp_psql -tA -F' ' -c \
        "select string_agg(case when stream then 'SSE' else 'JSON' end || ' ' || round(avg_us, 1) || ' us', ', ') from (select stream, avg(gateway_us) avg_us from audit_logs where status = 200 group by stream) g" 2>/dev/null)
    # a wrk run leaves at most c requests in flight when it stops: the
    # journal has them, wrk did not count them
    bound=$(awk '{s += $2} END {print s + 0}' "$WORK/sp-sent" 2>/dev/null || echo 0)
    [ "$SOAK" -gt 0 ] && bound=$((bound + 64))
    verdict="OUTSIDE the expected range [0, $bound]"
    [ "$n" -ge "$SP_SENT" ] && [ $((n - SP_SENT)) -le "$bound" ] && verdict="within the expected range [0, $bound]"
    AUDIT_LINE="audit: $n rows in audit_logs ($ok 2xx, $bad other) for $SP_SENT requests that wrk and curl counted as answered: $(( n - SP_SENT )) more, $verdict"
    AUDIT_LINE="$AUDIT_LINE"$'\n'"  $INGEST_SETTLED"
    AUDIT_LINE="$AUDIT_LINE"$'\n'"  (each wrk run stops with up to c requests in flight: journaled, not counted by wrk; 499 when nginx saw the client go first)"
    AUDIT_LINE="$AUDIT_LINE"$'\n'"  by status: $bystatus"
    AUDIT_LINE="$AUDIT_LINE"$'\n'"  gateway_us (the module's own time per request, from the audit rows), 200s: $gw"
    if [ "${bad:-0}" != 0 ] && grep -q '^429' <<<"$(tr ',' '\n' <<<"$bystatus")"; then
        # what limit refused them: one more request shows OpenAI's headers
        rl=$(sp_chat "$SP_KEY" -D - -o /dev/null | tr -d '\r' | grep -i '^x-ratelimit-limit\|^HTTP/' | paste -sd' ' -)
        AUDIT_LINE="$AUDIT_LINE"$'\n'"  WARNING: 429s from a rate limit nobody set (the admin API sets none); a request now: $rl"
    fi
    if [ -n "$BUDGET_ID" ]; then
        sp=$(curl -s -H "Authorization: Bearer $SP_ADMIN" "$SP_API/budgets/$BUDGET_ID/spend")
        spn=$(usd_to_nano "$(jq -r '.spent_usd // empty' <<<"$sp" 2>/dev/null)")
        verdict="DIFFERENT from"
        [ -n "$spn" ] && [ "$spn" = "$costn" ] && verdict="equal to"
        AUDIT_LINE="$AUDIT_LINE"$'\n'"budget: GET /budgets/$BUDGET_ID/spend -> $sp; audit_logs sum(cost_nano) $costn"
        AUDIT_LINE="$AUDIT_LINE"$'\n'"  the budget's spent_usd (${spn:-?} nano-USD) is $verdict the audit log's sum"
    fi
}
