#!/usr/bin/env bash
# Efficiency of `weft load` against wrk, side by side (issue 7).
#
# One `weft serve --proto http` pinned to BENCH_SERVER_CORE; then, alternately, `wrk -t1` and
# `weft load --cores 1`, each pinned to BENCH_LOAD_CORE with taskset, with the same connections
# and duration, RUNS times each. Every row gives requests/s, the load generator's own CPU time
# (user + system, from bash's `time`), requests per load-generator CPU-second (the "per
# load-generating core" figure, fair even when the server limits the rate), and the server's
# CPU and both cores' busy shares over the run (bench/lib.sh).
#
#   bash bench/load_vs_wrk.sh
#   CONNS=256 DURATION=10 RUNS=5 bash bench/load_vs_wrk.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

CONNS=${CONNS:-64}
DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
SERVER_CORE=${BENCH_SERVER_CORE:-0}
LOAD_CORE=${BENCH_LOAD_CORE:-1}
PORT=${BENCH_PORT:-18400}

if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk; } >/dev/null
fi
cargo build --release --quiet --bin weft
WEFT=target/release/weft
RAW=target/bench-raw/load-vs-wrk
mkdir -p "$RAW"
raise_limits

next_port
launch "$RAW/server.log" taskset -c "$SERVER_CORE" "$WEFT" serve --proto http --listen "$ADDR" --cores 1
url="http://$ADDR/"

# timed OUT COMMAND...: runs COMMAND on the load core, output to OUT; prints "cpu-seconds
# server-cpu% server-core% load-core%".
timed() {
  local out=$1 cpu usage TIMEFORMAT='%U %S'
  shift
  usage_start
  cpu=$({ time taskset -c "$LOAD_CORE" "$@" >"$out" 2>&1; } 2>&1 | awk '{print $1 + $2}')
  usage=$(usage_end)
  echo "$cpu $usage"
}

row() { # tool run requests seconds cpu server% server-core% load-core%
  awk -v t="$1" -v r="$2" -v n="$3" -v d="$4" -v c="$5" -v s="$6" -v sc="$7" -v lc="$8" \
    'BEGIN { printf "%-10s %3s %10.0f %8.2f %14.0f %9s %9s %9s\n", t, r, n / d, c, n / c, s "%", sc "%", lc "%" }'
}

log "weft serve --proto http on core $SERVER_CORE; load on core $LOAD_CORE; $CONNS connections," \
  "${DURATION}s per run, $(nproc) CPUs, $(uname -r)"
printf '%-10s %3s %10s %8s %14s %9s %9s %9s\n' tool run "req/s" "cpu s" "req/cpu-second" \
  "server" "srv core" "load core"
for run in $(seq "$RUNS"); do
  read -r cpu s sc lc < <(timed "$RAW/wrk.$run.txt" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$url")
  total=$(awk '/requests in/ {print $1}' "$RAW/wrk.$run.txt")
  secs=$(awk '/requests in/ {sub(/s,$/, "", $4); print $4}' "$RAW/wrk.$run.txt")
  row wrk "$run" "$total" "$secs" "$cpu" "$s" "$sc" "$lc"

  json=$RAW/weft.$run.json
  read -r cpu s sc lc < <(timed "$RAW/weft.$run.txt" "$WEFT" load --target "$url" --cores 1 \
    --conns "$CONNS" --duration "${DURATION}s" --json "$json")
  read -r total secs < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["requests"], d["duration_s"])' "$json")
  row "weft load" "$run" "$total" "$secs" "$cpu" "$s" "$sc" "$lc"
done
