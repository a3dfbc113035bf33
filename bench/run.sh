#!/usr/bin/env bash
# make bench: Spendpol against plain nginx and the Portkey gateway, side by
# side in one run on the same fast mock upstream. See bench/README.md.
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
#   BENCH_KINDS="json sse"
#   BENCH_WARMUP=2              seconds of warm-up per configuration and kind
#   BENCH_SOAK=0                seconds of the memory check (300: 5 minutes):
#                               Spendpol under JSON+SSE load, each worker's RSS
#                               sampled every BENCH_SOAK_INTERVAL (10) seconds
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
#   BENCH_KEEP=0                1: keep the temp dir (logs, wrk output)
#   BENCH_HOLD=0                seconds to keep everything running after the
#                               report, for inspection (endpoints printed)
#   SPENDPOL_BUILD_DIR=build    where controld and the module come from
#   BENCH_LABEL                 a line on what was measured, printed in the report
# Results are also written to bench/results/ (not committed).
set -uo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
SP_REPO_ROOT=$ROOT
# shellcheck source=../scripts/lib/stack.sh
. "$ROOT/scripts/lib/stack.sh"
STACK="$ROOT/scripts/stack.sh"
# the mock provider listens on loopback, which is refused by default
export SPENDPOL_UPSTREAM_ALLOW="${SPENDPOL_UPSTREAM_ALLOW:-127.0.0.0/8}"

SECS=${BENCH_SECONDS:-10}
REPS=${BENCH_REPS:-3}
CONFIGS=${BENCH_CONFIGS:-direct nginx spendpol portkey}
CONNS=${BENCH_CONNS:-1 64}
KINDS=${BENCH_KINDS:-json sse}
WARMUP=${BENCH_WARMUP:-2}
SOAK=${BENCH_SOAK:-0}
SOAK_INTERVAL=${BENCH_SOAK_INTERVAL:-10}
PERF=${BENCH_PERF:-0}
SWAP=${BENCH_SWAP:-}
SWAP_KEYS=${BENCH_SWAP_KEYS:-1000000}
SWAP_BEFORE=${BENCH_SWAP_BEFORE:-5}
SWAP_AFTER=${BENCH_SWAP_AFTER:-5}
SWAP_TIMEOUT=${BENCH_SWAP_TIMEOUT:-600}
KEEP=${BENCH_KEEP:-0}
BUILD=$(sp_abs "${SPENDPOL_BUILD_DIR:-$ROOT/build}")
CLK_TCK=$(getconf CLK_TCK)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$BENCH/results"

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }
has() { case " $1 " in *" $2 "*) return 0 ;; esac; return 1; }

# the swap phase comes with the table when Spendpol is in it
if [ -z "$SWAP" ]; then
    SWAP=0
    [ "$REPS" -gt 0 ] && has "$CONFIGS" spendpol && SWAP=1
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

PORTKEY_JS="$BENCH/portkey/node_modules/@portkey-ai/gateway/build/start-server.js"
if has "$CONFIGS" portkey && [ ! -f "$PORTKEY_JS" ]; then
    command -v npm >/dev/null || die "npm is needed for the Portkey peer (make deps), or leave portkey out of BENCH_CONFIGS"
    log "npm ci in bench/portkey"
    (cd "$BENCH/portkey" && npm ci --no-audit --no-fund --loglevel=error >&2) || die "npm ci in bench/portkey failed"
fi

# ------------------------------------------------------------ lifecycle

WORK=$(mktemp -d /tmp/spendpol-bench.XXXXXX)
chmod 0755 "$WORK"
SPDATA="$WORK/spendpol"
MOCK_PID= PLAIN_PID= NOKEEP_PID= SP_NGINX_PID= CONTROLD_PID= PORTKEY_PID=
STARTED_PG=0 STARTED_REDIS=0 WRK_BG= SWAP_WRK= SWAP_WATCH= SWAP_INSERT=
CLEANED=0

