#!/usr/bin/env bash
# weft against its peers: every scenario, one command, one results file.
#
#   bench/run.sh                      # build (release), run every scenario, write bench/RESULTS.md
#   bench/run.sh echo-d1 idle         # only these scenarios (BENCH_ONLY=echo-d1,idle works too)
#   BENCH_DURATION=10 bench/run.sh    # seconds measured per run (default 5)
#   bench/run.sh --list               # the scenarios
#
# Every server runs pinned to one core (BENCH_SERVER_CORE, default 0) and every load
# generator to another (BENCH_LOAD_CORE, default 1), with taskset, one after another, so
# that all peers see the same machine and the same load. RESULTS.md is rewritten from scratch
# with the machine, kernel, rustc, commit and the exact commands; raw outputs go to
# target/bench-raw/. Run it on a quiet machine: anything else running skews the numbers.
#
# The peers (bench/peers/: tokio, plain glommio, monoio) are standalone crates, each built
# from its own Cargo.lock into target/peers/, as their users build them. During every
# throughput and fixed-rate run, `perf stat` counts the server's system calls, io_uring_enter
# calls and task-clock over a window inside the measured part, and /proc gives its user and
# system time over the same window: RESULTS.md reports them per request.
#
# Other knobs: BENCH_ROUNDS (runs of each throughput row, alternating servers; the median is
# reported; default 3), BENCH_WARMUP (s, default 1), BENCH_RATE (requests/s of the
# fixed-rate latency scenario, default 20000), BENCH_IDLE_CONNS (default 10000),
# BENCH_STORM_RATE (new connections/s, default 5000), BENCH_PORT (first port, default 19100),
# BENCH_OUT (default bench/RESULTS.md), BENCH_INSTALL=0 (never apt-get nginx/wrk/perf),
# BENCH_LOAD_BIN (the binary whose `load` subcommand drives echo and http-load; default the
# weft just built).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SCENARIOS=(echo-d1 echo-d16 echo-rate http-wrk http-load churn idle storm shard-calls kv tls)
declare -A ABOUT=(
  [echo-d1]="echo, 64 B messages, 50 connections, one request in flight each (weft load)"
  [echo-d16]="echo, 64 B messages, 50 connections, 16 pipelined requests each (weft load)"
  [echo-rate]="echo latency at a fixed open-loop rate well below saturation (weft load --rate BENCH_RATE)"
  [http-wrk]="HTTP/1.1 plaintext keep-alive, wrk -t1 -c50"
  [http-load]="HTTP/1.1 plaintext keep-alive, weft load --proto http, 50 connections"
  [churn]="a new connection per 64 B echo request, closed with a reset, 50 in flight"
  [idle]="server RSS growth per idle connection over BENCH_IDLE_CONNS connections"
  [storm]="accept storm of BENCH_STORM_RATE connections/s while 50 established clients ping"
  [shard-calls]="weft's cross-shard calls (submit_to) between two shards: round trip and throughput"
  [kv]="weft serve --proto kv against redis-server with redis-benchmark -P 1 and -P 16, and memory per key"
  [tls]="HTTP over TLS 1.3 (ECDSA P-256) against nginx with the same certificate: keep-alive, resumed and full handshakes/s, with wrk and with weft load as the client"
)
if [[ ${1:-} == --list || ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'
  echo
  for s in "${SCENARIOS[@]}"; do printf '  %-10s %s\n' "$s" "${ABOUT[$s]}"; done
  exit 0
fi

D=${BENCH_DURATION:-5}
WARMUP=${BENCH_WARMUP:-1}
ROUNDS=${BENCH_ROUNDS:-3}
SERVER_CORE=${BENCH_SERVER_CORE:-0}
LOAD_CORE=${BENCH_LOAD_CORE:-1}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
STORM_RATE=${BENCH_STORM_RATE:-5000}
RATE=${BENCH_RATE:-20000}
PORT=${BENCH_PORT:-19100}
OUT=${BENCH_OUT:-bench/RESULTS.md}
if [[ $# -gt 0 ]]; then ONLY=$(IFS=,; echo "$*"); else ONLY=${BENCH_ONLY:-all}; fi
for s in ${ONLY//,/ }; do
  [[ $s == all || -n ${ABOUT[$s]:-} ]] || { echo "run.sh: unknown scenario $s (see --list)" >&2; exit 2; }
done
wanted() { [[ $ONLY == all || ,$ONLY, == *,$1,* ]]; }
source bench/lib.sh

# --- tools -----------------------------------------------------------------------------------
if [[ ${BENCH_INSTALL:-1} != 0 ]] && { ! command -v nginx >/dev/null || ! command -v wrk >/dev/null \
     || ! command -v perf >/dev/null; } && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  log "installing nginx, wrk and perf (BENCH_INSTALL=0 skips this)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx wrk linux-perf; } >/dev/null 2>&1 \
    || log "apt-get failed: rows of what is missing are skipped (without perf: no per-request counts)"
fi
command -v nginx >/dev/null && NGINX=nginx || NGINX=""
command -v wrk >/dev/null && WRK=wrk || WRK=""
command -v python3 >/dev/null && PY=python3 || PY=""
TWISTED=""
[[ -n $PY ]] && "$PY" -c 'import twisted' 2>/dev/null && TWISTED=yes

log "building (release)"
cargo build --release --quiet --bin weft
cargo build --release --quiet -p weft-bench
# Paths relative to the repository root, so that the commands in RESULTS.md can be rerun as
# they stand.
T=target/release
build_peers tokio glommio monoio
WEFT=$T/weft
# The binary whose `weft load` drives echo and http-load (by default the weft just built; a
# fixed one keeps the load generator the same while comparing engine builds).
LOAD_BIN=${BENCH_LOAD_BIN:-$WEFT}
HAVE_LOAD=""
"$LOAD_BIN" load --help >/dev/null 2>&1 && HAVE_LOAD=yes

RAW=target/bench-raw
rm -rf "$RAW"
mkdir -p "$RAW"
TSV=$RAW/results.tsv
: >"$TSV"
raise_limits
if [[ $(nproc) -lt 2 ]]; then
  log "only one core: server and load share core 0 (numbers are not comparable to 2-core runs)"
  LOAD_CORE=$SERVER_CORE
fi
ON_SERVER=(taskset -c "$SERVER_CORE")
ON_LOAD=(taskset -c "$LOAD_CORE")

# --- servers ---------------------------------------------------------------------------------
WARM=() # a load command run (and discarded) before the measured one

nginx_conf() { # dir port
  mkdir -p "$1/logs"
  cat >"$1/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$2 backlog=1024;
        location / { default_type text/plain; return 200 "Hello, World!"; }
    }
}
EOF
}

# start_server NAME: starts a peer on the server core; sets SERVER_PID, SERVER_CMD, ADDR.
start_server() {
  next_port
  local cmd
  case $1 in
    weft-echo)    cmd=("$WEFT" serve --proto echo --listen "$ADDR" --cores 1 --drain-timeout 1s) ;;
    weft-http)    cmd=("$WEFT" serve --proto http --listen "$ADDR" --cores 1 --drain-timeout 1s) ;;
    tokio-echo)   cmd=("$P/tokio-echo" --listen "$ADDR" --cores 1) ;;
    tokio-http)   cmd=("$P/tokio-http" --listen "$ADDR" --cores 1) ;;
    glommio-echo) cmd=("$P/glommio-echo" --listen "$ADDR" --cores 1) ;;
    monoio-echo)  cmd=("$P/monoio-echo" --listen "$ADDR" --cores 1) ;;
    twisted-echo) cmd=("$PY" bench/twisted_echo.py 127.0.0.1 "$PORT") ;;
    nginx)        nginx_conf "$ROOT/$RAW/nginx" "$PORT"
                  cmd=("$NGINX" -p "$ROOT/$RAW/nginx" -c "$ROOT/$RAW/nginx/nginx.conf") ;;
  esac
  launch "$RAW/$1.$PORT.log" "${ON_SERVER[@]}" "${cmd[@]}"
}

