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

# Database roles of the private cluster (docs/security.md "Database roles"):
#   postgres           superuser; its password is in D/pg/superuser.pgpass,
#                      used only by these functions (init, upgrade, roles)
#   spendpol_owner     LOGIN BYPASSRLS, owns the schema and the tables, runs
#                      the migrations (SPENDPOL_MIGRATE_DATABASE_URL)
#   spendpol_controld  LOGIN NOINHERIT, member of spendpol_system only,
#                      owns nothing (SPENDPOL_DATABASE_URL)
#   spendpol_api       LOGIN NOINHERIT, member of spendpol_app only, owns
#                      nothing: the admin API's tenant statements
#                      (SPENDPOL_API_DATABASE_URL); an injected SET ROLE
#                      cannot reach spendpol_system from it
# The login passwords are in D/pg/pgpass (mode 0600), named by the URLs'
# passfile= parameter, so no password is in an argv or an environment.
# Every connection, the unix socket included, needs a password
# (scram-sha-256); the cluster is never initialised with trust.

SP_PG_OWNER=spendpol_owner
SP_PG_RUNTIME=spendpol_controld
SP_PG_API=spendpol_api
SP_PG_DB=postgres

# 48 hex digits: nothing a pgpass line would need to escape
sp_pg_password() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }

# sp_pg_hba PGDATA: passwords only, loopback only
sp_pg_hba() {
    sp_as_pg sh -c "cat >'$1/pg_hba.conf'" <<'EOF'
# written by scripts/lib/stack.sh: every connection needs a password
# (scram-sha-256); there is no trust line. TYPE DATABASE USER ADDRESS METHOD
local   all       all                 scram-sha-256
host    all       all   127.0.0.1/32  scram-sha-256
host    all       all   ::1/128       scram-sha-256
EOF
}

# sp_pg_su DATA PORT psql-args...: psql as the superuser over the socket
sp_pg_su() {
    local data=$1 port=$2
    shift 2
    PGPASSFILE="$data/pg/superuser.pgpass" "$(sp_pg_bindir)/psql" -X -q \
        -v ON_ERROR_STOP=1 -h "$data/pg/run" -p "$port" -U postgres \
        -d "$SP_PG_DB" "$@"
}

# sp_pg_roles DATA PORT: create the roles (first start, or a data dir from
# a version that connected as the superuser), give the owner what the
# superuser used to own. Idempotent; passwords go through stdin.
sp_pg_roles() {
    local data=$1 port=$2 pass="$1/pg/pgpass" owner_pw="" runtime_pw="" api_pw=""
    if [ -s "$pass" ]; then
        owner_pw=$(awk -F: -v u="$SP_PG_OWNER" '$4 == u { print $5 }' "$pass")
        runtime_pw=$(awk -F: -v u="$SP_PG_RUNTIME" '$4 == u { print $5 }' "$pass")
        api_pw=$(awk -F: -v u="$SP_PG_API" '$4 == u { print $5 }' "$pass")
        [ -n "$owner_pw" ] && [ -n "$runtime_pw" ] \
            || sp_die "$pass lacks a line for $SP_PG_OWNER or $SP_PG_RUNTIME"
    fi
    # a first start, or a data dir from before spendpol_api: new lines
    if [ ! -s "$pass" ] || [ -z "$api_pw" ]; then
        [ -n "$owner_pw" ] || owner_pw=$(sp_pg_password)
        [ -n "$runtime_pw" ] || runtime_pw=$(sp_pg_password)
        api_pw=$(sp_pg_password)
        ( umask 077
          printf '*:*:*:%s:%s\n*:*:*:%s:%s\n*:*:*:%s:%s\n' \
              "$SP_PG_OWNER" "$owner_pw" "$SP_PG_RUNTIME" "$runtime_pw" \
              "$SP_PG_API" "$api_pw" >"$pass.tmp" )
    fi
    sp_pg_su "$data" "$port" >/dev/null <<EOF \
        || sp_die "cannot create the database roles (see $data/logs/postgres.log)"
-- a failing statement is not copied into postgres.log: it holds passwords
SET log_min_error_statement = panic;
SET log_statement = none;
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'spendpol_app') THEN
        CREATE ROLE spendpol_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'spendpol_system')
    THEN
        CREATE ROLE spendpol_system NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$SP_PG_OWNER') THEN
        CREATE ROLE $SP_PG_OWNER;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$SP_PG_RUNTIME') THEN
        CREATE ROLE $SP_PG_RUNTIME;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$SP_PG_API') THEN
        CREATE ROLE $SP_PG_API;
    END IF;