# stop_proc PID SIGNAL SECONDS: signal, wait, then SIGKILL it and its children
stop_proc() {
    local pid=$1 sig=$2 secs=$3 i kids
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
    kids=$(ps -o pid= --ppid "$pid" 2>/dev/null | tr -d ' ')
    kill -"$sig" "$pid" 2>/dev/null
    for i in $(seq 1 $((secs * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop on SIG$sig within ${secs}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    # nginx workers that outlive their master
    for i in $kids; do
        kill -0 "$i" 2>/dev/null && kill -KILL "$i" 2>/dev/null
    done
    return 0
}

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

# wait_port HOST PORT PID NAME LOG...: until the port answers or PID dies
wait_port() {
    local host=$1 port=$2 pid=$3 name=$4 i
    shift 4
    for i in $(seq 1 300); do
        sp_port_open "$host" "$port" && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            for f in "$@"; do [ -s "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
            die "$name exited during start"
        fi
        sleep 0.1
    done
    die "$name does not answer on $host:$port"
}

# worker pids of an nginx master
workers_of() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' | tr '\n' ' '; }

# postmaster and every backend of the private PostgreSQL
pg_pids() {
    local pm
    pm=$(sp_pg_pid "$SPDATA" 2>/dev/null) || return 0
    [ -n "$pm" ] || return 0
    printf '%s %s\n' "$pm" "$(workers_of "$pm")"
}

# cpu_us PID...: utime+stime of those processes, in microseconds
cpu_us() {
    local t=0 p line f
    for p in "$@"; do
        line=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        # fields after "comm)": state(3) ... utime(14) stime(15)
        read -r -a f <<<"${line##*) }"
        t=$((t + f[11] + f[12]))
    done
    echo $((t * 1000000 / CLK_TCK))
}

# ------------------------------------------------------------ the mock upstream

# ngx_body FILE PREFIX: nginx `set $PREFIXn '...';` lines holding FILE
# (\ ' and newlines escaped), cut at event boundaries into pieces under
# nginx's 4 KB limit for one parameter, then the `return 200 "$PREFIX0..."`.
ngx_body() {
    grep -q '\$' "$1" && die "$1 contains \$, which nginx's return would expand"
    perl -0ne '
        my @ev = split /(?<=\n\n)/, $_; my @parts = (""); 
        for my $e (@ev) { push @parts, "" if length($parts[-1]) + length($e) > 3000; $parts[-1] .= $e }
        my $ret = "";
        if (@parts == 1) {
            (my $q = $parts[0]) =~ s/\\/\\\\/g; $q =~ s/\x27/\\\x27/g; $q =~ s/\n/\\n/g;
            print "            return 200 \x27$q\x27;\n"; exit 0;
        }
        for my $i (0 .. $#parts) {
            (my $q = $parts[$i]) =~ s/\\/\\\\/g; $q =~ s/\x27/\\\x27/g; $q =~ s/\n/\\n/g;
            print "            set \$'"$2"'$i \x27$q\x27;\n"; $ret .= "\$'"$2"'$i";
        }
        print "            return 200 \"$ret\";\n";' "$1"
}

USER_LINE=
sp_is_root && USER_LINE="user root;"

# common top of a plain nginx conf: DIR
ngx_head() {
    cat <<EOF
$USER_LINE
daemon off;
master_process on;
worker_processes 2;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOF
}
ngx_temp() {
    cat <<EOF
    client_body_temp_path $1/client_body_temp;
    proxy_temp_path       $1/proxy_temp;
    fastcgi_temp_path     $1/fastcgi_temp;
    uwsgi_temp_path       $1/uwsgi_temp;
    scgi_temp_path        $1/scgi_temp;
EOF
}

MOCK_PORT=$(sp_free_port)
mkdir -p "$WORK/mock"
{
    ngx_head "$WORK/mock"
    cat <<EOF
http {
    access_log off;
$(ngx_temp "$WORK/mock")
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$MOCK_PORT backlog=4096;
        # POST /v1/chat/completions: chat.completion JSON, or the SSE body
        # when X-Mock-Stream is set (Spendpol and wrk forward it)
        location = /v1/chat/completions {
            if (\$http_x_mock_stream) {
                rewrite ^ /sse/v1/chat/completions last;
            }
            default_type application/json;
            add_header openai-version 2020-10-01;
            add_header openai-processing-ms 312;
            add_header x-request-id req_0b2a6e4fbench0mock;
$(ngx_body "$BENCH/mock/chat.json" mock_json_)
        }
        location = /sse/v1/chat/completions {
            default_type "text/event-stream; charset=utf-8";
            add_header cache-control no-cache;
            add_header openai-version 2020-10-01;
            add_header openai-processing-ms 121;
            add_header x-request-id req_0b2a6e4fbench0mock;
$(ngx_body "$BENCH/mock/chat.sse" mock_sse_)
        }
    }
}
EOF
} >"$WORK/mock/nginx.conf"

start_nginx_plain() { # DIR -> pid
    setsid /usr/sbin/nginx -p "$1/" -c "$1/nginx.conf" -e "$1/error.log" \
        >>"$1/nginx.out" 2>&1 &
    echo $!
}

log "mock upstream on 127.0.0.1:$MOCK_PORT"
/usr/sbin/nginx -t -q -p "$WORK/mock/" -c "$WORK/mock/nginx.conf" -e "$WORK/mock/error.log" \
    || die "mock nginx.conf invalid: $WORK/mock/nginx.conf"
setsid /usr/sbin/nginx -p "$WORK/mock/" -c "$WORK/mock/nginx.conf" -e "$WORK/mock/error.log" \
    >>"$WORK/mock/nginx.out" 2>&1 &
MOCK_PID=$!
wait_port 127.0.0.1 "$MOCK_PORT" "$MOCK_PID" mock "$WORK/mock/error.log"
sleep 0.2
MOCK_WORKERS=$(workers_of "$MOCK_PID")

# ------------------------------------------------------------ plain nginx

if has "$CONFIGS" nginx; then
    PLAIN_PORT=$(sp_free_port)
    mkdir -p "$WORK/nginx"
    {
        ngx_head "$WORK/nginx"
        cat <<EOF
http {
    # logs every request like Spendpol's generated conf does (combined format)
    access_log $WORK/nginx/access.log;
$(ngx_temp "$WORK/nginx")
    keepalive_requests 10000000;
    upstream mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 128;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$PLAIN_PORT backlog=4096;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    } >"$WORK/nginx/nginx.conf"
    log "plain nginx on 127.0.0.1:$PLAIN_PORT"
    /usr/sbin/nginx -t -q -p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" \
        || die "plain nginx.conf invalid"
    setsid /usr/sbin/nginx -p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" \
        >>"$WORK/nginx/nginx.out" 2>&1 &
    PLAIN_PID=$!
    wait_port 127.0.0.1 "$PLAIN_PORT" "$PLAIN_PID" "plain nginx" "$WORK/nginx/error.log"
fi

# ------------------------------------------------------------ plain nginx, no upstream keepalive

# A diagnostic, not in the default set: plain nginx proxying the way
# `spendpol on` configured the proxy module before it kept upstream
# connections alive (proxy_pass to a variable URL, so a new upstream
# connection per request; HTTP/1.1; proxy_buffering off). Its gap to
# `nginx` is what the missing upstream keepalive costs.
if has "$CONFIGS" nokeep; then
    NOKEEP_PORT=$(sp_free_port)
    mkdir -p "$WORK/nokeep"
    {
        ngx_head "$WORK/nokeep"
        cat <<EOF
http {
    access_log $WORK/nokeep/access.log;
$(ngx_temp "$WORK/nokeep")
    keepalive_requests 10000000;
    server {
        listen 127.0.0.1:$NOKEEP_PORT backlog=4096;
        location / {
            set \$upstream_url http://127.0.0.1:$MOCK_PORT;
            proxy_pass \$upstream_url;
            proxy_http_version 1.1;
            proxy_buffering off;
        }
    }
}
EOF
    } >"$WORK/nokeep/nginx.conf"
    log "plain nginx without upstream keepalive on 127.0.0.1:$NOKEEP_PORT"
    /usr/sbin/nginx -t -q -p "$WORK/nokeep/" -c "$WORK/nokeep/nginx.conf" -e "$WORK/nokeep/error.log" \
        || die "nokeep nginx.conf invalid"
    setsid /usr/sbin/nginx -p "$WORK/nokeep/" -c "$WORK/nokeep/nginx.conf" -e "$WORK/nokeep/error.log" \
        >>"$WORK/nokeep/nginx.out" 2>&1 &
    NOKEEP_PID=$!
    wait_port 127.0.0.1 "$NOKEEP_PORT" "$NOKEEP_PID" "nokeep nginx" "$WORK/nokeep/error.log"
fi

# ------------------------------------------------------------ Spendpol

SP_KEY= SP_ADMIN= SP_API= SP_PORT= PG_PORT= BUDGET_ID= BUDGET_NOTE=
if has "$CONFIGS" spendpol || [ "$SOAK" -gt 0 ] || [ "$SWAP" = 1 ]; then
    mkdir -p "$SPDATA/logs" "$SPDATA/journal"
    PG_PORT=$(sp_free_port)
    REDIS_PORT=$(sp_free_port)
    SP_PORT=$(sp_free_port)
    API_PORT=$(sp_free_port)
    SP_API="http://127.0.0.1:$API_PORT"
    SP_ADMIN="sp_key_$(openssl rand -hex 24)"
    log "Spendpol: PostgreSQL :$PG_PORT, Redis :$REDIS_PORT, controld :$API_PORT, nginx :$SP_PORT ($SPDATA)"
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
        kill -0 "$CONTROLD_PID" 2>/dev/null || { tail -n 20 "$SPDATA/logs/controld.err" >&2; die "controld exited during start"; }
        sleep 0.1
    done
    grep -q 'controld ready' "$SPDATA/logs/controld.out" || die "controld not ready within 60 s"
    if [ -f "$SPDATA/controld/admin.key" ] && ! curl -sf -o /dev/null -H "Authorization: Bearer $SP_ADMIN" "$SP_API/providers"; then
        SP_ADMIN=$(tr -d ' \n\r' <"$SPDATA/controld/admin.key")
    fi

    bash "$STACK" nginx-conf "$SPDATA" "$BUILD" "127.0.0.1:$SP_PORT" >/dev/null || die "nginx-conf failed"
    bash "$STACK" nginx-test "$SPDATA" "$BUILD" || die "nginx -t failed on Spendpol's conf"
    setsid bash "$STACK" nginx-exec "$SPDATA" "$BUILD" \
        >>"$SPDATA/logs/nginx.out" 2>>"$SPDATA/logs/nginx.err" &
    SP_NGINX_PID=$!
    wait_port 127.0.0.1 "$SP_PORT" "$SP_NGINX_PID" "Spendpol nginx" "$SPDATA/logs/error.log" "$SPDATA/logs/nginx.err"

    api() { # METHOD PATH [JSON]: sets API_BODY and API_STATUS
        local out
        out=$(curl -s -w '\n%{http_code}' -X "$1" "$SP_API$2" -H "Authorization: Bearer $SP_ADMIN" \
              -H 'Content-Type: application/json' ${3:+-d "$3"})
        API_STATUS=${out##*$'\n'}
        API_BODY=${out%$'\n'*}
    }
    api PUT /providers/openai "{\"api_key\":\"sk-bench-not-a-real-key\",\"base_url\":\"http://127.0.0.1:$MOCK_PORT/v1\"}"
    [ "$API_STATUS" = 200 ] || die "PUT /providers/openai -> $API_STATUS $API_BODY"
    api POST /budgets '{"name":"bench","scope":{"type":"organization"},"limit_usd":"1000000","period":"monthly"}'
    case "$API_STATUS" in
        201) BUDGET_ID=$(jq -r .id <<<"$API_BODY"); BUDGET_NOTE="organization budget $BUDGET_ID, \$1,000,000 monthly, blocking: every request reserves and settles" ;;
        404|405) BUDGET_NOTE="no budget: POST /budgets is not served by this controld ($API_STATUS), so no reservation is made" ;;
        *) die "POST /budgets -> $API_STATUS $API_BODY" ;;
    esac
    log "$BUDGET_NOTE"
    # the key last: the snapshot that has it has the provider and budget too
    api POST /api-keys '{"name":"bench","department":"bench","project":"bench"}'
    [ "$API_STATUS" = 201 ] || die "POST /api-keys -> $API_STATUS $API_BODY"
    SP_KEY=$(jq -r .key <<<"$API_BODY")
fi

# ------------------------------------------------------------ Portkey

if has "$CONFIGS" portkey; then
    PK_PORT=$(sp_free_port)
    mkdir -p "$WORK/portkey"
    log "Portkey gateway $(jq -r .version "$BENCH/portkey/node_modules/@portkey-ai/gateway/package.json") on :$PK_PORT (node $(node -v))"
    (cd "$WORK/portkey" && NODE_ENV=production exec setsid node "$PORTKEY_JS" --port="$PK_PORT" --headless \
        >>"$WORK/portkey/out.log" 2>&1) &
    PORTKEY_PID=$!
    wait_port 127.0.0.1 "$PK_PORT" "$PORTKEY_PID" portkey "$WORK/portkey/out.log"
fi

# ------------------------------------------------------------ wrk

# target CONFIG KIND: sets T_PORT T_PATH T_AUTH T_HEADERS T_PIDS T_AUX
target() {
    local cfg=$1 kind=$2
    T_PATH=/v1/chat/completions T_AUTH="Bearer sk-bench-not-a-real-key" T_HEADERS= T_AUX=
    [ "$kind" = sse ] && T_HEADERS="X-Mock-Stream: 1"
    case "$cfg" in
        direct)   T_PORT=$MOCK_PORT;  T_PIDS=$(workers_of "$MOCK_PID") ;;
        nginx)    T_PORT=$PLAIN_PORT; T_PIDS=$(workers_of "$PLAIN_PID") ;;
        nokeep)   T_PORT=$NOKEEP_PORT; T_PIDS=$(workers_of "$NOKEEP_PID") ;;
        spendpol) T_PORT=$SP_PORT;    T_PIDS=$(workers_of "$SP_NGINX_PID")
                  T_PATH=/v1/openai/chat/completions T_AUTH="Bearer $SP_KEY"
                  T_AUX="$CONTROLD_PID $(pg_pids)" ;;
        portkey)  T_PORT=$PK_PORT;    T_PIDS=$PORTKEY_PID
                  local host="http://127.0.0.1:$MOCK_PORT/v1"
                  [ "$kind" = sse ] && host="http://127.0.0.1:$MOCK_PORT/sse/v1"
                  T_HEADERS="${T_HEADERS:+$T_HEADERS|}x-portkey-provider: openai|x-portkey-custom-host: $host" ;;
        *) die "unknown configuration $cfg" ;;
    esac
}

