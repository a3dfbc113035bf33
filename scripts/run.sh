#!/usr/bin/env bash
# `make run`: PostgreSQL, Redis, controld and nginx with the Spendpol module,
# in the foreground. Ctrl-C (SIGINT) or SIGTERM stops everything it started.
#
# Env:
#   SPENDPOL_PROXY_LISTEN   proxy address          (default 127.0.0.1:8080)
#   SPENDPOL_API_LISTEN     admin API address      (default 127.0.0.1:8081)
#   SPENDPOL_DATA_DIR       state                  (default <repo>/.run)
#   SPENDPOL_BUILD_DIR      binaries               (default <repo>/build)
#   SPENDPOL_ADMIN_KEY      bootstrap admin key    (generated when unset)
#   SPENDPOL_REGION         X-Spendpol-Region      (default local)
#   DATABASE_URL / SPENDPOL_DATABASE_URL   use this PostgreSQL instead of a private one
#                                          (controld's runtime role; see docs/security.md)
#   SPENDPOL_MIGRATE_DATABASE_URL          the tables' owner, for migrations (with the above)
#   SPENDPOL_API_DATABASE_URL              the admin API's tenant role, member of spendpol_app only (with the above)
#   REDIS_URL / SPENDPOL_REDIS_URL         use this Redis instead of a private one
#   SPENDPOL_API_DATABASE_URL, SPENDPOL_MIGRATE_DATABASE_URL   with your own PostgreSQL: the tenant and owner roles
#   SPENDPOL_USER / SPENDPOL_NGINX_USER    as root: controld+Redis / nginx workers run as these (default spendpol / spendpol-nginx)
#   SPENDPOL_UPSTREAM_ALLOW                outbound CIDRs and names beyond https to public addresses
#   SPENDPOL_PG_PORT / SPENDPOL_REDIS_PORT ports of the private ones (chosen once, kept in the data dir)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/stack.sh
. "$ROOT/scripts/lib/stack.sh"
STACK="$ROOT/scripts/stack.sh"

PROXY_LISTEN=${SPENDPOL_PROXY_LISTEN:-127.0.0.1:8080}
API_LISTEN=${SPENDPOL_API_LISTEN:-127.0.0.1:8081}
DATA=$(sp_abs "${SPENDPOL_DATA_DIR:-$ROOT/.run}")
BUILD=$(sp_abs "${SPENDPOL_BUILD_DIR:-$ROOT/build}")
DB_URL=${SPENDPOL_DATABASE_URL:-${DATABASE_URL:-}}
MIGRATE_URL=${SPENDPOL_MIGRATE_DATABASE_URL:-}
API_DB_URL=${SPENDPOL_API_DATABASE_URL:-}
R_URL=${SPENDPOL_REDIS_URL:-${REDIS_URL:-}}

[ -x "$BUILD/controld" ] || sp_die "$BUILD/controld is not built: run 'make run' (or 'make build')"
[ -f "$(sp_module_so "$BUILD")" ] || sp_die "$(sp_module_so "$BUILD") is not built: run 'make run' (or 'make build')"

mkdir -p "$DATA/logs" "$DATA/journal"
chmod 0755 "$DATA"

for l in "$PROXY_LISTEN" "$API_LISTEN"; do
    if sp_port_open "$(sp_host_of "$l")" "$(sp_port_of "$l")"; then
        sp_die "$l is already in use (another 'make run'?); set SPENDPOL_PROXY_LISTEN / SPENDPOL_API_LISTEN"
    fi
done

# Private PostgreSQL/Redis ports: chosen once, kept in the data dir, so a
# second start finds the same cluster on the same port.
PORTS="$DATA/ports.env"
PG_PORT=${SPENDPOL_PG_PORT:-}
REDIS_PORT=${SPENDPOL_REDIS_PORT:-}
if [ -f "$PORTS" ]; then
    # shellcheck disable=SC1090
    . "$PORTS"
    PG_PORT=${SPENDPOL_PG_PORT:-$SAVED_PG_PORT}
    REDIS_PORT=${SPENDPOL_REDIS_PORT:-$SAVED_REDIS_PORT}