END
\$\$;
ALTER ROLE spendpol_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
ALTER ROLE spendpol_system NOLOGIN NOSUPERUSER NOBYPASSRLS;
-- the owner bypasses RLS: migrations that fill tenant tables have no org
ALTER ROLE $SP_PG_OWNER LOGIN NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE
    PASSWORD '$owner_pw';
ALTER ROLE $SP_PG_RUNTIME LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB
    NOCREATEROLE NOINHERIT PASSWORD '$runtime_pw';
ALTER ROLE $SP_PG_API LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB
    NOCREATEROLE NOINHERIT PASSWORD '$api_pw';
-- one login per side: the tenant login cannot SET ROLE spendpol_system
-- (nor the system login spendpol_app); a cluster from the version with
-- one runtime login loses the second membership here
GRANT spendpol_system TO $SP_PG_RUNTIME;
GRANT spendpol_app TO $SP_PG_API;
-- (a REVOKE of what was never granted only warns: not worth stderr)
SET client_min_messages = error;
REVOKE spendpol_app FROM $SP_PG_RUNTIME;
REVOKE spendpol_system FROM $SP_PG_API;
RESET client_min_messages;
GRANT TEMPORARY ON DATABASE $SP_PG_DB TO spendpol_system;
ALTER SCHEMA public OWNER TO $SP_PG_OWNER;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
-- a data dir whose migrations ran as the superuser: the owner takes over
DO \$\$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.oid::regclass AS obj FROM pg_class c
              WHERE c.relnamespace = 'public'::regnamespace
                AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
                AND c.relowner <> '$SP_PG_OWNER'::regrole
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO $SP_PG_OWNER', r.obj);
    END LOOP;
    -- sequences of serial columns moved with their tables
    FOR r IN SELECT c.oid::regclass AS obj FROM pg_class c
              WHERE c.relnamespace = 'public'::regnamespace
                AND c.relkind = 'S'
                AND c.relowner <> '$SP_PG_OWNER'::regrole
    LOOP
        EXECUTE format('ALTER SEQUENCE %s OWNER TO $SP_PG_OWNER', r.obj);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS obj FROM pg_proc p
              WHERE p.pronamespace = 'public'::regnamespace
                AND p.proowner <> '$SP_PG_OWNER'::regrole
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO $SP_PG_OWNER', r.obj);
    END LOOP;
END
\$\$;
EOF
    [ -f "$pass.tmp" ] && mv -f "$pass.tmp" "$pass"
    chmod 0600 "$pass"
}