SP_SENT=0   # requests Spendpol answered to curl (and, in $WORK/sp-sent, to wrk)
mkdir -p "$WORK/wrk"

# run_wrk CONFIG KIND CONNS SECONDS TAG: one wrk run; prints the result
# fields "requests rps p50 p99 non2xx sockerr cpu_us aux_us"
run_wrk() {
    local cfg=$1 kind=$2 c=$3 secs=$4 tag=$5 t=2 out c0 c1 a0 a1 m0 m1 res
    [ "$c" -lt 2 ] && t=1
    target "$cfg" "$kind"
    out="$WORK/wrk/$tag-$cfg-$kind-c$c.log"
    # shellcheck disable=SC2086
    c0=$(cpu_us $T_PIDS); a0=$(cpu_us $T_AUX); m0=$(cpu_us $MOCK_WORKERS)
    BENCH_STREAM=$([ "$kind" = sse ] && echo 1 || echo 0) BENCH_PATH=$T_PATH \
    BENCH_AUTH=$T_AUTH BENCH_HEADERS=$T_HEADERS \
        wrk -t"$t" -c"$c" -d"${secs}s" --timeout 10s -s "$BENCH/chat.lua" \
            "http://127.0.0.1:$T_PORT" >"$out" 2>&1
    # shellcheck disable=SC2086
    c1=$(cpu_us $T_PIDS); a1=$(cpu_us $T_AUX); m1=$(cpu_us $MOCK_WORKERS)
    res=$(grep '^BENCH_RESULT' "$out" | tail -n1)
    [ -n "$res" ] || { cat "$out" >&2; die "wrk printed no result ($out)"; }
    local requests rps p50 p99 non2xx connect read write timeout
    eval "$(sed 's/^BENCH_RESULT //; s/\([a-z0-9_]*\)=\([^ ]*\)/local w_\1=\2;/g' <<<"$res")"
    # run_wrk runs in a subshell: Spendpol's answered requests go to a file
    [ "$cfg" = spendpol ] && echo "$w_requests $c" >>"$WORK/sp-sent"
    printf '%s %s %s %s %s %s %s %s %s\n' "$w_requests" "$w_rps" "$w_p50_us" "$w_p99_us" "$w_non2xx" \
        $((w_connect + w_read + w_write + w_timeout)) $((c1 - c0)) $((a1 - a0)) $((m1 - m0))
}

