#!/usr/bin/env bash
# Installs what Spendpol needs on Debian 12, and only what is missing.
# Idempotent; a fast no-op when everything is there. Sources: Debian's apt
# repositories and the npm registry (for the integration tests' packages).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '[deps] %s\n' "$*" >&2; }

PKGS=(build-essential pkg-config nginx nginx-dev libjansson-dev libhiredis-dev
      libpcre2-dev libpq-dev libssl-dev libmicrohttpd-dev postgresql
      redis-server libcmocka-dev ca-certificates curl procps
      clang libclang-rt-14-dev)

node_ok() {
    command -v node >/dev/null 2>&1 || return 1
    command -v npm >/dev/null 2>&1 || return 1
    local major
    major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null) || return 1
    [ "${major:-0}" -ge 18 ]
}
node_ok || PKGS+=(nodejs npm)

installed() {
    # dpkg-query prints "install ok installed" for a fully installed package
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for p in "${PKGS[@]}"; do
        installed "$p" || missing+=("$p")
    done
else
    log "not a Debian system (no dpkg-query): install these yourself: ${PKGS[*]}"
fi

if [ ${#missing[@]} -gt 0 ]; then
    log "missing: ${missing[*]}"
    SUDO=
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { log "run as root (or install sudo) to install: ${missing[*]}"; exit 1; }
        SUDO=sudo
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # --no-install-recommends keeps it lean; postgresql/redis bring what they need
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    log "installed: ${missing[*]}"
    # Debian may start a system nginx (port 80), PostgreSQL (5432) and Redis
    # (6379) where an init system runs; Spendpol uses its own instances on
    # other ports, so those are left alone.
fi

node_ok || { log "node >= 18 with npm is required for the integration tests"; exit 1; }

# npm packages, only when missing or outdated: the integration tests', and
# the tokenizer's vocabularies (js-tiktoken, read at build time only)
npm_dir() {
    local dir="$ROOT/$1" stamp need=0
    [ -f "$dir/package.json" ] || return 0
    # a symlinked node_modules (a git worktree sharing the main checkout's)
    # belongs to that checkout: npm ci here would empty it through the link
    [ -L "$dir/node_modules" ] && return 0
    stamp="$dir/node_modules/.package-lock.json"
    if [ ! -d "$dir/node_modules" ] || [ ! -f "$stamp" ]; then
        need=1
    elif [ -f "$dir/package-lock.json" ] && [ "$dir/package-lock.json" -nt "$stamp" ]; then
        need=1
    elif [ "$dir/package.json" -nt "$stamp" ]; then
        need=1
    fi
    if [ $need = 1 ]; then
        log "npm packages for $1"
        if [ -f "$dir/package-lock.json" ]; then
            (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        else
            (cd "$dir" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
        fi
        touch "$stamp"
    fi
}
npm_dir tests/integration
npm_dir tools/tokenizer
exit 0
