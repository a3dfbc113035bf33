# Spendpol: shell pieces that start and stop the stack's parts.
#
# Sourced by scripts/run.sh and called (through scripts/stack.sh) by the
# integration-test harness, so `make run` and `make test` start the stack
# exactly the same way. Functions only; nothing runs on source.
#
# Layout of a data dir D:
#   D/pg/data          private PostgreSQL cluster (unless a database URL is given)
#   D/pg/run           its unix socket dir
#   D/redis/           private Redis working dir and pid file
#   D/nginx/           generated nginx.conf, pid, *_temp dirs
#   D/journal/         the module's journal, tailed by controld
#   D/logs/            postgres.log redis.log error.log (nginx) controld.*
#   D/controld/        controld's own state (0700): master.key, admin.key (0600)
#   D/logs/san/        sanitizer reports of nginx workers (sanitizer builds)
#
# Started as root, nothing but the nginx master stays root: PostgreSQL runs
# as postgres, controld and Redis as $SPENDPOL_USER (default spendpol), the
# nginx workers as $SPENDPOL_NGINX_USER (default spendpol-nginx) with
# controld's group, so they read the snapshot dir (0750) and write nothing
# there. The users are created when missing (sp_ensure_users).

SP_REPO_ROOT="${SP_REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"

sp_log() { printf '[spendpol] %s\n' "$*" >&2; }
sp_die() { printf '[spendpol] error: %s\n' "$*" >&2; exit 1; }

# absolute path of an existing or to-be-created path
sp_abs() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *)  printf '%s/%s\n' "$(pwd)" "${1#./}" ;;
    esac
}

sp_is_root() { [ "$(id -u)" -eq 0 ]; }

sp_user() { printf '%s\n' "${SPENDPOL_USER:-spendpol}"; }
sp_nginx_user() { printf '%s\n' "${SPENDPOL_NGINX_USER:-spendpol-nginx}"; }
# controld's group: the nginx workers run with it to read the snapshot dir
sp_group() { id -gn "$(sp_user)"; }

# sp_ensure_users: as root, the system users controld and the nginx workers
# run as, created when missing (no home, no shell)
sp_ensure_users() {
    sp_is_root || return 0
    local u
    for u in "$(sp_user)" "$(sp_nginx_user)"; do
        getent passwd "$u" >/dev/null && continue
        sp_log "creating system user $u"
        useradd --system --user-group --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin "$u" 2>/dev/null \
            || getent passwd "$u" >/dev/null \
            || sp_die "cannot create the system user $u (useradd)"
    done
}

# sp_controld_dir DATA: controld's state dir (its SPENDPOL_DATA_DIR). Keys
# an older version kept in DATA itself move there.
sp_controld_dir() {
    local data dir f
    data=$(sp_abs "$1"); dir="$data/controld"
    mkdir -p "$dir"
    chmod 0700 "$dir"
    for f in master.key admin.key; do
        if [ -f "$data/$f" ] && [ ! -e "$dir/$f" ]; then
            mv "$data/$f" "$dir/$f"
        fi
    done
    if sp_is_root; then
        sp_ensure_users
        chown -R "$(sp_user):" "$dir"
    fi
    printf '%s\n' "$dir"
}

# Where controld publishes snapshots for this data dir: tmpfs, unique per
# data dir so parallel stacks never share one.
sp_snapshot_dir() {
    local data h base=/dev/shm
    data=$(sp_abs "$1")
    [ -d "$base" ] && [ -w "$base" ] || base=${TMPDIR:-/tmp}
    h=$(printf '%s' "$data" | sha256sum | cut -c1-12)
    printf '%s/spendpol-%s\n' "$base" "$h"
}

# A TCP port on 127.0.0.1 that nothing answers on.
sp_free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$(( 10000 + (RANDOM * 32768 + RANDOM) % 22000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    sp_die "no free port found"
}

# true when something accepts connections on host:port
sp_port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

sp_host_of() { printf '%s\n' "${1%:*}"; }
sp_port_of() { printf '%s\n' "${1##*:}"; }

# ---------------------------------------------------------------- PostgreSQL

sp_pg_bindir() {
    local d
    if [ -n "${SPENDPOL_PG_BINDIR:-}" ]; then printf '%s\n' "$SPENDPOL_PG_BINDIR"; return; fi
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
    if [ -n "$d" ] && [ -x "$d/pg_ctl" ]; then printf '%s\n' "$d"; return; fi
    d=$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/pg_ctl)")
    [ -x "$d/pg_ctl" ] || sp_die "PostgreSQL server binaries not found (install postgresql: make deps)"
    printf '%s\n' "$d"
}

