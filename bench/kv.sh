#!/usr/bin/env bash
# weft serve --proto kv against redis-server, side by side in one run, as Markdown on stdout.
#
#   bench/kv.sh                                          # weft against redis-server
#   bench/kv.sh old=/tmp/weft-old new=target/release/weft redis=redis   # two builds and redis
#
# Servers are NAME=PATH (default weft=target/release/weft redis=redis): PATH `redis` runs
# redis-server (`--save '' --appendonly no`), any other PATH runs `PATH serve --proto kv` with one
# shard. Each runs alone on BENCH_SERVER_CORE (default 0) with redis-benchmark on
# BENCH_LOAD_CORE (default 1), BENCH_ROUNDS rounds (default 3) alternating servers, medians
# reported. Per depth P in BENCH_KV_DEPTHS (default "1 16") and test (SET, then GET of the key
# it wrote): `redis-benchmark -c 50 -P P -n N*P` (N = BENCH_KV_REQUESTS, default 300000, so each
# test lasts about a second or more at either depth), and over exactly that run the server's
# system calls (`perf stat -e raw_syscalls:sys_enter`) and CPU time per request, its user/kernel
# split (/proc), and both cores' busy shares (/proc/stat): with the load core near 100%,
# redis-benchmark is the bottleneck and CPU per request is the comparison that means something.
# Ratios are against the server named `redis` (else the first). Then memory per key: 1M SETs
# of 32 B values under random 16 B keys (`-r`), the keys stored counted with DBSIZE, and the
# server's RSS growth divided by them. Needs redis-server and redis-tools (Debian), perf for
# the system-call column.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
SERVER_CORE=${BENCH_SERVER_CORE:-0}
LOAD_CORE=${BENCH_LOAD_CORE:-1}
ROUNDS=${BENCH_ROUNDS:-3}
N=${BENCH_KV_REQUESTS:-300000}
DEPTHS=${BENCH_KV_DEPTHS:-1 16}
PORT=${BENCH_PORT:-19300}
DIR=target/bench-raw/kv
mkdir -p "$DIR"
SERVERS=("$@")
[[ ${#SERVERS[@]} -gt 0 ]] || SERVERS=(weft=target/release/weft redis=redis)
REF=${SERVERS[0]%%=*}
for s in "${SERVERS[@]}"; do [[ ${s#*=} == redis ]] && REF=${s%%=*}; done

# start_kv NAME=PATH: the server on a fresh port, once it answers.
start_kv() {
  local name=${1%%=*} path=${1#*=}
  next_port
  if [[ $path == redis ]]; then
    launch "$DIR/$name.log" taskset -c "$SERVER_CORE" redis-server --port "$PORT" --save '' \
      --appendonly no --bind 127.0.0.1
  else
    launch "$DIR/$name.log" taskset -c "$SERVER_CORE" "$path" serve --proto kv --listen "$ADDR" \
      --cores "$SERVER_CORE,"
  fi
}

# measure TEST P: one redis-benchmark run against the running server; prints "req/s
# syscalls/req cpu_us/req user% server-core% load-core%".
measure() {
  local n=$(($2 * N)) file=$DIR/perf.out perf_pid="" rps u0 s0 u1 s1 usage
  rm -f "$file"
  read -r u0 s0 < <(proc_user_sys "$SERVER_PID")
  usage_start
  if command -v perf >/dev/null; then
    perf stat -x, -o "$file" -e raw_syscalls:sys_enter,task-clock -p "$SERVER_PID" >/dev/null 2>&1 &
    perf_pid=$!
    sleep 0.1
  fi
  rps=$(taskset -c "$LOAD_CORE" redis-benchmark -p "$PORT" -t "$1" -c 50 -n "$n" -P "$2" -q --csv |
    awk -F'"' '/^"[A-Z]/ {print $4}')
  [[ -n $perf_pid ]] && { kill -INT "$perf_pid" 2>/dev/null; wait "$perf_pid" 2>/dev/null || true; }
  # Without perf, or one that could not attach (no permission), nothing was written: the
  # CPU then comes from the /proc ticks.
  [[ -f $file ]] || : >"$file"
  usage=$(usage_end)
  read -r u1 s1 < <(proc_user_sys "$SERVER_PID")
  # task-clock is in ms: per request in µs.
  awk -F, -v n="$n" -v rps="$rps" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$(getconf CLK_TCK)" \
      -v usage="$usage" '
    /raw_syscalls:sys_enter/ { sc = $1 / n }
    /task-clock/ { cpu = $1 * 1000 / n }
    END {
      split(usage, us, " ")
      if (cpu == "") cpu = (u + s) / hz * 1e6 / n
      printf "%s %s %.3f %.0f %s %s\n", rps, (sc == "" ? "-" : sprintf("%.3f", sc)), cpu,
        (u + s ? 100 * u / (u + s) : 0), us[2], us[3]
    }' "$file"
}

declare -A RUNS=()
for P in $DEPTHS; do
  for _ in $(seq 1 "$ROUNDS"); do
    for s in "${SERVERS[@]}"; do
      start_kv "$s"
      taskset -c "$LOAD_CORE" redis-benchmark -p "$PORT" -t set,get -c 50 -n 20000 -P "$P" -q >/dev/null
      for t in set get; do
        RUNS["$P $t ${s%%=*}"]+="$(measure "$t" "$P");"
      done
      stop_server
    done
  done
done

# col P TEST NAME I: the median of column I over the rounds.
col() { tr ';' '\n' <<<"${RUNS["$1 $2 $3"]}" | awk -v i="$4" 'NF {print $i}' | median; }

echo "| redis-benchmark -c 50 | server | req/s | req/s vs $REF | syscalls/req | server CPU µs/req | CPU/req vs $REF | user share | server core busy | load core busy |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for P in $DEPTHS; do
  for t in set get; do
    ref_rps=$(col "$P" $t "$REF" 1); ref_cpu=$(col "$P" $t "$REF" 3)
    for s in "${SERVERS[@]}"; do
      name=${s%%=*}
      awk -v row="-P $P ${t^^}" -v name="$name" -v rps="$(col "$P" $t "$name" 1)" \
          -v sc="$(col "$P" $t "$name" 2)" -v cpu="$(col "$P" $t "$name" 3)" \
          -v user="$(col "$P" $t "$name" 4)" -v sb="$(col "$P" $t "$name" 5)" \
          -v lb="$(col "$P" $t "$name" 6)" -v rr="$ref_rps" -v rc="$ref_cpu" 'BEGIN {
        printf "| %s | %s | %.0f | %.2fx | %s | %.3f | %.2fx | %s%% | %s%% | %s%% |\n",
          row, name, rps, rps / rr, sc, cpu, cpu / rc, user, sb, lb }'
    done
  done
done
for key in "${!RUNS[@]}"; do
  echo "<!-- runs $key (req/s syscalls/req cpu_us/req user% server% load%): ${RUNS[$key]} -->"
done | sort

echo
echo "| memory per key (1M random SETs, 16 B keys, 32 B values) | keys | RSS growth | per key |"
echo "|---|---:|---:|---:|"
for s in "${SERVERS[@]}"; do
  start_kv "$s"
  before=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status")
  taskset -c "$LOAD_CORE" redis-benchmark -p "$PORT" -t set -n 1000000 -r 1000000 -d 32 -c 50 -P 16 -q >/dev/null
  keys=$(redis-cli -p "$PORT" DBSIZE)
  after=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status")
  stop_server
  awk -v s="${s%%=*}" -v k="$keys" -v a="$after" -v b="$before" 'BEGIN {
    printf "| %s | %d | %.1f MiB | %.0f B |\n", s, k, (a-b)/1024, (a-b)*1024/k }'
done
