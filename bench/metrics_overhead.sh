#!/usr/bin/env bash
# Echo throughput with metrics on vs off, in the same run, alternating off/on each round.
#
#   bench/metrics_overhead.sh                 # 6 rounds x 4 s per mode
#   ROUNDS=10 SECONDS_PER_RUN=10 bench/metrics_overhead.sh
#   NO_BUILD=1 SERVER_CORE=2 LOAD_CORE=4 bench/metrics_overhead.sh
#
# The server (one shard, and every other thread of its process) is pinned to SERVER_CORE, the
# load (src/bin/echo-window.rs) to LOAD_CORE. "on" is `weft serve --metrics ADDR` (collector,
# lag probe, per-shard reports every second) with /metrics scraped every second during the
# load; "off" is plain `weft serve`, which keeps only the per-shard Cell counters.
# Prints each run's echoed bytes/s and the server's CPU use, then the on/off ratio of the
# medians, of throughput and of throughput per server CPU second (the steadier of the two on
# a shared machine).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

ROUNDS=${ROUNDS:-6}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-4}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-32}
WINDOW=${WINDOW:-256}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
PORT=${PORT:-18400}

# NO_BUILD=1 uses the binaries already in target/release (a machine without cargo).
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release -q -p weft --bin weft
  cargo build --release -q -p weft-bench --bin echo-window
fi
WEFT=target/release/weft
LOAD=target/release/echo-window
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

# run MODE: one measurement; sets BPS (echoed bytes/s) and CPU (server cores used).
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
  local before after out
  before=$(proc_ticks "$SERVER_PID")
  out=$(taskset -c "$LOAD_CORE" "$LOAD" --target "$ADDR" --conns "$CONNS" --window "$WINDOW" \
    --duration "${SECONDS_PER_RUN}s" --warmup "${WARMUP}s")
  after=$(proc_ticks "$SERVER_PID")
  stop_scraper
  stop_server
  BPS=${out##* }
  CPU=$(awk -v t=$((after - before)) -v hz="$HZ" -v s="$((SECONDS_PER_RUN + WARMUP))" \
    'BEGIN { printf "%.3f", t / hz / s }')
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
