# shellcheck shell=bash
# bench/lib/common.sh: helpers every part of bench/run.sh uses (sourced).
# Logging, process lifecycle (start, wait for a port, stop with children),
# nginx workers and CPU accounting from /proc.

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }
# has LIST WORD: WORD is one of the space-separated LIST
has() { case " $1 " in *" $2 "*) return 0 ;; esac; return 1; }

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

# wait_port HOST PORT PID NAME LOG...: until the port answers or PID dies
wait_port() {
    local host=$1 port=$2 pid=$3 name=$4 i f
    shift 4
    for i in $(seq 1 300); do
        sp_port_open "$host" "$port" && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            for f in "$@"; do
                [ -s "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
            done
            die "$name exited during start"
        fi
        sleep 0.1
    done
    die "$name does not answer on $host:$port"
}

# worker pids of an nginx master (or any process's children)
workers_of() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' | tr '\n' ' '; }

# cpu_us PID...: utime+stime of those processes, and of their children
# that exited and were waited for (PostgreSQL's autovacuum workers,
# backends that ended), in microseconds
cpu_us() {
    local t=0 p line f
    for p in "$@"; do
        line=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        # fields after "comm)": state(3) ... utime(14) stime(15)
        # cutime(16) cstime(17)
        read -r -a f <<<"${line##*) }"
        t=$((t + f[11] + f[12] + f[13] + f[14]))
    done
    echo $((t * 1000000 / CLK_TCK))
}
