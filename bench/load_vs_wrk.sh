#!/usr/bin/env bash
# Efficiency of `weft load` against wrk, side by side.
#
# One `weft serve --proto http` pinned to SERVER_CORE; then, alternately, `wrk -t1` and
# `weft load --cores LOAD_CORE,` (the load generator itself also pinned to LOAD_CORE with
# taskset), with the same connections and duration, RUNS times each. For each run it prints
# requests/s, the load generator's CPU time (user + sys) and requests per CPU-second of the
# load generator: the "per load-generating core" figure, fair even when the server is what
# limits the rate.
#
#   bash bench/load_vs_wrk.sh                 # defaults below
#   CONNS=64 DURATION=10 RUNS=3 bash bench/load_vs_wrk.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-64}
DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
PORT=${PORT:-18181}

if ! command -v wrk >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
cargo build --release -q
weft=target/release/weft
url="http://127.0.0.1:$PORT/"
tmp=$(mktemp -d)

"$weft" serve --proto http --listen "127.0.0.1:$PORT" --cores "$SERVER_CORE," 2>"$tmp/server.log" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

# Runs "$@" and appends "user sys" CPU seconds to $tmp/cpu.
cpu_of() {
  local TIMEFORMAT='%U %S'
  { time "$@" >"$tmp/out" 2>"$tmp/err"; } 2>>"$tmp/cpu"
}

echo "server: weft serve --proto http on core $SERVER_CORE; load on core $LOAD_CORE;" \
  "$CONNS connections, ${DURATION}s per run, $(nproc) CPUs, $(uname -r)"
printf '%-10s %4s %12s %10s %16s\n' tool run "req/s" "cpu s" "req/cpu-second"
for run in $(seq "$RUNS"); do
  : >"$tmp/cpu"
  cpu_of taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$url"
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$tmp/out")
  total=$(awk '/requests in/ {print $1}' "$tmp/out")
  cpu=$(awk '{print $1 + $2}' "$tmp/cpu")
  printf '%-10s %4s %12.0f %10.2f %16.0f\n' wrk "$run" "$rps" "$cpu" "$(awk -v t="$total" -v c="$cpu" 'BEGIN {print t / c}')"

  : >"$tmp/cpu"
  cpu_of taskset -c "$LOAD_CORE" "$weft" load --target "$url" --cores "$LOAD_CORE," \
    --conns "$CONNS" --duration "${DURATION}s" --json "$tmp/weft.json"
  read -r rps total < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["rps"], d["requests"])' "$tmp/weft.json")
  cpu=$(awk '{print $1 + $2}' "$tmp/cpu")
  printf '%-10s %4s %12.0f %10.2f %16.0f\n' "weft load" "$run" "$rps" "$cpu" "$(awk -v t="$total" -v c="$cpu" 'BEGIN {print t / c}')"
done
