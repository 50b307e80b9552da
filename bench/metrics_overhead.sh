#!/usr/bin/env bash
# Echo throughput with metrics on vs off, in the same run, alternating off/on each round.
#
#   bench/metrics_overhead.sh                 # 6 rounds x 4 s per mode
#   ROUNDS=10 SECONDS_PER_RUN=10 bench/metrics_overhead.sh
#   NO_BUILD=1 SERVER_CORE=2 LOAD_CORE=4 bench/metrics_overhead.sh
#
# The server (one shard, and every other thread of its process) is pinned to SERVER_CORE, the
# load (`weft load --proto echo`, closed loop, PIPELINE requests in flight per connection) to
# LOAD_CORE. "on" is `weft serve --metrics ADDR` (collector, lag probe, per-shard reports
# every second) with /metrics scraped every second during the load; "off" is plain
# `weft serve`, which keeps only the per-shard Cell counters.
# Prints each run's requests/s and the server's CPU use, then the on/off ratio of the
# medians, of throughput and of throughput per server CPU second (the steadier of the two on
# a shared machine).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

ROUNDS=${ROUNDS:-6}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-4}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-32}
PIPELINE=${PIPELINE:-4}
SIZE=${SIZE:-64}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
PORT=${PORT:-18400}

# NO_BUILD=1 uses the binaries already in target/release (a machine without cargo).
[ -n "${NO_BUILD:-}" ] || cargo build --release -q --bin weft
WEFT=target/release/weft
HZ=$(getconf CLK_TCK)
RAW=$(mktemp -d)
raise_limits

SCRAPER=""
stop_scraper() {
  [ -n "$SCRAPER" ] || return 0
  kill "$SCRAPER" 2>/dev/null || true
  wait "$SCRAPER" 2>/dev/null || true
  SCRAPER=""
}
trap 'stop_scraper; stop_server; rm -rf "$RAW"' EXIT

# run MODE: one measurement; sets RPS (echo requests/s) and CPU (server cores used).
run() {
  local extra=() mport=""
  if [ "$1" = on ]; then
    next_port
    mport=$PORT
    extra=(--metrics "127.0.0.1:$mport")
  fi
  next_port
  launch "$RAW/weft.$PORT.log" env WEFT_LOG=warn taskset -c "$SERVER_CORE" "$WEFT" serve --proto echo \
    --cores 1 --listen "$ADDR" --drain-timeout 1s "${extra[@]}"
  if [ -n "$mport" ]; then
    ( while sleep 1; do
        exec 3<>"/dev/tcp/127.0.0.1/$mport" || exit 0
        printf 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n' >&3
        cat <&3 >/dev/null
        exec 3>&-
      done ) &
    SCRAPER=$!
  fi
  local before after
  before=$(proc_ticks "$SERVER_PID")
  taskset -c "$LOAD_CORE" "$WEFT" load --target "$ADDR" --proto echo --cores 1 --conns "$CONNS" \
    --pipeline "$PIPELINE" --size "$SIZE" --duration "${SECONDS_PER_RUN}s" --warmup "${WARMUP}s" \
    --json "$RAW/load.json" >/dev/null 2>&1
  after=$(proc_ticks "$SERVER_PID")
  stop_scraper
  stop_server
  RPS=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["rps"])' "$RAW/load.json")
  CPU=$(awk -v t=$((after - before)) -v hz="$HZ" -v s="$((SECONDS_PER_RUN + WARMUP))" \
    'BEGIN { printf "%.3f", t / hz / s }')
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "echo: $CONNS connections x $PIPELINE x $SIZE B in flight, ${SECONDS_PER_RUN}s (+${WARMUP}s warm-up) per run," \
  "server on core $SERVER_CORE, load on core $LOAD_CORE, $ROUNDS rounds"
printf '%-6s %-4s %12s %10s %16s\n' round mode "requests/s" "server cpu" "requests/cpu-s"
declare -A tput eff
for round in $(seq "$ROUNDS"); do
  for mode in off on; do
    run "$mode"
    per_cpu=$(awk -v r="$RPS" -v c="$CPU" 'BEGIN { printf "%.0f", (c > 0) ? r / c : 0 }')
    printf '%-6s %-4s %12.0f %10s %16s\n' "$round" "$mode" "$RPS" "$CPU" "$per_cpu"
    tput[$mode]+="$RPS"$'\n'
    eff[$mode]+="$per_cpu"$'\n'
  done
done
on=$(printf '%s' "${tput[on]}" | median)
off=$(printf '%s' "${tput[off]}" | median)
eon=$(printf '%s' "${eff[on]}" | median)
eoff=$(printf '%s' "${eff[off]}" | median)
awk -v on="$on" -v off="$off" -v eon="$eon" -v eoff="$eoff" 'BEGIN {
  printf "median requests/s: off %.0f, on %.0f; on/off = %.4f\n", off, on, on / off
  printf "median requests per server cpu-second: off %.0f, on %.0f; on/off = %.4f\n", eoff, eon, eon / eoff
}'