# sp_pg_start DATA PORT: init (first time) and start the private cluster.
# SPENDPOL_PG_FAST=1 turns off fsync (tests only).
sp_pg_start() {
    local data port bindir pgdir pgdata sock log su_pw upgrade=0
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
        rm -rf "$pgdata" "$pgdir/pgpass" "$pgdir/superuser.pgpass"
        sp_as_pg mkdir -p "$pgdata"
        su_pw=$(sp_pg_password)
        ( umask 077
          printf '*:*:*:postgres:%s\n' "$su_pw" >"$pgdir/superuser.pgpass" )
        # initdb reads the password from a file: it runs as postgres
        printf '%s\n' "$su_pw" \
            | sp_as_pg sh -c "umask 077; cat >'$pgdata.pw'"
        sp_as_pg "$bindir/initdb" -D "$pgdata" -A scram-sha-256 \
            --pwfile="$pgdata.pw" -U postgres -E UTF8 --locale=C \
            >"$data/logs/initdb.log" 2>&1 \
            || { rm -f "$pgdata.pw"; tail -n 20 "$data/logs/initdb.log" >&2
                 sp_die "initdb failed"; }
        rm -f "$pgdata.pw"
        sp_pg_hba "$pgdata"
    elif grep -Eq '^[[:space:]]*(local|host)[^#]*[[:space:]]trust([[:space:]]|$)' \
             "$pgdata/pg_hba.conf"; then
        # a data dir from a version that trusted every local connection
        sp_log "upgrading $pgdata: passwords (scram-sha-256) instead of trust"
        upgrade=1
    fi
    if sp_as_pg "$bindir/pg_ctl" status -D "$pgdata" >/dev/null 2>&1; then
        sp_log "PostgreSQL already running in $pgdata"
    else
        # a stale pid file from a killed run would stop the start
        rm -f "$pgdata/postmaster.pid"
        local opts="-p $port -c listen_addresses=127.0.0.1 -k $sock -c max_connections=100"
        opts="$opts -c password_encryption=scram-sha-256"
        if [ "${SPENDPOL_PG_FAST:-0}" = 1 ]; then
            opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        fi
        sp_as_pg "$bindir/pg_ctl" start -D "$pgdata" -w -t 60 -l "$log" -o "$opts" >/dev/null \
            || { tail -n 20 "$log" >&2; sp_die "PostgreSQL did not start (port $port)"; }
    fi
    if [ $upgrade = 1 ]; then
        # still trusted: give the superuser a password, then require them
        if [ ! -s "$pgdir/superuser.pgpass" ]; then
            ( umask 077
              printf '*:*:*:postgres:%s\n' "$(sp_pg_password)" \
                  >"$pgdir/superuser.pgpass" )
        fi
        su_pw=$(awk -F: '$4 == "postgres" { print $5 }' "$pgdir/superuser.pgpass")
        "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" \
            -U postgres -d "$SP_PG_DB" >/dev/null <<EOF \
            || sp_die "cannot set the superuser's password in $pgdata"
SET log_min_error_statement = panic;
SET log_statement = none;
ALTER ROLE postgres PASSWORD '$su_pw';
EOF
        sp_pg_hba "$pgdata"
        sp_as_pg "$bindir/pg_ctl" reload -D "$pgdata" >/dev/null \
            || sp_die "cannot reload $pgdata/pg_hba.conf"
    fi
    sp_pg_roles "$data" "$port"
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

# sp_pg_url PORT DATA: controld's runtime URL (the password is in the
# passfile, never in the URL). sp_pg_api_url: the admin API's tenant
# statements. sp_pg_owner_url: the migrations' URL.
# sp_pg_superuser_url: for these scripts and the tests that need one.
# a path as a URI query value (libpq decodes %XX)
sp_uri_path() {
    printf '%s' "$1" | sed -e 's/%/%25/g; s/ /%20/g; s/&/%26/g; s/#/%23/g' \
        -e 's/?/%3F/g; s/+/%2B/g; s/=/%3D/g'
}
sp_pg_url() {
    printf 'postgresql://%s@127.0.0.1:%s/%s?passfile=%s\n' "$SP_PG_RUNTIME" \
        "$1" "$SP_PG_DB" "$(sp_uri_path "$(sp_abs "$2")/pg/pgpass")"
}
sp_pg_api_url() {
    printf 'postgresql://%s@127.0.0.1:%s/%s?passfile=%s\n' "$SP_PG_API" \
        "$1" "$SP_PG_DB" "$(sp_uri_path "$(sp_abs "$2")/pg/pgpass")"
}
sp_pg_owner_url() {
    printf 'postgresql://%s@127.0.0.1:%s/%s?passfile=%s\n' "$SP_PG_OWNER" \
        "$1" "$SP_PG_DB" "$(sp_uri_path "$(sp_abs "$2")/pg/pgpass")"
}
sp_pg_superuser_url() {
    printf 'postgresql://postgres@127.0.0.1:%s/%s?passfile=%s\n' "$1" \
        "$SP_PG_DB" "$(sp_uri_path "$(sp_abs "$2")/pg/superuser.pgpass")"
}

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

        # the proxy's metrics, every worker's (docs/metrics.md): local only
        location = /metrics {
            spendpol_metrics;
            allow 127.0.0.1;
            allow ::1;
            deny all;
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

# sp_controld_exec DATA BUILDDIR API_LISTEN DATABASE_URL REDIS_URL
# [MIGRATE_DATABASE_URL [API_DATABASE_URL]]: replaces the shell with
# controld in the foreground, environment set. Without the sixth (or
# seventh) argument, or with an empty one, an SPENDPOL_MIGRATE_DATABASE_URL
# (SPENDPOL_API_DATABASE_URL) already in the environment is kept.
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
    if [ -n "${6:-}" ]; then
        export SPENDPOL_MIGRATE_DATABASE_URL="$6"
    fi
    if [ -n "${7:-}" ]; then
        export SPENDPOL_API_DATABASE_URL="$7"
    fi
    # controld may drop to SPENDPOL_USER before it connects: the passfile
    # must stay readable by it (libpq also wants mode 0600 or less)
    if sp_is_root && [ -n "${SPENDPOL_USER:-}" ] && [ -f "$data/pg/pgpass" ] \
        && id -u "$SPENDPOL_USER" >/dev/null 2>&1; then
        chown "$SPENDPOL_USER" "$data/pg/pgpass"
    fi
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
