#!/usr/bin/env bash
# bench/ircount.sh TREE LABEL: instructions per governed chat completion,
# JSON then SSE, in one Spendpol nginx process (master_process off) under
# valgrind's callgrind. Instruction counts repeat for the same binary and
# inputs whatever else the machine does, so two builds can be compared to
# a fraction of a percent where wall-clock runs on 2 shared cores cannot.
#
#   bash bench/ircount.sh /path/to/old-checkout base
#   bash bench/ircount.sh . new
#
# TREE is a checkout with its build/ made (make build). The stack comes from
# bench/run.sh (BENCH_REPS=0 BENCH_HOLD): the mock, PostgreSQL, controld and
# the organisation budget, so every request reserves, settles and is
# journaled as in make bench; a second nginx with the same configuration on
# another port runs under callgrind, warmed up 5 s, then counted over 20 s
# of wrk -c1. Prints: LABEL KIND requests=N non2xx=N Ir=N Ir/req=N
set -uo pipefail
TREE=$1; LABEL=$2
cd "$TREE"
log=/tmp/hold-$LABEL.log
BENCH_REPS=0 BENCH_CONFIGS="spendpol" BENCH_SWAP=0 BENCH_HOLD=900 bash bench/run.sh >"$log" 2>&1 &
HOLD=$!
for i in $(seq 1 300); do grep -q "holding the stack" "$log" && break; sleep 1; done
line=$(grep "holding the stack" "$log")
KEY=$(sed -E 's/.* key (sp_key_[0-9a-f]+).*/\1/' <<<"$line")
WORK=$(sed -E 's/.* data ([^ ]+).*/\1/' <<<"$line")
CONF=$(ls "$WORK"/spendpol/nginx/nginx.conf)
PORT=$(( 30000 + RANDOM % 5000 ))
D=/tmp/ir-$LABEL; rm -rf "$D"; mkdir -p "$D"
sed -E "s/^(\s*)worker_processes [^;]*;/\1worker_processes 1;/; s/listen 127\.0\.0\.1:[0-9]+/listen 127.0.0.1:$PORT/; s#^(\s*)pid [^;]*;#\1pid $D/nginx.pid;#" "$CONF" >"$D/nginx.conf"
sed -i "s/^master_process on;/master_process off;/" "$D/nginx.conf"
grep -q '^pid' "$D/nginx.conf" || sed -i "1i pid $D/nginx.pid;" "$D/nginx.conf"
PREFIX=$(dirname "$CONF")/
valgrind --tool=callgrind --callgrind-out-file="$D/cg.out" /usr/sbin/nginx -p "$PREFIX" -c "$D/nginx.conf" -e "$D/error.log" >"$D/vg.log" 2>&1 &
VG=$!
for i in $(seq 1 120); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.5; done
for kind in json sse; do
  export BENCH_AUTH="Bearer $KEY" BENCH_PATH=/v1/openai/chat/completions
  [ $kind = sse ] && export BENCH_STREAM=1 || unset BENCH_STREAM
  wrk -t1 -c1 -d5s -s bench/chat.lua "http://127.0.0.1:$PORT" >/dev/null 2>&1   # warm-up
  callgrind_control -z "$VG" >/dev/null
  out=$(wrk -t1 -c1 -d20s -s bench/chat.lua "http://127.0.0.1:$PORT" 2>&1)
  callgrind_control -d "$kind" "$VG" >/dev/null
  n=$(grep -o 'requests=[0-9]*' <<<"$out" | head -1 | cut -d= -f2)
  non2xx=$(grep -o 'non2xx=[0-9]*' <<<"$out" | head -1)
  f=$(ls -t "$D"/cg.out* | head -1)
  ir=$(grep -E '^(summary|totals):' "$f" | head -1 | awk '{print $2}')
  echo "$LABEL $kind requests=$n $non2xx Ir=$ir Ir/req=$(( ir / n ))"
done
kill "$VG" 2>/dev/null; wait "$VG" 2>/dev/null
kill "$HOLD" 2>/dev/null; pkill -P "$HOLD" 2>/dev/null
sleep 3
