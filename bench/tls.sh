#!/usr/bin/env bash
# weft serve --proto http over TLS against nginx with the same certificate, as Markdown on
# stdout.
#
#   bench/tls.sh                # server on core 0, wrk on core 1
#
# One ECDSA P-256 certificate (made here with openssl) for both servers, each alone on
# BENCH_SERVER_CORE (default 0; nginx one worker, weft one shard), wrk on BENCH_LOAD_CORE
# (default 1), BENCH_ROUNDS rounds alternating servers, medians reported:
#   - keep-alive: `wrk -t1 -c50` over plain HTTP and over https (TLS 1.3, the client's
#     default), and the TLS/plaintext ratio of each server;
#   - full handshakes: `wrk -t1 -c50 -H "Connection: close"`, a new connection and a full
#     handshake per request (wrk keeps no session to resume).
# BENCH_DURATION seconds per run (default 5), after a 1 s wrk warm-up; BENCH_MODES picks the
# runs (default "plain tls handshake"), BENCH_WEFT_ARGS adds flags to weft's command line
# (e.g. "--spin-before-park 200us"), BENCH_WEFT runs another weft binary. A second table
# gives, per mode, the server's CPU per request (user + system of its processes, /proc),
# wrk's (its rusage) and both cores' busy shares (/proc/stat): with the load core near 100%
# wrk is the bottleneck, and the server's CPU per request is the comparison that means
# something. Needs nginx, wrk and openssl (Debian), and a built weft.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
MODES=${BENCH_MODES:-plain tls handshake}
SERVER_CORE=${BENCH_SERVER_CORE:-0}
LOAD_CORE=${BENCH_LOAD_CORE:-1}
ROUNDS=${BENCH_ROUNDS:-3}
D=${BENCH_DURATION:-5}
PORT=${BENCH_PORT:-19500}
WEFT=${BENCH_WEFT:-target/release/weft}
DIR=$(pwd)/target/bench-raw/tls
mkdir -p "$DIR/logs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$DIR/key.pem" -out "$DIR/cert.pem" 2>/dev/null

