#!/usr/bin/env bash
# weft serve --proto kv against redis-server, side by side in one run, as Markdown on stdout.
#
#   bench/kv.sh                 # server on core 0, redis-benchmark on core 1
#
# Each server runs alone, pinned to BENCH_SERVER_CORE (default 0), with redis-benchmark on
# BENCH_LOAD_CORE (default 1): `-t set,get -c 50 -n N -P 1` and `-P 16`, BENCH_ROUNDS rounds
# alternating servers (median reported). Then memory per key: 1M SETs of 32 B values under
# random 16 B keys (`-r`), the keys actually stored counted with DBSIZE, and the server's RSS
# growth divided by them. Needs redis-server and redis-tools (Debian), and a built weft.
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_CORE=${BENCH_SERVER_CORE:-0}
LOAD_CORE=${BENCH_LOAD_CORE:-1}
ROUNDS=${BENCH_ROUNDS:-3}
N=${BENCH_KV_REQUESTS:-300000}
PORT=${BENCH_PORT:-19300}
WEFT=target/release/weft

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
wait_port() {
  for _ in $(seq 1 200); do
    redis-cli -p "$1" PING >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "kv.sh: nothing answers on port $1" >&2
  return 1
}
start() { # name port -> pid
  case $1 in
    redis) taskset -c "$SERVER_CORE" redis-server --port "$2" --save '' --appendonly no \
             --bind 127.0.0.1 >/dev/null 2>&1 & ;;
    weft) taskset -c "$SERVER_CORE" "$WEFT" serve --proto kv --listen "127.0.0.1:$2" \
             --cores "$SERVER_CORE," >/dev/null 2>&1 & ;;
  esac
  echo $!
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# rps name pipeline -> "set get"
rps() {
  local port=$((PORT++)) pid out
  pid=$(start "$1" "$port")
  wait_port "$port"
  out=$(taskset -c "$LOAD_CORE" redis-benchmark -p "$port" -t set,get -c 50 -n "$N" -P "$2" -q --csv)
  stop "$pid"
  echo "$out" | awk -F'"' '/^"SET"/ {s=$4} /^"GET"/ {g=$4} END {print s, g}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "| redis-benchmark -c 50 | weft kv SET | redis SET | ratio | weft kv GET | redis GET | ratio |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for P in 1 16; do
  ws=(); wg=(); rs=(); rg=()
  for _ in $(seq 1 "$ROUNDS"); do
    read -r s g < <(rps weft "$P"); ws+=("$s"); wg+=("$g")
    read -r s g < <(rps redis "$P"); rs+=("$s"); rg+=("$g")
  done
  mws=$(printf '%s\n' "${ws[@]}" | median); mwg=$(printf '%s\n' "${wg[@]}" | median)
  mrs=$(printf '%s\n' "${rs[@]}" | median); mrg=$(printf '%s\n' "${rg[@]}" | median)
  awk -v p="$P" -v a="$mws" -v b="$mrs" -v c="$mwg" -v d="$mrg" 'BEGIN {
    printf "| -P %d | %.0f | %.0f | %.2fx | %.0f | %.0f | %.2fx |\n", p, a, b, a/b, c, d, c/d }'
  echo "<!-- runs: weft SET ${ws[*]} GET ${wg[*]}; redis SET ${rs[*]} GET ${rg[*]} -->"
done

echo
echo "| memory per key (1M random SETs, 16 B keys, 32 B values) | keys | RSS growth | per key |"
echo "|---|---:|---:|---:|"
for server in weft redis; do
  port=$((PORT++))
  pid=$(start "$server" "$port")
  wait_port "$port"
  before=$(rss_kib "$pid")
  taskset -c "$LOAD_CORE" redis-benchmark -p "$port" -t set -n 1000000 -r 1000000 -d 32 -c 50 -P 16 -q >/dev/null
  keys=$(redis-cli -p "$port" DBSIZE)
  after=$(rss_kib "$pid")
  stop "$pid"
  awk -v s="$server" -v k="$keys" -v a="$after" -v b="$before" 'BEGIN {
    printf "| %s | %d | %.1f MiB | %.0f B |\n", s, k, (a-b)/1024, (a-b)*1024/k }'
done