# run a command as the postgres user when we are root (initdb refuses root)
sp_as_pg() {
    if sp_is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# run a command as controld's user when we are root
sp_as_user() {
    if sp_is_root; then
        runuser -u "$(sp_user)" -- "$@"
    else
        "$@"
    fi
}

# Make every ancestor of $1 traversable (x only) by the postgres user.
sp_make_traversable() {
    sp_is_root || return 0
    local d
    d=$(sp_abs "$1")
    while [ "$d" != "/" ] && [ -n "$d" ]; do
        if [ -d "$d" ] && ! runuser -u postgres -- test -x "$d" 2>/dev/null; then
            sp_log "chmod o+x $d (PostgreSQL runs as the postgres user and must reach its data dir)"
            chmod o+x "$d" || sp_die "cannot make $d traversable for the postgres user"
        fi
        d=$(dirname "$d")
    done
}

# sp_pg_start DATA PORT: init (first time) and start the private cluster.
# SPENDPOL_PG_FAST=1 turns off fsync (tests only).
sp_pg_start() {
    local data port bindir pgdir pgdata sock log
    data=$(sp_abs "$1"); port=$2
    bindir=$(sp_pg_bindir)
    pgdir="$data/pg"; pgdata="$pgdir/data"; sock="$pgdir/run"
    mkdir -p "$data/logs" "$pgdir" "$sock"
    log="$data/logs/postgres.log"
    touch "$log"
    if sp_is_root; then
        chown postgres: "$pgdir" "$sock" "$log"
        [ -d "$pgdata" ] && chown -R postgres: "$pgdata"
        chmod 0755 "$data" "$data/logs"
        sp_make_traversable "$pgdir"
    fi
    if [ ! -f "$pgdata/PG_VERSION" ]; then
        sp_log "initdb $pgdata"
        rm -rf "$pgdata"
        sp_as_pg mkdir -p "$pgdata"
        sp_as_pg "$bindir/initdb" -D "$pgdata" -A trust -U postgres -E UTF8 \
            --locale=C >"$data/logs/initdb.log" 2>&1 \
            || { tail -n 20 "$data/logs/initdb.log" >&2; sp_die "initdb failed"; }
    fi
    if sp_as_pg "$bindir/pg_ctl" status -D "$pgdata" >/dev/null 2>&1; then
        sp_log "PostgreSQL already running in $pgdata"
        return 0
    fi
    # a stale pid file from a killed run would stop the start
    rm -f "$pgdata/postmaster.pid"
    local opts="-p $port -c listen_addresses=127.0.0.1 -k $sock -c max_connections=100"
    if [ "${SPENDPOL_PG_FAST:-0}" = 1 ]; then
        opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    sp_as_pg "$bindir/pg_ctl" start -D "$pgdata" -w -t 60 -l "$log" -o "$opts" >/dev/null \
        || { tail -n 20 "$log" >&2; sp_die "PostgreSQL did not start (port $port)"; }
}

sp_pg_stop() {
    local data bindir pgdata
    data=$(sp_abs "$1")
    pgdata="$data/pg/data"
    [ -f "$pgdata/PG_VERSION" ] || return 0
    bindir=$(sp_pg_bindir)
    if sp_as_pg "$bindir/pg_ctl" status -D "$pgdata" >/dev/null 2>&1; then
        sp_as_pg "$bindir/pg_ctl" stop -D "$pgdata" -m fast -w -t 60 >/dev/null 2>&1 \
            || sp_as_pg "$bindir/pg_ctl" stop -D "$pgdata" -m immediate -w >/dev/null 2>&1 || true
    fi
}

# pid of the postmaster, or nothing
sp_pg_pid() {
    local f
    f="$(sp_abs "$1")/pg/data/postmaster.pid"
    [ -f "$f" ] && head -n1 "$f"
}

sp_pg_url() { printf 'postgresql://postgres@127.0.0.1:%s/postgres\n' "$1"; }

# --------------------------------------------------------------------- Redis

# sp_redis_start DATA PORT: private, no persistence, daemonized with a pid file.
sp_redis_start() {
    local data port dir pidf i
    data=$(sp_abs "$1"); port=$2
    dir="$data/redis"; pidf="$dir/redis.pid"
    mkdir -p "$dir" "$data/logs"
    if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
        sp_log "Redis already running (pid $(cat "$pidf"))"
        return 0
    fi
    rm -f "$pidf"
    command -v redis-server >/dev/null || sp_die "redis-server not found (make deps)"
    touch "$data/logs/redis.log"
    if sp_is_root; then
        sp_ensure_users
        chown "$(sp_user):" "$dir" "$data/logs/redis.log"
        chmod 0700 "$dir"
    fi
    sp_as_user redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" \
        --appendonly no --daemonize yes --pidfile "$pidf" \
        --logfile "$data/logs/redis.log" --protected-mode yes >/dev/null \
        || sp_die "redis-server failed to start"
    for i in $(seq 1 100); do
        if sp_redis_ping "$port"; then return 0; fi
        sleep 0.1
    done
    tail -n 20 "$data/logs/redis.log" >&2
    sp_die "Redis did not answer on port $port"
}

sp_redis_ping() {
    local port=$1 reply
    if command -v redis-cli >/dev/null; then
        [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]
        return
    fi
    exec 3<>"/dev/tcp/127.0.0.1/$port" 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    read -r -t 2 reply <&3 || true
    exec 3>&-
    [ "${reply%$'\r'}" = "+PONG" ]
}

sp_redis_pid() {
    local f
    f="$(sp_abs "$1")/redis/redis.pid"
    [ -f "$f" ] && cat "$f"
}

sp_redis_stop() {
    local pid i
    pid=$(sp_redis_pid "$1") || return 0
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# --------------------------------------------------------------- sanitizers

# true when the binaries in BUILDDIR are built with ASan
sp_is_san() {
    local build=$1
    case "${SPENDPOL_SANITIZE:-}" in 1) return 0 ;; 0) return 1 ;; esac
    case "$build" in */san|*/san/) return 0 ;; esac
    grep -qa 'libasan\.so' "$build/nginx/objs/ngx_http_spendpol_module.so" 2>/dev/null
}