nginx_conf() { # port tls(0|1)
  local listen="listen 127.0.0.1:$1 backlog=1024;"
  [[ $2 == 1 ]] && listen="listen 127.0.0.1:$1 ssl backlog=1024;
        ssl_certificate $DIR/cert.pem; ssl_certificate_key $DIR/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;"
  cat >"$DIR/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/logs/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 100000000;
    server {
        $listen
        location / { default_type text/plain; return 200 "Hello, World!"; }
    }
}
EOF
}
start() { # name port tls -> pid
  case $1 in
    weft)
      local tls=()
      [[ $3 == 1 ]] && tls=(--tls-cert "$DIR/cert.pem" --tls-key "$DIR/key.pem")
      taskset -c "$SERVER_CORE" "$WEFT" serve --proto http --listen "127.0.0.1:$2" \
        --cores "$SERVER_CORE," --drain-timeout 1s "${tls[@]}" ${BENCH_WEFT_ARGS:-} >/dev/null 2>&1 & ;;
    nginx)
      nginx_conf "$2" "$3"
      taskset -c "$SERVER_CORE" nginx -p "$DIR" -c "$DIR/nginx.conf" >/dev/null 2>&1 & ;;
  esac
  echo $!
}
stop() { # pid (nginx's master takes its worker along)
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
  kill -9 "$1" 2>/dev/null || true
}
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "tls.sh: nothing listens on port $1" >&2
  return 1
}
# seconds "XmY.YYYs" -> seconds (the format of bash's `times`)
seconds() { awk -v t="$1" 'BEGIN { split(t, a, "m"); sub("s", "", a[2]); print a[1] * 60 + a[2] }'; }
# rps name mode port -> "req/s server-µs/req wrk-µs/req server-core-busy% load-core-busy%"
# (mode: plain, tls, handshake)
rps() {
  local name=$1 mode=$2 port=$3 pid scheme=https extra=()
  [[ $mode == plain ]] && scheme=http
  [[ $mode == handshake ]] && extra=(-H "Connection: close")
  pid=$(start "$name" "$port" "$([[ $mode == plain ]] && echo 0 || echo 1)")
  wait_port "$port"
  taskset -c "$LOAD_CORE" wrk -t1 -c50 -d1s "${extra[@]}" "$scheme://127.0.0.1:$port/" >/dev/null 2>&1 || true
  local out p0 p1 s0 st0 s1 st1 l0 lt0 l1 lt1
  p0=$(proc_ticks "$pid")
  read -r s0 st0 < <(core_ticks "$SERVER_CORE")
  read -r l0 lt0 < <(core_ticks "$LOAD_CORE")
  # `times` in this subshell: its children's CPU, that is wrk's.
  out=$(taskset -c "$LOAD_CORE" wrk -t1 -c50 "-d${D}s" "${extra[@]}" "$scheme://127.0.0.1:$port/" 2>&1; times)
  p1=$(proc_ticks "$pid")
  read -r s1 st1 < <(core_ticks "$SERVER_CORE")
  read -r l1 lt1 < <(core_ticks "$LOAD_CORE")
  stop "$pid"
  echo "$name $mode: $out" >>"$DIR/wrk.log"
  local children wrk_s
  children=$(echo "$out" | tail -n 1)
  wrk_s=$(awk -v u="$(seconds "${children% *}")" -v s="$(seconds "${children#* }")" 'BEGIN { print u + s }')
  echo "$out" | awk -v p=$((p1 - p0)) -v hz="$(getconf CLK_TCK)" -v w="$wrk_s" \
      -v s=$((s1 - s0)) -v st=$((st1 - st0)) -v l=$((l1 - l0)) -v lt=$((lt1 - lt0)) '
    / requests in / { n = $1 }
    /^Requests\/sec:/ { r = $2 }
    END { printf "%s %.1f %.1f %.0f %.0f\n", r, (n ? 1e6 * p / hz / n : 0), (n ? 1e6 * w / n : 0),
          (st ? 100 * s / st : 0), (lt ? 100 * l / lt : 0) }'
}

# runs[name.mode.metric]: one figure per round; metrics rps, srv (server µs/request), wrk
# (wrk µs/request), sb and lb (server and load core busy %).
declare -A runs
for _ in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    for name in weft nginx; do
      PORT=$((PORT + 1))
      read -r r srv wrk sb lb < <(rps "$name" "$mode" "$PORT")
      runs[$name.$mode.rps]+="$r " runs[$name.$mode.srv]+="$srv " runs[$name.$mode.wrk]+="$wrk "
      runs[$name.$mode.sb]+="$sb " runs[$name.$mode.lb]+="$lb "
    done
  done
done
# m key: the median of a figure, or nothing for a mode not run (shown as "-").
m() { [[ -n ${runs[$1]:-} ]] && printf '%s\n' ${runs[$1]} | median || true; }
echo "| wrk -t1 -c50, one server core | plaintext req/s | TLS 1.3 keep-alive req/s | TLS/plaintext | full handshakes/s (Connection: close) |"
echo "|---|---:|---:|---:|---:|"
for name in weft nginx; do
  awk -v n="$name" -v p="$(m "$name.plain.rps")" -v t="$(m "$name.tls.rps")" -v h="$(m "$name.handshake.rps")" '
    function f(x) { return x == "" ? "-" : sprintf("%.0f", x) }
    BEGIN { printf "| %s | %s | %s | %s | %s |\n", n, f(p), f(t), (p && t ? sprintf("%.2f", t/p) : "-"), f(h) }'
done
awk -v wt="$(m weft.tls.rps)" -v nt="$(m nginx.tls.rps)" -v wh="$(m weft.handshake.rps)" -v nh="$(m nginx.handshake.rps)" '
  function r(a, b) { return a && b ? sprintf("%.2fx", a/b) : "-" }
  BEGIN { printf "| weft / nginx | | %s | | %s |\n", r(wt, nt), r(wh, nh) }'
echo
echo "| medians | server | req/s | server CPU µs/request | wrk CPU µs/request | server core busy | wrk core busy |"
echo "|---|---|---:|---:|---:|---:|---:|"
for mode in $MODES; do
  for name in weft nginx; do
    printf '| %s | %s | %.0f | %s | %s | %s%% | %s%% |\n' "$mode" "$name" "$(m "$name.$mode.rps")" \
      "$(m "$name.$mode.srv")" "$(m "$name.$mode.wrk")" "$(m "$name.$mode.sb")" "$(m "$name.$mode.lb")"
  done
  awk -v m="$mode" -v w="$(m "weft.$mode.srv")" -v n="$(m "nginx.$mode.srv")" 'BEGIN {
    printf "| %s | weft / nginx, server CPU per request | | %.2fx | | | |\n", m, (n ? w/n : 0) }'
done
for k in "${!runs[@]}"; do echo "<!-- runs $k: ${runs[$k]}-->"; done | sort