# ------------------------------------------------------------ Spendpol governs?

VERIFY=()
if [ -n "$SP_KEY" ]; then
    for i in $(seq 1 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SP_PORT/v1/openai/chat/completions" \
               -H "Authorization: Bearer $SP_KEY" -H 'Content-Type: application/json' \
               -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8}')
        SP_SENT=$((SP_SENT + 1))
        [ "$code" = 200 ] && break
        sleep 0.1
    done
    [ "$code" = 200 ] || die "Spendpol does not answer 200 with the bench key (last $code); see $SPDATA/logs/error.log"
    hdr="$WORK/verify-json.txt"
    curl -s -D "$hdr" -o "$WORK/verify-json.body" "http://127.0.0.1:$SP_PORT/v1/openai/chat/completions" \
        -H "Authorization: Bearer $SP_KEY" -H 'Content-Type: application/json' \
        -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8}'
    SP_SENT=$((SP_SENT + 1))
    cost=$(grep -i '^x-spendpol-cost:' "$hdr" | tr -d '\r' | awk '{print $2}')
    tokens=$(grep -i '^x-spendpol-tokens:' "$hdr" | tr -d '\r' | awk '{print $2}')
    audit=$(grep -i '^x-spendpol-audit-id:' "$hdr" | tr -d '\r' | awk '{print $2}')
    [ -n "$cost" ] && [ -n "$tokens" ] && [ -n "$audit" ] \
        || { cat "$hdr" >&2; die "Spendpol's JSON response has no X-Spendpol-Cost/-Tokens/-Audit-Id"; }
    VERIFY+=("JSON: X-Spendpol-Cost $cost, X-Spendpol-Tokens $tokens, X-Spendpol-Audit-Id $audit")
    hdr="$WORK/verify-sse.txt"
    curl -s -D "$hdr" -o "$WORK/verify-sse.body" "http://127.0.0.1:$SP_PORT/v1/openai/chat/completions" \
        -H "Authorization: Bearer $SP_KEY" -H 'Content-Type: application/json' -H 'X-Mock-Stream: 1' \
        -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"stream":true,"stream_options":{"include_usage":true}}'
    SP_SENT=$((SP_SENT + 1))
    cost=$(grep -i '^x-spendpol-cost:' "$hdr" | tr -d '\r' | awk '{print $2}')
    tokens=$(grep -i '^x-spendpol-tokens:' "$hdr" | tr -d '\r' | awk '{print $2}')
    [ -n "$cost" ] && [ -n "$tokens" ] && grep -q '^data: \[DONE\]' "$WORK/verify-sse.body" \
        || { cat "$hdr" >&2; die "Spendpol's SSE response has no X-Spendpol-Cost/-Tokens trailers or no [DONE]"; }
    VERIFY+=("SSE: trailers X-Spendpol-Cost $cost, X-Spendpol-Tokens $tokens; the stream ends with [DONE]")
    for l in "${VERIFY[@]}"; do log "verified $l"; done
