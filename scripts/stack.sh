#!/usr/bin/env bash
# Spendpol stack pieces, one command each; used by scripts/run.sh and by the
# integration-test harness (tests/integration/lib/stack.mjs).
#
#   stack.sh pg-start DATA PORT          init (once) and start a private PostgreSQL
#   stack.sh pg-stop DATA                stop it (pg_ctl stop -m fast)
#   stack.sh pg-pid DATA                 print the postmaster pid
#   stack.sh redis-start DATA PORT       start a private Redis (daemonized)
#   stack.sh redis-stop DATA
#   stack.sh redis-pid DATA
#   stack.sh nginx-conf DATA BUILD LISTEN   write DATA/nginx/nginx.conf, print its path
#   stack.sh nginx-test DATA BUILD       nginx -t on that conf
#   stack.sh nginx-exec DATA BUILD       exec nginx in the foreground
#   stack.sh pg-url DATA PORT            print controld's runtime URL (spendpol_controld)
#   stack.sh pg-api-url DATA PORT        print the admin API's tenant URL (spendpol_api)
#   stack.sh pg-owner-url DATA PORT      print the owner's URL (migrations, psql in tests)
#   stack.sh pg-superuser-url DATA PORT  print the superuser's URL (tests only)
#   stack.sh controld-exec DATA BUILD API_LISTEN DATABASE_URL REDIS_URL [MIGRATE_URL [API_URL]]
#                                        exec controld in the foreground
#   stack.sh snapshot-dir DATA           print the snapshot dir for DATA
#   stack.sh free-port                   print a free loopback TCP port
#   stack.sh is-san BUILD                exit 0 when BUILD is a sanitizer build
set -euo pipefail
# shellcheck source=lib/stack.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/stack.sh"

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    pg-start)      [ $# -eq 2 ] || sp_die "usage: stack.sh pg-start DATA PORT"; sp_pg_start "$1" "$2" ;;
    pg-stop)       [ $# -eq 1 ] || sp_die "usage: stack.sh pg-stop DATA"; sp_pg_stop "$1" ;;
    pg-pid)        sp_pg_pid "$1" ;;
    pg-url)        [ $# -eq 2 ] || sp_die "usage: stack.sh pg-url DATA PORT"; sp_pg_url "$2" "$1" ;;
    pg-api-url)    [ $# -eq 2 ] || sp_die "usage: stack.sh pg-api-url DATA PORT"; sp_pg_api_url "$2" "$1" ;;
    pg-owner-url)  [ $# -eq 2 ] || sp_die "usage: stack.sh pg-owner-url DATA PORT"; sp_pg_owner_url "$2" "$1" ;;
    pg-superuser-url) [ $# -eq 2 ] || sp_die "usage: stack.sh pg-superuser-url DATA PORT"; sp_pg_superuser_url "$2" "$1" ;;
    redis-start)   [ $# -eq 2 ] || sp_die "usage: stack.sh redis-start DATA PORT"; sp_redis_start "$1" "$2" ;;
    redis-stop)    [ $# -eq 1 ] || sp_die "usage: stack.sh redis-stop DATA"; sp_redis_stop "$1" ;;
    redis-pid)     sp_redis_pid "$1" ;;
    nginx-conf)    [ $# -eq 3 ] || sp_die "usage: stack.sh nginx-conf DATA BUILD LISTEN"; sp_nginx_conf "$1" "$2" "$3" ;;
    nginx-test)    [ $# -eq 2 ] || sp_die "usage: stack.sh nginx-test DATA BUILD"; sp_nginx_test "$1" "$2" ;;
    nginx-exec)    [ $# -eq 2 ] || sp_die "usage: stack.sh nginx-exec DATA BUILD"; sp_nginx_exec "$1" "$2" ;;
    controld-exec) [ $# -ge 5 ] && [ $# -le 7 ] \
                       || sp_die "usage: stack.sh controld-exec DATA BUILD API_LISTEN DATABASE_URL REDIS_URL [MIGRATE_DATABASE_URL [API_DATABASE_URL]]"
                   sp_controld_exec "$@" ;;
    snapshot-dir)  sp_snapshot_dir "$1" ;;
    free-port)     sp_free_port ;;
    is-san)        sp_is_san "$1" ;;
    *)             sed -n '2,24p' "$0" >&2; exit 2 ;;
esac