# real path of a gcc runtime library (libasan.so, libubsan.so)
sp_gcc_lib() {
    local f
    f=$(gcc -print-file-name="$1" 2>/dev/null || true)
    if [ -n "$f" ] && [ -e "$f" ]; then readlink -f "$f"; return; fi
    for f in /usr/lib/x86_64-linux-gnu/"$1".* /usr/lib/*-linux-gnu/"$1".*; do
        [ -e "$f" ] && { readlink -f "$f"; return; }
    done
    return 1
}

# --------------------------------------------------------------------- nginx

sp_module_so() { printf '%s/nginx/objs/ngx_http_spendpol_module.so\n' "$(sp_abs "$1")"; }

# sp_nginx_conf DATA BUILDDIR PROXY_LISTEN: writes DATA/nginx/nginx.conf,
# prints its path. SPENDPOL_REGION, SPENDPOL_SNAPSHOT_DIR, SPENDPOL_JOURNAL,
# SPENDPOL_MAX_BODY_SIZE are honoured; SPENDPOL_NGINX_HTTP is copied into
# the http block as it is (tests: a resolver, spendpol_upstream_* settings).
sp_nginx_conf() {
    local data build listen conf snap journal region so user_line="" maxbody=""
    data=$(sp_abs "$1"); build=$(sp_abs "$2"); listen=$3
    so=$(sp_module_so "$build")
    snap=${SPENDPOL_SNAPSHOT_DIR:-$(sp_snapshot_dir "$data")}
    journal=${SPENDPOL_JOURNAL:-$data/journal/journal.log}
    region=${SPENDPOL_REGION:-local}
    mkdir -p "$data/nginx" "$data/logs" "$(dirname "$journal")"
    if sp_is_root; then
        # the master opens the journal as root; controld's group reads it
        sp_ensure_users
        user_line="user $(sp_nginx_user) $(sp_group);"
        chgrp "$(sp_group)" "$(dirname "$journal")"
        chmod 0750 "$(dirname "$journal")"
    else
        # controld makes it when it runs as root (owned by its user)
        mkdir -p "$snap"
    fi
    [ -n "${SPENDPOL_MAX_BODY_SIZE:-}" ] && maxbody="spendpol_max_body_size ${SPENDPOL_MAX_BODY_SIZE};"
    conf="$data/nginx/nginx.conf"
    cat >"$conf" <<EOF
# generated by scripts/stack.sh for $data -- do not edit, rewritten at start
$user_line
daemon off;
master_process on;
worker_processes 2;
pid $data/nginx/nginx.pid;
error_log $data/logs/error.log info;

load_module $so;

events {
    worker_connections 1024;
}

http {
    access_log $data/logs/access.log;
    client_body_temp_path $data/nginx/client_body_temp;
    proxy_temp_path       $data/nginx/proxy_temp;
    fastcgi_temp_path     $data/nginx/fastcgi_temp;
    uwsgi_temp_path       $data/nginx/uwsgi_temp;
    scgi_temp_path        $data/nginx/scgi_temp;
    ${SPENDPOL_NGINX_HTTP:-}

    server {
        listen $listen;
        server_name _;

        location /v1/ {
            spendpol on;
            spendpol_snapshot $snap;
            spendpol_journal $journal;
            spendpol_region $region;
            $maxbody
        }

        location = /healthz {
            default_type text/plain;
            return 200 "ok\n";
        }
    }
}
EOF
    printf '%s\n' "$conf"
}

# sp_nginx_exec DATA BUILDDIR: replaces the shell with nginx in the foreground
# (the conf must have been written by sp_nginx_conf). A sanitized module is
# loaded into Debian's uninstrumented nginx with the runtimes preloaded.
sp_nginx_exec() {
    local data build conf asan ubsan
    data=$(sp_abs "$1"); build=$(sp_abs "$2")
    conf="$data/nginx/nginx.conf"
    [ -f "$conf" ] || sp_die "no $conf (run nginx-conf first)"
    [ -f "$(sp_module_so "$build")" ] || sp_die "module not built: $(sp_module_so "$build") (make build)"
    if sp_is_san "$build"; then
        asan=$(sp_gcc_lib libasan.so) || sp_die "libasan not found"
        ubsan=$(sp_gcc_lib libubsan.so) || sp_die "libubsan not found"
        # the workers' reports: in a directory they may write (made
        # before the runtimes are preloaded into every command)
        mkdir -p "$data/logs/san"
        if sp_is_root; then chown "$(sp_nginx_user):" "$data/logs/san"; fi
        export LD_PRELOAD="$asan $ubsan"
        export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:log_path=$data/logs/san/asan"
        export UBSAN_OPTIONS="print_stacktrace=1:log_path=$data/logs/san/ubsan"
    fi
    exec /usr/sbin/nginx -p "$data/nginx/" -c "$conf" -e "$data/logs/error.log"
}

sp_nginx_test() {
    local data build
    data=$(sp_abs "$1"); build=$(sp_abs "$2")
    (
        if sp_is_san "$build"; then
            export LD_PRELOAD="$(sp_gcc_lib libasan.so) $(sp_gcc_lib libubsan.so)"
            export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:log_path=$data/logs/asan"
            export UBSAN_OPTIONS="print_stacktrace=1:log_path=$data/logs/ubsan"
        fi
        /usr/sbin/nginx -t -q -p "$data/nginx/" -c "$data/nginx/nginx.conf" -e "$data/logs/error.log"
    )
}

# ------------------------------------------------------------------ controld

# sp_controld_exec DATA BUILDDIR API_LISTEN DATABASE_URL REDIS_URL: replaces
# the shell with controld in the foreground, environment set.
sp_controld_exec() {
    local data build
    data=$(sp_abs "$1"); build=$(sp_abs "$2")
    [ -x "$build/controld" ] || sp_die "controld not built: $build/controld (make build)"
    mkdir -p "$data/journal" "$data/logs"
    export SPENDPOL_DATA_DIR
    SPENDPOL_DATA_DIR=$(sp_controld_dir "$data")
    sp_is_root && export SPENDPOL_USER="$(sp_user)"
    export SPENDPOL_API_LISTEN="$3"
    export SPENDPOL_DATABASE_URL="$4"
    export SPENDPOL_REDIS_URL="$5"
    export SPENDPOL_SNAPSHOT_DIR="${SPENDPOL_SNAPSHOT_DIR:-$(sp_snapshot_dir "$data")}"
    export SPENDPOL_JOURNAL="${SPENDPOL_JOURNAL:-$data/journal/journal.log}"
    export SPENDPOL_MIGRATIONS_DIR="${SPENDPOL_MIGRATIONS_DIR:-$SP_REPO_ROOT/migrations}"
    if sp_is_san "$build"; then
        export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
        export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
    fi
    exec "$build/controld"
}