# record SCENARIO SERVER KIND STATUS FILE NOTE LOADCMD [USAGE [COUNTERS]]: one row for report.py.
record() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$SERVER_CMD" "$7" \
    "${8:-}" "${9:-}" >>"$TSV"
}

# measure SCENARIO SERVER KIND LOAD-COMMAND...: starts SERVER, runs the load on the load core,
# stops the server and records the outcome. "{ADDR}", "{PID}" and "{OUT}" in the command are
# replaced by the server address, its pid and the output file. With COUNT_AFTER set (seconds
# from the load's start to its measured part), the server's system calls and CPU are counted
# over the measured part less COUNT_MARGIN s at each end (counters_start in lib.sh).
measure() {
  local scenario=$1 server=$2 kind=$3; shift 3
  local out=$RAW/$scenario.$server${ROUND:+.r$ROUND}.out
  SERVER_CMD=""
  if ! start_server "$server"; then
    record "$scenario" "$server" "$kind" failed "" "server did not start" ""; return 0
  fi
  local args=() warm=() a
  for a in "$@"; do a=${a//\{ADDR\}/$ADDR}; a=${a//\{PID\}/$SERVER_PID}; args+=("${a//\{OUT\}/$out}"); done
  for a in "${WARM[@]}"; do warm+=("${a//\{ADDR\}/$ADDR}"); done
  local cmd="${ON_LOAD[*]} ${args[*]}"
  [[ ${#warm[@]} -gt 0 ]] && cmd="${ON_LOAD[*]} ${warm[*]} (warm-up, discarded), then $cmd"
  log "$scenario / $server: $cmd"
  local ok="" usage counters=""
  if [[ ${#warm[@]} -eq 0 ]] || "${ON_LOAD[@]}" "${warm[@]}" >/dev/null 2>&1; then
    usage_start
    if [[ -n ${COUNT_AFTER:-} ]]; then
      counters=$out.counters
      counters_start "$(awk -v a="$COUNT_AFTER" -v m="$COUNT_MARGIN" 'BEGIN { print a + m }')" \
        "$(awk -v d="$D" -v m="$COUNT_MARGIN" 'BEGIN { print d - 2 * m }')" "$counters"
    fi
    "${ON_LOAD[@]}" "${args[@]}" >"$out.log" 2>&1 && ok=yes
    counters_end
    usage=$(usage_end)
  fi
  if [[ -n $ok ]]; then
    [[ $kind == wrk ]] && cp "$out.log" "$out"
    record "$scenario" "$server" "$kind" ok "$out" "" "$cmd" "$usage" "$counters"
  else
    record "$scenario" "$server" "$kind" failed "" "$(tail -n 2 "$out.log" | tr '\t\n' '  ')" "$cmd"
  fi
  stop_server
}

skip() { SERVER_CMD=""; record "$1" "$2" "$3" skipped "" "$4" ""; }

echo_servers=(weft-echo)
[[ -n ${PEER_BUILT[tokio]:-} ]] && echo_servers+=(tokio-echo)
[[ -n ${PEER_BUILT[monoio]:-} ]] && echo_servers+=(monoio-echo)
[[ -n ${PEER_BUILT[glommio]:-} ]] && echo_servers+=(glommio-echo)
[[ -n $TWISTED ]] && echo_servers+=(twisted-echo)
http_servers=(weft-http)
[[ -n ${PEER_BUILT[tokio]:-} ]] && http_servers+=(tokio-http)
[[ -n $NGINX ]] && http_servers+=(nginx)

# The counted window: from COUNT_MARGIN s into the measured part to COUNT_MARGIN s before its
# end, so that neither the warm-up nor the teardown is in it.
COUNT_MARGIN=$(awk -v d="$D" 'BEGIN { m = d / 10; print (m > 0.5 ? 0.5 : m) }')

weft_load() { # scenario server proto pipeline [more weft load options]
  if [[ -z $HAVE_LOAD ]]; then skip "$1" "$2" load "$LOAD_BIN has no load subcommand yet (issue 7)"; return; fi
  COUNT_AFTER=$WARMUP measure "$1" "$2" load "$LOAD_BIN" load --target "{ADDR}" --proto "$3" --conns 50 \
    --cores 1 --duration "${D}s" --warmup "${WARMUP}s" --pipeline "$4" "${@:5}" --json "{OUT}"
}

# --- scenarios -------------------------------------------------------------------------------
log "scenarios: $ONLY; ${D}s measured after ${WARMUP}s warm-up; server core $SERVER_CORE, load core $LOAD_CORE"
# Throughput rows alternate the servers, BENCH_ROUNDS times; RESULTS.md shows each server's
# median run (this VM's runs vary by up to 10% from one to the next).
for ROUND in $(seq "$ROUNDS"); do
  if wanted echo-d1; then for s in "${echo_servers[@]}"; do weft_load echo-d1 "$s" echo 1; done; fi
  if wanted echo-d16; then for s in "${echo_servers[@]}"; do weft_load echo-d16 "$s" echo 16; done; fi
  if wanted echo-rate; then for s in "${echo_servers[@]}"; do weft_load echo-rate "$s" echo 1 --rate "$RATE"; done; fi
  if wanted http-wrk; then
    for s in "${http_servers[@]}"; do
      if [[ -z $WRK ]]; then skip http-wrk "$s" wrk "wrk is not installed"; continue; fi
      # wrk has no warm-up option: a first short run warms up, the second is measured.
      WARM=("$WRK" -t1 -c50 "-d${WARMUP}s" "http://{ADDR}/")
      COUNT_AFTER=0 measure http-wrk "$s" wrk "$WRK" -t1 -c50 "-d${D}s" --latency "http://{ADDR}/"
    done
    WARM=()
  fi
  if wanted http-load; then for s in "${http_servers[@]}"; do weft_load http-load "$s" http 1; done; fi
done
ROUND=""
if wanted churn; then
  for s in "${echo_servers[@]}"; do
    # --reset: closed with a FIN, every connection leaves a TIME_WAIT socket on the client, and
    # connect() finds only ~14k reusable ports a second: every server measured 14.4k/s with a
    # p99 of 100 ms (bench/src/bin/churn.rs).
    COUNT_AFTER=$WARMUP measure churn "$s" json "$T/churn" --target "{ADDR}" --cores 1 --conns 50 --duration "${D}s" \
      --warmup "${WARMUP}s" --size 64 --reset --json "{OUT}"
  done
fi
if wanted idle; then
  for s in "${echo_servers[@]}"; do
    measure idle "$s" json "$T/idle" --target "{ADDR}" --pid "{PID}" --conns "$IDLE_CONNS" --settle 1s --json "{OUT}"
  done
fi
if wanted storm; then
  for s in "${echo_servers[@]}"; do
    measure storm "$s" json "$T/storm" --target "{ADDR}" --cores 1 --established 50 --ping-rate 100 \
      --storm-rate "$STORM_RATE" --duration "${D}s" --size 64 --json "{OUT}"
  done
fi

# --- report ----------------------------------------------------------------------------------
[[ -n $PY ]] || { echo "run.sh: python3 is needed to write $OUT; raw results are in $RAW" >&2; exit 1; }
BENCH_ROUNDS=$ROUNDS BENCH_DURATION=$D BENCH_WARMUP=$WARMUP BENCH_SERVER_CORE=$SERVER_CORE BENCH_LOAD_CORE=$LOAD_CORE \
  BENCH_IDLE_CONNS=$IDLE_CONNS BENCH_STORM_RATE=$STORM_RATE BENCH_RATE=$RATE BENCH_ONLY=$ONLY \
  "$PY" bench/report.py "$TSV" "$OUT"
if wanted shard-calls; then
  # weft's own mechanism, no peer: a section of its own after the peer tables.
  log "shard-calls: two shards on cores $SERVER_CORE,$LOAD_CORE"
  {
    echo
    echo "## Cross-shard calls"
    echo
    echo "\`target/release/shard-calls --cores $SERVER_CORE,$LOAD_CORE\` (bench/src/bin/shard-calls.rs): a"
    echo "two-shard engine of tasks; shard 1 calls \`weft::shard::submit_to(0, ..)\` against a counter on"
    echo "shard 0, first one call at a time, then 256 in flight."
    echo
    target/release/shard-calls --cores "$SERVER_CORE,$LOAD_CORE"
  } >> "$OUT"
fi
if wanted kv; then
  log "kv: weft serve --proto kv against redis-server (bench/kv.sh)"
  {
    echo
    echo "## Key-value: weft serve --proto kv against redis-server"
    echo
    echo "\`bench/kv.sh\`: each server alone on core $SERVER_CORE (redis-server \`--save '' --appendonly no\`;"
    echo "weft one shard), \`redis-benchmark -t set,get -c 50\` on core $LOAD_CORE, medians of $ROUNDS."
    echo
    BENCH_SERVER_CORE=$SERVER_CORE BENCH_LOAD_CORE=$LOAD_CORE BENCH_ROUNDS=$ROUNDS bench/kv.sh
  } >> "$OUT"
fi
if wanted tls; then
  if [[ -z $NGINX || -z $WRK ]] || ! command -v openssl >/dev/null; then
    log "tls: skipped (needs nginx, wrk and openssl)"
  else
    log "tls: weft serve --proto http over TLS against nginx (bench/tls.sh)"
    {
      echo
      echo "## TLS: weft serve --proto http --tls-cert against nginx ssl"
      echo
      echo "\`bench/tls.sh\`: one ECDSA P-256 certificate for both, each server alone on core $SERVER_CORE"
      echo "(nginx one worker, weft one shard), the client (\`wrk -t1 -c50\` or \`weft load --conns 50\`) on core"
      echo "$LOAD_CORE, ${D}s runs after a 1 s warm-up, medians of $ROUNDS. Handshakes: a new connection per request"
      echo "(\`Connection: close\`); both clients resume the session of an earlier connection unless \`--tls-no-resume\`."
      echo
      BENCH_SERVER_CORE=$SERVER_CORE BENCH_LOAD_CORE=$LOAD_CORE BENCH_ROUNDS=$ROUNDS BENCH_DURATION=$D bench/tls.sh
    } >> "$OUT"
  fi
fi
log "wrote $OUT (raw outputs in $RAW)"