fi
[ -n "$PG_PORT" ] || PG_PORT=$(sp_free_port)
[ -n "$REDIS_PORT" ] || REDIS_PORT=$(sp_free_port)
# a saved port that something else took meanwhile: choose another
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
if [ -z "$DB_URL" ] && [ -z "${SPENDPOL_PG_PORT:-}" ] && sp_port_open 127.0.0.1 "$PG_PORT" \
    && ! alive "$(sp_pg_pid "$DATA" 2>/dev/null)"; then
    sp_log "port $PG_PORT is taken; PostgreSQL moves to another"
    PG_PORT=$(sp_free_port)
fi
if [ -z "$R_URL" ] && [ -z "${SPENDPOL_REDIS_PORT:-}" ] && sp_port_open 127.0.0.1 "$REDIS_PORT" \
    && ! alive "$(sp_redis_pid "$DATA" 2>/dev/null)"; then
    sp_log "port $REDIS_PORT is taken; Redis moves to another"
    REDIS_PORT=$(sp_free_port)
fi
printf 'SAVED_PG_PORT=%s\nSAVED_REDIS_PORT=%s\n' "$PG_PORT" "$REDIS_PORT" >"$PORTS"

# --------------------------------------------------------------- lifecycle

STARTED_PG=0
STARTED_REDIS=0
CONTROLD_PID=
NGINX_PID=
NGINX_WORKERS=
STOPPING=0