fi
if has "$CONFIGS" portkey; then
    for kind in json sse; do
        target portkey "$kind"
        code=$(curl -s -o "$WORK/portkey/verify-$kind.body" -w '%{http_code}' "http://127.0.0.1:$PK_PORT$T_PATH" \
            -H "Authorization: $T_AUTH" -H 'Content-Type: application/json' \
            -H "x-portkey-provider: openai" -H "${T_HEADERS##*|}" \
            -d "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]$([ "$kind" = sse ] && echo ',"stream":true,"stream_options":{"include_usage":true}')}")
        [ "$code" = 200 ] || { cat "$WORK/portkey/verify-$kind.body" >&2; tail -n 20 "$WORK/portkey/out.log" >&2; die "Portkey $kind -> $code"; }
    done
    grep -q '\[DONE\]' "$WORK/portkey/verify-sse.body" || die "Portkey's stream has no [DONE]"
fi

# ------------------------------------------------------------ the runs

mkdir -p "$RESULTS"
RUNS="$WORK/runs.tsv"
: >"$RUNS"
NPROC=$(nproc)
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
header() {
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')  machine: $NPROC cores, $CPU_MODEL, $(uname -r)"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "versions: $(/usr/sbin/nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}'), Spendpol $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "$(git -C "$ROOT" status --porcelain -- controld libspendpol ngx_spendpol_module config 2>/dev/null)" ] && echo ' (+ uncommitted changes)')${PK_PORT:+, @portkey-ai/gateway $(jq -r .version "$BENCH/portkey/node_modules/@portkey-ai/gateway/package.json") on node $(node -v)}"
    [ -n "${BENCH_LABEL:-}" ] && echo "build: $BENCH_LABEL"
    echo "runs: ${SECS}s each, $REPS interleaved repetitions; configs: $CONFIGS; kinds: $KINDS; c: $CONNS"
    [ -n "$BUDGET_NOTE" ] && echo "spendpol: $BUDGET_NOTE"
}

if [ "$REPS" -gt 0 ]; then
    total=$(( REPS * $(wc -w <<<"$CONFIGS") * $(wc -w <<<"$KINDS") * $(wc -w <<<"$CONNS") ))
    log "warm-up: ${WARMUP}s per configuration and kind"
    for cfg in $CONFIGS; do
        for kind in $KINDS; do
            run_wrk "$cfg" "$kind" 64 "$WARMUP" warmup >/dev/null
        done
    done
    log "$total runs of ${SECS}s (about $(( total * (SECS + 1) / 60 + 1 )) min)"
    n=0
    for rep in $(seq 1 "$REPS"); do
        for kind in $KINDS; do
            for c in $CONNS; do
                for cfg in $CONFIGS; do
                    n=$((n + 1))
                    r=$(run_wrk "$cfg" "$kind" "$c" "$SECS" "r$rep")
                    printf '%s\t%s\t%s\t%s\t%s\n' "$rep" "$cfg" "$kind" "$c" "$r" | tr ' ' '\t' >>"$RUNS"
                    log "[$n/$total] rep $rep $cfg $kind c=$c: $(awk '{printf "%.0f req/s p50 %d us p99 %d us non2xx %d", $2, $3, $4, $5}' <<<"$r")"
                done
            done
        done
    done
fi

# ------------------------------------------------------------ table

