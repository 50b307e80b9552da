#!/usr/bin/env bash
# Server CPU per request of weft's kv server against redis-server, robust to a busy machine:
# task-clock of the server process over the requests of one redis-benchmark run, medians of
# alternating rounds (requests/s is printed too, but on a shared machine trust CPU/request).
#
#   bench/kv_cpu.sh weft=target/release/weft redis=redis        # P1 and P16, GET and SET
#   PS=16 TS=get ROUNDS=5 bench/kv_cpu.sh old=/tmp/weft-old new=target/release/weft
#
# Servers run on core 0, redis-benchmark -c 50 on core 1. Needs perf, redis-server and
# redis-tools. The name `redis` runs redis-server; any other name=path runs `path serve
# --proto kv`.
set -euo pipefail
N=${N:-300000}; ROUNDS=${ROUNDS:-3}
run() { # bin P test port -> cpu_us/req rps
  if [ "$1" = redis ]; then taskset -c 0 redis-server --port $4 --save '' --appendonly no --bind 127.0.0.1 >/dev/null 2>&1 &
  else taskset -c 0 $1 serve --proto kv --listen 127.0.0.1:$4 --cores 0, >/dev/null 2>&1 & fi
  pid=$!
  for i in $(seq 100); do redis-cli -p $4 ping >/dev/null 2>&1 && break; sleep 0.05; done
  taskset -c 1 redis-benchmark -p $4 -t $3 -n 20000 -c 50 -P $2 -q >/dev/null
  perf stat -x, -e task-clock -p $pid -o /tmp/ps.$$ & sp=$!
  out=$(taskset -c 1 redis-benchmark -p $4 -t $3 -n $N -c 50 -P $2 -q --csv | awk -F'"' 'NR==2{print $4}')
  kill -INT $sp; wait $sp || true; kill $pid; wait $pid 2>/dev/null || true
  awk -F, -v n=$N -v rps=$out '/task-clock/{printf "%.3f %.0f\n", $1*1000/n, rps}' /tmp/ps.$$
}
port=$((19600 + RANDOM % 1000))
for P in ${PS:-1 16}; do for t in ${TS:-get set}; do
  declare -A cpu=() rps=()
  for r in $(seq $ROUNDS); do for nb in "$@"; do name=${nb%%=*}; bin=${nb#*=}; port=$((port+1))
    read c q < <(run $bin $P $t $port); cpu[$name]+="$c "; rps[$name]+="$q "; done; done
  for nb in "$@"; do name=${nb%%=*}
    mc=$(echo ${cpu[$name]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
    mr=$(echo ${rps[$name]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
    printf "P%-2s %-4s %-6s cpu_us/req=%s (%s) rps=%s\n" $P $t $name $mc "${cpu[$name]}" $mr
  done; unset cpu rps
done; done
