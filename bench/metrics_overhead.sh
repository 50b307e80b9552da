#!/usr/bin/env bash
# Echo throughput with metrics on vs off, in the same run, alternating off/on each round.
#
#   bench/metrics_overhead.sh                 # 3 rounds x 5 s per mode
#   ROUNDS=5 SECONDS_PER_RUN=10 bench/metrics_overhead.sh
#   NO_BUILD=1 SERVER_CORE=2 LOAD_CORE=4 bench/metrics_overhead.sh
#
# The server (one shard, and every other thread of its process) is pinned to SERVER_CORE, the
# load (examples/echo_load.rs) to LOAD_CORE. "on" is `weft serve --metrics ADDR` (collector,
# lag probe, per-shard reports every second) with /metrics scraped every second during the
# load; "off" is plain `weft serve`, which keeps only the per-shard Cell counters.
# Prints each run's echoed bytes/s and the server's CPU use, then the on/off ratio of the
# medians, of throughput and of throughput per server CPU second.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-32}
WINDOW=${WINDOW:-256}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}

# NO_BUILD=1 uses the binaries already in target/release (a machine without cargo).
[ -n "${NO_BUILD:-}" ] || cargo build --release -q --bin weft --example echo_load
WEFT=target/release/weft
LOAD=target/release/examples/echo_load
TICKS=$(getconf CLK_TCK)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# utime + stime of a process, in clock ticks.
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}

server=""
scraper=""
cleanup() {
  [ -n "$scraper" ] && kill "$scraper" 2>/dev/null || true
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
}
trap cleanup EXIT

# Runs one measurement; sets BPS (echoed bytes/s) and CPU (server cores used).
run() {
  local mode=$1 port mport extra=()
  port=$(free_port)
  if [ "$mode" = on ]; then
    mport=$(free_port)
    extra=(--metrics "127.0.0.1:$mport")
  fi
  WEFT_LOG=warn taskset -c "$SERVER_CORE" "$WEFT" serve --proto echo --cores 1 \
    --listen "127.0.0.1:$port" "${extra[@]}" >/dev/null 2>&1 &
  server=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
  if [ "$mode" = on ]; then
    ( while sleep 1; do
        exec 3<>"/dev/tcp/127.0.0.1/$mport" || exit 0
        printf 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n' >&3
        cat <&3 >/dev/null
        exec 3>&-
      done ) &
    scraper=$!
  fi
  local before after out
  before=$(cpu_ticks "$server")
  out=$(taskset -c "$LOAD_CORE" "$LOAD" "127.0.0.1:$port" "$CONNS" "$WINDOW" \
    "$SECONDS_PER_RUN" "$WARMUP")
  after=$(cpu_ticks "$server")
  [ -n "$scraper" ] && { kill "$scraper" 2>/dev/null || true; wait "$scraper" 2>/dev/null || true; }
  scraper=""
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=""
  BPS=${out##* }
  CPU=$(awk -v a="$after" -v b="$before" -v t="$TICKS" -v s="$SECONDS_PER_RUN" -v w="$WARMUP" \
    'BEGIN { printf "%.3f", (a - b) / t / (s + w) }')
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "echo: $CONNS connections x $WINDOW B in flight, ${SECONDS_PER_RUN}s (+${WARMUP}s warm-up) per run," \
  "server on core $SERVER_CORE, load on core $LOAD_CORE, $ROUNDS rounds"
printf '%-6s %-4s %16s %10s %18s\n' round mode "bytes/s" "server cpu" "bytes per cpu-s"
declare -A tput eff
for round in $(seq "$ROUNDS"); do
  for mode in off on; do
    run "$mode"
    per_cpu=$(awk -v b="$BPS" -v c="$CPU" 'BEGIN { printf "%.0f", (c > 0) ? b / c : 0 }')
    printf '%-6s %-4s %16s %10s %18s\n' "$round" "$mode" "$BPS" "$CPU" "$per_cpu"
    tput[$mode]+="$BPS"$'\n'
    eff[$mode]+="$per_cpu"$'\n'
  done
done
on=$(printf '%s' "${tput[on]}" | median)
off=$(printf '%s' "${tput[off]}" | median)
eon=$(printf '%s' "${eff[on]}" | median)
eoff=$(printf '%s' "${eff[off]}" | median)
awk -v on="$on" -v off="$off" -v eon="$eon" -v eoff="$eoff" 'BEGIN {
  printf "median bytes/s: off %.0f, on %.0f; on/off = %.4f\n", off, on, on / off
  printf "median bytes per server cpu-second: off %.0f, on %.0f; on/off = %.4f\n", eoff, eon, eon / eoff
}'