# median of each (cfg, kind, c) over reps; CPU per request from the summed
# CPU and requests of all reps
table() {
    awk -F'\t' -v order="$CONFIGS" '
    function median(s,   a, n, i, j, t) {
        n = split(s, a, " ")
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
        return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
    }
    {
        k = $2 SUBSEP $3 SUBSEP $4
        if (!(k in seen)) { seen[k] = 1; keys[++nk] = k }
        rps[k] = rps[k] " " $6; p50[k] = p50[k] " " $7; p99[k] = p99[k] " " $8
        req[k] += $5; err[k] += $9; sock[k] += $10; cpu[k] += $11; aux[k] += $12; mck[k] += $13
    }
    END {
        printf "%-9s %-5s %4s %9s %8s %9s %8s %8s %7s %7s %5s\n", "config", "kind", "c", "req/s", "p50 us", "p99 us", "CPU us/r", "ctl+pg/r", "mock/r", "non2xx", "sock"
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
                k = cfgs[ci] SUBSEP gf[1] SUBSEP gf[2]
                if (!(k in seen)) continue
                cu = req[k] ? cpu[k] / req[k] : 0
                au = (cfgs[ci] == "spendpol" && req[k]) ? sprintf("%.1f", aux[k] / req[k]) : "-"
                m[k] = median(rps[k]); q[k] = median(p50[k])
                mu = req[k] ? sprintf("%.1f", mck[k] / req[k]) : "-"
                printf "%-9s %-5s %4s %9.0f %8.0f %9.0f %8.1f %8s %7s %7d %5d\n", cfgs[ci], gf[1], gf[2], m[k], q[k], median(p99[k]), cu, au, mu, err[k], sock[k]
                R[cfgs[ci], gf[1], gf[2]] = m[k]; P[cfgs[ci], gf[1], gf[2]] = q[k]; C[cfgs[ci], gf[1], gf[2]] = cu
            }
        }
        print ""
        print "ratios (medians of the repetitions):"
        for (gi = 1; gi <= ng; gi++) {
            split(groups[gi], gf, SUBSEP); kd = gf[1]; cc = gf[2]
            s = ""
            if (R["nginx", kd, cc] > 0 && R["spendpol", kd, cc] > 0)
                s = s sprintf("  spendpol/nginx req/s %.2fx, added p50 %+d us, added CPU %+.1f us/req;", R["spendpol", kd, cc] / R["nginx", kd, cc], P["spendpol", kd, cc] - P["nginx", kd, cc], C["spendpol", kd, cc] - C["nginx", kd, cc])
            if (R["nokeep", kd, cc] > 0 && R["nginx", kd, cc] > 0)
                s = s sprintf("  nokeep/nginx req/s %.2fx, CPU %+.1f us/req; spendpol over nokeep CPU %+.1f us/req;", R["nokeep", kd, cc] / R["nginx", kd, cc], C["nokeep", kd, cc] - C["nginx", kd, cc], C["spendpol", kd, cc] - C["nokeep", kd, cc])
            if (R["portkey", kd, cc] > 0 && R["spendpol", kd, cc] > 0)
                s = s sprintf("  spendpol/portkey req/s %.1fx", R["spendpol", kd, cc] / R["portkey", kd, cc])
            if (s != "") printf "  %-4s c=%-3s%s\n", kd, cc, s
        }
        print ""
        for (k in err) { split(k, f, SUBSEP); if (f[1] == "spendpol" && err[k] > 0) bad = 1 }
        print "targets (issue 5):" (bad ? " NOT VALID: Spendpol answered non-2xx responses (see the audit line for their codes)" : "")
        if (R["nginx", "json", 64] > 0 && R["spendpol", "json", 64] > 0) {
            r = R["spendpol", "json", 64] / R["nginx", "json", 64]
            printf "  >= 0.8x plain nginx req/s at c=64 JSON:   %.2fx  %s\n", r, (r >= 0.8 ? "MET" : "MISSED")
        }
        if (P["nginx", "json", 1] > 0 && P["spendpol", "json", 1] > 0) {
            d = P["spendpol", "json", 1] - P["nginx", "json", 1]
            printf "  <= 30 us added p50 at c=1 JSON:          %+d us  %s\n", d, (d <= 30 ? "MET" : "MISSED")
        }
        if (R["portkey", "json", 64] > 0 && R["spendpol", "json", 64] > 0) {
            r = R["spendpol", "json", 64] / R["portkey", "json", 64]
            printf "  >= 50x Portkey req/s at c=64 JSON:        %.1fx  %s\n", r, (r >= 50 ? "MET" : "MISSED")
        }
    }' "$RUNS"
}

OUTFILE="$RESULTS/bench-$STAMP.txt"
if [ "$REPS" -gt 0 ]; then
    {
        header
        echo
        table
        echo
        echo "CPU us/r: the proxy's own CPU (nginx workers, or the node process) per request, from /proc/<pid>/stat"
        echo "ctl+pg/r: controld and PostgreSQL CPU per Spendpol request (journal ingest), on the same 2 cores"
        echo "mock/r: the mock upstream's CPU per request (new upstream connections cost it too; nginx and spendpol keep theirs alive)"
        echo "non2xx: wrk's responses with status >= 400 (all repetitions); sock: connect/read/write/timeout errors"
    } >"$OUTFILE"
fi

# ------------------------------------------------------------ perf (optional)

if [ "$PERF" = 1 ] && command -v perf >/dev/null; then
    for cfg in spendpol nginx; do
        has "$CONFIGS" "$cfg" || continue
        target "$cfg" json
        pids=$(tr ' ' ',' <<<"$T_PIDS" | sed 's/,*$//')
        log "perf record on $cfg workers ($pids), c=64 JSON, ${SECS}s"
        perf record -q -e cpu-clock -F 1999 -g -p "$pids" -o "$WORK/perf-$cfg.data" -- sleep "$((SECS > 4 ? SECS - 2 : SECS))" \
            >"$WORK/perf-$cfg.log" 2>&1 &
        perf_pid=$!
        sleep 0.5
        run_wrk "$cfg" json 64 "$SECS" perf >/dev/null
        wait "$perf_pid"
        perf report -i "$WORK/perf-$cfg.data" --stdio --no-children -g none --sort dso,sym --percent-limit 0.4 2>/dev/null \
            | grep -v '^$' | grep -v '^#' | grep '%' | head -n 80 >"$RESULTS/perf-$STAMP-$cfg.txt"
        perf report -i "$WORK/perf-$cfg.data" --stdio --no-children -g none --sort dso 2>/dev/null \
            | grep '%' | grep -v '^#' | head -n 15 >"$RESULTS/perf-$STAMP-$cfg-dso.txt"
        log "perf: $RESULTS/perf-$STAMP-$cfg.txt"
    done
fi

# ------------------------------------------------------------ soak (memory)