# stop_pid PID SIGNAL SECONDS: sends SIGNAL every second (one that arrives
# before the process has set up its handlers is lost), up to SECONDS; then
# SIGKILL to it and to its children (nginx workers outlive a killed master).
stop_pid() {
    local pid=$1 sig=$2 secs=$3 i kids
    [ -n "$pid" ] || return 0
    for i in $(seq 0 $((secs * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        [ $((i % 10)) = 0 ] && kill -"$sig" "$pid" 2>/dev/null
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        sp_log "pid $pid did not stop on SIG$sig within ${secs}s: killing it"
        kids=$(ps -o pid= --ppid "$pid" 2>/dev/null)
        kill -KILL "$pid" $kids 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    return 0
}

stop_all() {
    [ $STOPPING = 1 ] && return
    STOPPING=1
    local pid
    # workers of an nginx master that died outlive it: end them too
    if [ -n "$NGINX_PID" ] && ! kill -0 "$NGINX_PID" 2>/dev/null; then
        for pid in $NGINX_WORKERS; do
            [ "$(ps -o comm= -p "$pid" 2>/dev/null)" = nginx ] && kill -KILL "$pid" 2>/dev/null
        done
    fi
    # nginx first (graceful: in-flight requests finish and are journaled),
    # then controld (its last ingest sees the whole journal)
    stop_pid "$NGINX_PID" QUIT 10
    stop_pid "$CONTROLD_PID" TERM 10
    [ $STARTED_REDIS = 1 ] && sp_redis_stop "$DATA"
    [ $STARTED_PG = 1 ] && sp_pg_stop "$DATA"
    return 0
}

# The signal trap only sets a flag; stopping happens in the main flow
# (bash re-raises SIGINT in subshells started from inside a trap handler).
GOT_SIGNAL=0
check_signal() {
    [ $GOT_SIGNAL = 1 ] || return 0
    trap '' INT TERM
    sp_log "stopping"
    stop_all
    sp_log "stopped"
    exit 0
}

died() { # name logfile...
    local name=$1; shift
    # Ctrl-C in a terminal signals the whole process group: nginx and
    # controld may stop before this script has seen its own SIGINT.
    sleep 0.3
    check_signal
    sp_log "$name exited unexpectedly; last lines of its log:"
    for f in "$@"; do
        [ -s "$f" ] || continue
        echo "--- $f" >&2
        tail -n 25 "$f" >&2
    done
    stop_all
    exit 1
}

trap 'GOT_SIGNAL=1' INT TERM
trap 'stop_all' EXIT
# From here on a command killed by the terminal's SIGINT must not end the
# script before it has stopped what it started: errors are checked explicitly.
set +e
# nginx and controld run in sessions of their own, so Ctrl-C reaches only
# this script, which stops them in order (nginx first, so the journal is
# complete before controld's last ingest). PostgreSQL (pg_ctl) and Redis
# (daemonized) detach themselves.
SETSID=
command -v setsid >/dev/null && SETSID=setsid

# ---------------------------------------------------------------- start

if [ -z "$DB_URL" ]; then
    sp_log "PostgreSQL on 127.0.0.1:$PG_PORT ($DATA/pg)"
    sp_pg_start "$DATA" "$PG_PORT"
    STARTED_PG=1
    # passwords are in $DATA/pg/pgpass (0600), named by the URLs
    DB_URL=$(sp_pg_url "$PG_PORT" "$DATA")
    MIGRATE_URL=$(sp_pg_owner_url "$PG_PORT" "$DATA")
    API_DB_URL=$(sp_pg_api_url "$PG_PORT" "$DATA")
fi
if [ -z "$R_URL" ]; then
    sp_log "Redis on 127.0.0.1:$REDIS_PORT"
    sp_redis_start "$DATA" "$REDIS_PORT"
    STARTED_REDIS=1
    R_URL="redis://127.0.0.1:$REDIS_PORT"
fi
check_signal

# The snapshot dir steers every nginx worker: controld refuses one that
# others can write to or read. A fresh one is made private here (as
# controld would); one an earlier make run left at 0755 is tightened, as
# it is ours and nobody else could write into it. Anything else (another
# owner, group/other-writable, a link) is left for controld to refuse.
# As root, controld makes it itself, owned by the user it runs as.
SNAP=${SPENDPOL_SNAPSHOT_DIR:-$(sp_snapshot_dir "$DATA")}
if sp_is_root; then
    :
elif [ ! -e "$SNAP" ] && [ ! -L "$SNAP" ]; then
    mkdir -p -m 0700 "$SNAP"
elif [ -d "$SNAP" ] && [ ! -L "$SNAP" ] && [ -O "$SNAP" ] \
    && [ -z "$(find "$SNAP" -maxdepth 0 -perm /022)" ]; then
    chmod go-rwx "$SNAP"
fi

# The admin key is shown once: when controld creates admin.key on this
# start. It reaches this terminal only, never a log file.
# (An older version kept it in $DATA itself; controld-exec moves it.)
KEYFILE="$DATA/controld/admin.key"
NEW_ADMIN_KEY=0
[ -z "${SPENDPOL_ADMIN_KEY:-}" ] && [ ! -f "$KEYFILE" ] && [ ! -f "$DATA/admin.key" ] && NEW_ADMIN_KEY=1

sp_log "controld on $API_LISTEN"
: >"$DATA/logs/controld.out"
# controld prints a key it generates on stdout: that line never reaches
# the log file (the key is in admin.key, shown below)
$SETSID bash "$STACK" controld-exec "$DATA" "$BUILD" "$API_LISTEN" "$DB_URL" "$R_URL" \
    "$MIGRATE_URL" "$API_DB_URL" \
    > >(sed -u '/admin key: sp_key_/d' >>"$DATA/logs/controld.out") \
    2>>"$DATA/logs/controld.err" &
CONTROLD_PID=$!
for i in $(seq 1 600); do
    grep -q 'controld ready' "$DATA/logs/controld.out" 2>/dev/null && break
    check_signal
    kill -0 "$CONTROLD_PID" 2>/dev/null || died controld "$DATA/logs/controld.out" "$DATA/logs/controld.err"
    sleep 0.1
done
grep -q 'controld ready' "$DATA/logs/controld.out" \
    || { sp_log "controld printed no ready line within 60 s"; died controld "$DATA/logs/controld.out" "$DATA/logs/controld.err"; }

ADMIN_FROM="\$(cat $KEYFILE)"
if [ $NEW_ADMIN_KEY = 1 ] && [ -f "$KEYFILE" ]; then
    ADMIN_LINE="admin key: $(tr -d ' \n\r' <"$KEYFILE")   (shown once; kept in $KEYFILE, mode 0600)"
elif [ -n "${SPENDPOL_ADMIN_KEY:-}" ] && [ ! -f "$KEYFILE" ]; then
    ADMIN_FROM="\$SPENDPOL_ADMIN_KEY"
    ADMIN_LINE="admin key: the one you set in SPENDPOL_ADMIN_KEY (it only seeds an empty database)"
else
    ADMIN_LINE="admin key: in $KEYFILE (mode 0600)"
fi

sp_log "nginx on $PROXY_LISTEN"
sp_nginx_conf "$DATA" "$BUILD" "$PROXY_LISTEN" >/dev/null
$SETSID bash "$STACK" nginx-exec "$DATA" "$BUILD" >>"$DATA/logs/nginx.out" 2>>"$DATA/logs/nginx.err" &
NGINX_PID=$!
PROXY_HOST=$(sp_host_of "$PROXY_LISTEN"); PROXY_PORT=$(sp_port_of "$PROXY_LISTEN")
for i in $(seq 1 300); do
    check_signal
    kill -0 "$NGINX_PID" 2>/dev/null || died nginx "$DATA/logs/error.log" "$DATA/logs/nginx.err"
    if curl -s -o /dev/null --max-time 1 "http://$PROXY_LISTEN/healthz"; then break; fi
    sleep 0.1
done
curl -s -o /dev/null --max-time 2 "http://$PROXY_LISTEN/healthz" \
    || { sp_log "nginx does not answer on $PROXY_LISTEN"; died nginx "$DATA/logs/error.log" "$DATA/logs/nginx.err"; }

API="http://$API_LISTEN"
PROXY="http://$PROXY_LISTEN"
cat <<EOF
spendpol ready: proxy $PROXY/v1/{provider}/  admin API $API  data $DATA  (Ctrl-C stops)

  $ADMIN_LINE

  # try it (copy-paste):
  ADMIN=$ADMIN_FROM
  # a key for your application (shown once):
  curl -s -X POST $API/api-keys -H "Authorization: Bearer \$ADMIN" -H 'Content-Type: application/json' -d '{"name":"demo"}'
  KEY=sp_key_...   # the "key" from the answer above
  # your organisation's OpenAI key, stored encrypted:
  curl -s -X PUT $API/providers/openai -H "Authorization: Bearer \$ADMIN" -H 'Content-Type: application/json' -d '{"api_key":"sk-..."}'
  # point any OpenAI SDK at Spendpol:
  export OPENAI_BASE_URL=$PROXY/v1/openai OPENAI_API_KEY=\$KEY
  curl -s $PROXY/v1/openai/chat/completions -H "Authorization: Bearer \$KEY" -H 'Content-Type: application/json' \\
       -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}' -D -
  # what it cost:
  curl -s -H "Authorization: Bearer \$ADMIN" $API/audit-logs
  # metrics (Prometheus): the proxy's, and controld's (an operator key or SPENDPOL_METRICS_TOKEN)
  curl -s $PROXY/metrics
  curl -s -H "Authorization: Bearer \$ADMIN" $API/metrics
  # the API, described: $API/openapi.json

  logs: $DATA/logs/
EOF

# ---------------------------------------------------------------- watch

while :; do
    check_signal
    NGINX_WORKERS=$(ps -o pid= --ppid "$NGINX_PID" 2>/dev/null | tr -d ' ' | tr '\n' ' ' || true)
    kill -0 "$CONTROLD_PID" 2>/dev/null || died controld "$DATA/logs/controld.err" "$DATA/logs/controld.out"
    kill -0 "$NGINX_PID" 2>/dev/null || died nginx "$DATA/logs/error.log" "$DATA/logs/nginx.err"
    if [ $STARTED_PG = 1 ]; then
        pid=$(sp_pg_pid "$DATA" || true)
        { [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; } || died postgresql "$DATA/logs/postgres.log"
    fi
    if [ $STARTED_REDIS = 1 ]; then
        pid=$(sp_redis_pid "$DATA" || true)
        { [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; } || died redis "$DATA/logs/redis.log"
    fi
    sleep 1 &
    wait $! || true
done