if [ "$SOAK" -gt 0 ] && [ -n "$SP_KEY" ]; then
    SOAKF="$RESULTS/soak-$STAMP.txt"
    wpids=$(workers_of "$SP_NGINX_PID")
    log "memory check: ${SOAK}s of JSON (c=32) + SSE (c=32) on Spendpol, RSS of workers $wpids every ${SOAK_INTERVAL}s"
    rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
    target spendpol json
    ( BENCH_STREAM=0 BENCH_PATH=$T_PATH BENCH_AUTH=$T_AUTH BENCH_HEADERS=$T_HEADERS \
        exec wrk -t1 -c32 -d"$((SOAK + 2))s" --timeout 10s -s "$BENCH/chat.lua" "http://127.0.0.1:$T_PORT" \
        >"$WORK/wrk/soak-json.log" 2>&1 ) &
    WRK_BG="$!"
    target spendpol sse
    ( BENCH_STREAM=1 BENCH_PATH=$T_PATH BENCH_AUTH=$T_AUTH BENCH_HEADERS=$T_HEADERS \
        exec wrk -t1 -c32 -d"$((SOAK + 2))s" --timeout 10s -s "$BENCH/chat.lua" "http://127.0.0.1:$T_PORT" \
        >"$WORK/wrk/soak-sse.log" 2>&1 ) &
    WRK_BG="$WRK_BG $!"
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
    soak_req=0 soak_err=0
    for f in "$WORK/wrk/soak-json.log" "$WORK/wrk/soak-sse.log"; do
        r=$(grep '^BENCH_RESULT' "$f")
        q=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$r"); e=$(sed -n 's/.*non2xx=\([0-9]*\).*/\1/p' <<<"$r")
        soak_req=$((soak_req + ${q:-0})); soak_err=$((soak_err + ${e:-0}))
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
    } >"$SOAKF"
fi

# ------------------------------------------------------------ snapshot swap under load

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
SWAPF=
if [ "$SWAP" = 1 ] && [ -n "$SP_KEY" ]; then
    SW="$WORK/swap"
    SWAPF="$RESULTS/swap-$STAMP.txt"
    mkdir -p "$SW" "$RESULTS"
    swap_snap="$(sp_snapshot_dir "$SPDATA")/policy.snap"
    swap_workers=$(workers_of "$SP_NGINX_PID")
    swap_pg() { psql "$(sp_pg_owner_url "$PG_PORT" "$SPDATA")" -v ON_ERROR_STOP=1 -qtA "$@"; }
    # PostgreSQL's sha256 must be sp_key_hash, or no inserted key would work
    swap_org=$(swap_pg -c "select org_id from api_keys where key_hash = sha256(convert_to('$SP_KEY', 'UTF8'))")
    [ -n "$swap_org" ] || die "swap: no api_keys row has the SHA-256 of the bench key"
    swap_mem() { # PID: "VmRSS RssAnon RssShmem VmHWM" in KiB
        awk '/^VmRSS/ {r = $2} /^RssAnon/ {a = $2} /^RssShmem/ {s = $2} /^VmHWM/ {h = $2}
             END {print r + 0, a + 0, s + 0, h + 0}' "/proc/$1/status" 2>/dev/null
    }
    for p in $swap_workers $CONTROLD_PID; do echo "$p $(swap_mem "$p")"; done >"$SW/mem-before"
    swap_errlog_from=$(stat -c %s "$SPDATA/logs/error.log" 2>/dev/null || echo 0)
    swap_loadavg=$(cut -d' ' -f1-3 /proc/loadavg)

    # swap_wrk PHASE SECONDS: one wrk run in the background (SWAP_WRK)
    swap_wrk() {
        target spendpol json
        echo "$EPOCHREALTIME" >"$SW/$1.start"
        BENCH_STREAM=0 BENCH_PATH=$T_PATH BENCH_AUTH=$T_AUTH BENCH_HEADERS=$T_HEADERS \
            wrk -t2 -c64 -d"${2}s" --timeout 10s -s "$BENCH/chat.lua" "http://127.0.0.1:$T_PORT" \
            >"$SW/$1.log" 2>&1 &
        SWAP_WRK=$!
    }
    # swap_wrk_end PHASE [stop]: waits for it; stop: SIGINT first (wrk
    # stops within its 100 ms tick and reports what it measured)
    swap_wrk_end() {
        [ -n "${2:-}" ] && kill -INT "$SWAP_WRK" 2>/dev/null
        wait "$SWAP_WRK"
        SWAP_WRK=
        echo "$EPOCHREALTIME" >"$SW/$1.end"
        grep -q '^BENCH_RESULT' "$SW/$1.log" || { cat "$SW/$1.log" >&2; die "swap: wrk reported nothing in phase $1"; }
        echo "$(sed -n 's/^BENCH_RESULT requests=\([0-9]*\).*/\1/p' "$SW/$1.log") 64" >>"$WORK/sp-sent"
    }

    mkfifo "$SW/events.fifo"
    # shellcheck disable=SC2086
    perl "$BENCH/swap-watch.pl" "$swap_snap" "$SWAP_TIMEOUT" $swap_workers \
        >"$SW/events.fifo" 2>"$SW/watch.err" &
    SWAP_WATCH=$!
    exec {swap_fd}<"$SW/events.fifo"
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
    swap_until ready
    swap_had=$(swap_pg -c 'select count(*) from api_keys where active')

    log "swap: ${SWAP_BEFORE}s of JSON c=64 on Spendpol before"
    swap_wrk before "$SWAP_BEFORE"
    swap_wrk_end before
    log "swap: inserting $SWAP_KEYS keys into $swap_org while wrk runs; then controld publishes, the workers swap"
    swap_wrk load $((SWAP_TIMEOUT + 60))
    echo "$EPOCHREALTIME" >"$SW/insert.start"
    # its end goes to the watcher's fifo as "insert RC TIME" (opened
    # read-write, so it never blocks)
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

    # the bench key and one inserted key, through the new snapshot
    swap_try() { # KEY: "status cost"
        local code
        code=$(curl -s -D "$SW/try.h" -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SP_PORT/v1/openai/chat/completions" \
               -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
               -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8}')
        echo "$code $(grep -i '^x-spendpol-cost:' "$SW/try.h" | tr -d '\r' | awk '{print $2}')"
    }
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
            r=$(grep '^BENCH_RESULT' "$SW/$ph.log")
            eval "$(sed 's/^BENCH_RESULT //; s/\([a-z0-9_]*\)=\([^ ]*\)/sw_\1=\2;/g' <<<"$r")"
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
    } >"$SWAPF"
fi

# ------------------------------------------------------------ audit check

AUDIT_LINE=
if [ -n "$SP_KEY" ]; then
    [ -f "$WORK/sp-sent" ] && SP_SENT=$((SP_SENT + $(awk '{s += $1} END {print s + 0}' "$WORK/sp-sent")))
    touch "$WORK/sp-sent"
    log "waiting for controld to ingest the journal"
    prev=-1 same=0 n=0
    for i in $(seq 1 120); do
        n=$(psql "$(sp_pg_owner_url "$PG_PORT" "$SPDATA")" -tAc 'select count(*) from audit_logs' 2>/dev/null || echo -1)
        if [ "$n" = "$prev" ]; then same=$((same + 1)); else same=0; fi
        [ $same -ge 3 ] && [ "$n" -ge "$SP_SENT" ] && break
        [ $same -ge 10 ] && break
        prev=$n
        sleep 0.5
    done
    stats=$(psql "$(sp_pg_owner_url "$PG_PORT" "$SPDATA")" -tA -F' ' -c \
        "select count(*) filter (where status between 200 and 299), count(*) filter (where status not between 200 and 299), coalesce(sum(cost_nano),0) from audit_logs" 2>/dev/null || echo "? ? ?")
    read -r ok bad costn <<<"$stats"
    bystatus=$(psql "$(sp_pg_owner_url "$PG_PORT" "$SPDATA")" -tA -F' ' -c \
        "select status || coalesce(' ' || error_code, '') || ': ' || count(*) from audit_logs group by status, error_code order by 1" 2>/dev/null | paste -sd, -)
    gw=$(psql "$(sp_pg_owner_url "$PG_PORT" "$SPDATA")" -tA -F' ' -c \
        "select string_agg(case when stream then 'SSE' else 'JSON' end || ' ' || round(avg_us, 1) || ' us', ', ') from (select stream, avg(gateway_us) avg_us from audit_logs where status = 200 group by stream) g" 2>/dev/null)
    # a wrk run leaves at most c requests in flight when it stops: the
    # journal has them, wrk did not count them
    bound=$(awk '{s += $2} END {print s + 0}' "$WORK/sp-sent" 2>/dev/null || echo 0)
    [ "$SOAK" -gt 0 ] && bound=$((bound + 64))
    verdict="OUTSIDE the expected range [0, $bound]"
    [ "$n" -ge "$SP_SENT" ] && [ $((n - SP_SENT)) -le "$bound" ] && verdict="within the expected range [0, $bound]"
    AUDIT_LINE="audit: $n rows in audit_logs ($ok 2xx, $bad other) for $SP_SENT requests that wrk and curl counted as answered: $(( n - SP_SENT )) more, $verdict"
    AUDIT_LINE="$AUDIT_LINE"$'\n'"  (each wrk run stops with up to c requests in flight: journaled, not counted by wrk; 499 when nginx saw the client go first)"
    AUDIT_LINE="$AUDIT_LINE"$'\n'"  by status: $bystatus"
    AUDIT_LINE="$AUDIT_LINE"$'\n'"  gateway_us (the module's own time per request, from the audit rows), 200s: $gw"
    if [ "${bad:-0}" != 0 ] && grep -q '^429' <<<"$(tr ',' '\n' <<<"$bystatus")"; then
        # what limit refused them: one more request shows OpenAI's headers
        rl=$(curl -s -D - -o /dev/null "http://127.0.0.1:$SP_PORT/v1/openai/chat/completions" \
             -H "Authorization: Bearer $SP_KEY" -H 'Content-Type: application/json' \
             -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8}' \
             | tr -d '\r' | grep -i '^x-ratelimit-limit\|^HTTP/' | paste -sd' ' -)
        AUDIT_LINE="$AUDIT_LINE"$'\n'"  WARNING: 429s from a rate limit nobody set (the admin API sets none); a request now: $rl"
    fi
    if [ -n "$BUDGET_ID" ]; then
        sp=$(curl -s -H "Authorization: Bearer $SP_ADMIN" "$SP_API/budgets/$BUDGET_ID/spend")
        AUDIT_LINE="$AUDIT_LINE"$'\n'"budget: GET /budgets/$BUDGET_ID/spend -> $sp; audit_logs sum(cost_nano) $costn"
    fi
fi

# ------------------------------------------------------------ report

{
    if [ "$REPS" -gt 0 ]; then
        cat "$OUTFILE"
    fi
    if [ ${#VERIFY[@]} -gt 0 ]; then
        echo
        echo "Spendpol governs (checked before the runs):"
        for l in "${VERIFY[@]}"; do echo "  $l"; done
    fi
    [ -n "$SWAPF" ] && [ -f "$SWAPF" ] && { echo; cat "$SWAPF"; }
    [ -n "$AUDIT_LINE" ] && { echo; echo "$AUDIT_LINE"; }
    [ "$SOAK" -gt 0 ] && [ -f "${SOAKF:-/nonexistent}" ] && { echo; cat "$SOAKF"; }
} | tee "$RESULTS/report-$STAMP.txt"
[ "$REPS" -gt 0 ] && cp "$RESULTS/report-$STAMP.txt" "$OUTFILE"
log "report: $RESULTS/report-$STAMP.txt"
if [ "${BENCH_HOLD:-0}" -gt 0 ]; then
    log "holding the stack ${BENCH_HOLD}s for inspection: mock :$MOCK_PORT${PLAIN_PORT:+ nginx :$PLAIN_PORT}${SP_PORT:+ spendpol :$SP_PORT api :$API_PORT pg :$PG_PORT key $SP_KEY admin $SP_ADMIN}${PK_PORT:+ portkey :$PK_PORT} data $WORK"
    sleep "$BENCH_HOLD" &
    wait $!
fi
exit 0
