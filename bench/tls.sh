#!/usr/bin/env bash
# weft serve --proto http over TLS against nginx with the same certificate, as Markdown on
# stdout.
#
#   bench/tls.sh                # server on core 0, the client on core 1
#
# One ECDSA P-256 certificate (made here with openssl) for both servers, each alone on
# BENCH_SERVER_CORE (default 0; nginx one worker, weft one shard), the client (wrk or weft
# load) on BENCH_LOAD_CORE (default 1), BENCH_ROUNDS rounds alternating servers, medians
# reported:
#   - keep-alive: `wrk -t1 -c50` over plain HTTP and over https (TLS 1.3, the client's
#     default), and the TLS/plaintext ratio of each server;
#   - handshake: `wrk -t1 -c50 -H "Connection: close"`, a new connection and a handshake per
#     request; wrk's OpenSSL resumes the session of the connection's previous handshake
#     (TLS 1.3 ticket), so these are resumed handshakes;
#   - load-plain, load-tls, load-resume, load-full: `weft load --conns 50` (rustls) as the
#     client instead: plaintext and TLS keep-alive; `--new-conn-per-request`, resuming
#     sessions as wrk does; and with `--tls-no-resume` as well, a full handshake
#     (certificate, signature, key exchange) per request. A client that costs its core less
#     than wrk shows more of the servers' own limits.
# BENCH_DURATION seconds per run (default 5), after a 1 s warm-up with the same client;
# BENCH_MODES picks the runs (default "plain tls handshake load-plain load-tls load-resume
# load-full"), BENCH_WEFT_ARGS adds flags to weft's command line (e.g. "--spin-before-park
# 200us"), BENCH_WEFT runs another weft binary (the `weft load` client is always
# target/release/weft). A second table gives, per mode, the server's CPU per request (user +
# system of its processes, /proc), the client's (its rusage) and both cores' busy shares
# (/proc/stat): with the load core near 100% the client is the bottleneck, and the server's
# CPU per request is the comparison that means something. Needs nginx, wrk and openssl (Debian), and a built weft.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
MODES=${BENCH_MODES:-plain tls handshake load-plain load-tls load-resume load-full}
SERVER_CORE=${BENCH_SERVER_CORE:-0}
LOAD_CORE=${BENCH_LOAD_CORE:-1}
ROUNDS=${BENCH_ROUNDS:-3}
D=${BENCH_DURATION:-5}
PORT=${BENCH_PORT:-19500}
WEFT=${BENCH_WEFT:-target/release/weft}
LOAD=target/release/weft
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
# client mode port seconds: runs the mode's client on the load core (wrk, or weft load for
# the load-* modes); its report on stdout.
client() {
  local url=https://127.0.0.1:$2/
  case $1 in
    plain) taskset -c "$LOAD_CORE" wrk -t1 -c50 "-d$3s" "http://127.0.0.1:$2/" ;;
    tls) taskset -c "$LOAD_CORE" wrk -t1 -c50 "-d$3s" "$url" ;;
    handshake) taskset -c "$LOAD_CORE" wrk -t1 -c50 "-d$3s" -H "Connection: close" "$url" ;;
    load-*)
      local target=$url extra=(--tls-insecure)
      case $1 in
        load-plain) target=http://127.0.0.1:$2/ extra=() ;;
        load-resume) extra+=(--new-conn-per-request) ;;
        load-full) extra+=(--new-conn-per-request --tls-no-resume) ;;
      esac
      taskset -c "$LOAD_CORE" "$LOAD" load --target "$target" --conns 50 --cores "$LOAD_CORE," \
        --duration "$3s" "${extra[@]}" 2>&1 ;;
  esac
}
# rps name mode port -> "req/s server-µs/req client-µs/req server-core-busy% load-core-busy%"
rps() {
  local name=$1 mode=$2 port=$3 pid
  pid=$(start "$name" "$port" "$([[ $mode == *plain ]] && echo 0 || echo 1)")
  wait_port "$port"
  client "$mode" "$port" 1 >/dev/null 2>&1 || true
  local out p0 p1 s0 st0 s1 st1 l0 lt0 l1 lt1
  p0=$(proc_ticks "$pid")
  read -r s0 st0 < <(core_ticks "$SERVER_CORE")
  read -r l0 lt0 < <(core_ticks "$LOAD_CORE")
  # `times` in this subshell: its children's CPU, that is the client's.
  out=$(client "$mode" "$port" "$D" 2>&1; times)
  p1=$(proc_ticks "$pid")
  read -r s1 st1 < <(core_ticks "$SERVER_CORE")
  read -r l1 lt1 < <(core_ticks "$LOAD_CORE")
  stop "$pid"
  echo "$name $mode: $out" >>"$DIR/client.log"
  local children client_s
  children=$(echo "$out" | tail -n 1)
  client_s=$(awk -v u="$(seconds "${children% *}")" -v s="$(seconds "${children#* }")" 'BEGIN { print u + s }')
  # wrk: "N requests in ...", "Requests/sec: R"; weft load: "requests    N = R req/s".
  echo "$out" | awk -v p=$((p1 - p0)) -v hz="$(getconf CLK_TCK)" -v c="$client_s" \
      -v s=$((s1 - s0)) -v st=$((st1 - st0)) -v l=$((l1 - l0)) -v lt=$((lt1 - lt0)) '
    / requests in / { n = $1 }
    /^Requests\/sec:/ { r = $2 }
    /^requests / { n = $2; r = $4 }
    END { printf "%s %.1f %.1f %.0f %.0f\n", r, (n ? 1e6 * p / hz / n : 0), (n ? 1e6 * c / n : 0),
          (st ? 100 * s / st : 0), (lt ? 100 * l / lt : 0) }'
}

# runs[name.mode.metric]: one figure per round; metrics rps, srv (server µs/request), cli
# (client µs/request), sb and lb (server and load core busy %).
declare -A runs
for _ in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    for name in weft nginx; do
      PORT=$((PORT + 1))
      read -r r srv cli sb lb < <(rps "$name" "$mode" "$PORT")
      runs[$name.$mode.rps]+="$r " runs[$name.$mode.srv]+="$srv " runs[$name.$mode.cli]+="$cli "
      runs[$name.$mode.sb]+="$sb " runs[$name.$mode.lb]+="$lb "
    done
  done
done
# m key: the median of a figure, or nothing for a mode not run (shown as "-").
m() { [[ -n ${runs[$1]:-} ]] && printf '%s\n' ${runs[$1]} | median || true; }
# what mode -> the row's label and client.
what() {
  case $1 in
    plain) echo "plaintext keep-alive | wrk" ;;
    tls) echo "TLS 1.3 keep-alive | wrk" ;;
    handshake) echo "handshakes, resumed | wrk -H 'Connection: close'" ;;
    load-plain) echo "plaintext keep-alive | weft load" ;;
    load-tls) echo "TLS 1.3 keep-alive | weft load" ;;
    load-resume) echo "handshakes, resumed | weft load --new-conn-per-request" ;;
    load-full) echo "full handshakes | weft load --new-conn-per-request --tls-no-resume" ;;
  esac
}
echo "| one server core, 50 connections | client | weft req/s | nginx req/s | weft / nginx |"
echo "|---|---|---:|---:|---:|"
for mode in $MODES; do
  awk -v what="$(what "$mode")" -v w="$(m "weft.$mode.rps")" -v n="$(m "nginx.$mode.rps")" '
    BEGIN { printf "| %s | %.0f | %.0f | %s |\n", what, w, n, (w && n ? sprintf("%.2fx", w/n) : "-") }'
done
# ratio client plain-mode tls-mode: the TLS/plaintext keep-alive row of one client.
ratio() {
  awk -v c="$1" -v wp="$(m "weft.$2.rps")" -v wt="$(m "weft.$3.rps")" -v np="$(m "nginx.$2.rps")" -v nt="$(m "nginx.$3.rps")" '
    function r(a, b) { return a && b ? sprintf("%.2f", a/b) : "-" }
    BEGIN { if (wp && wt) printf "| TLS / plaintext keep-alive | %s | %s | %s | |\n", c, r(wt, wp), r(nt, np) }'
}
ratio wrk plain tls
ratio "weft load" load-plain load-tls
echo
echo "| medians | server | req/s | server CPU µs/request | client CPU µs/request | server core busy | client core busy |"
echo "|---|---|---:|---:|---:|---:|---:|"
for mode in $MODES; do
  for name in weft nginx; do
    printf '| %s | %s | %.0f | %s | %s | %s%% | %s%% |\n' "$mode" "$name" "$(m "$name.$mode.rps")" \
      "$(m "$name.$mode.srv")" "$(m "$name.$mode.cli")" "$(m "$name.$mode.sb")" "$(m "$name.$mode.lb")"
  done
  awk -v m="$mode" -v w="$(m "weft.$mode.srv")" -v n="$(m "nginx.$mode.srv")" 'BEGIN {
    printf "| %s | weft / nginx, server CPU per request | | %.2fx | | | |\n", m, (n ? w/n : 0) }'
done
for k in "${!runs[@]}"; do echo "<!-- runs $k: ${runs[$k]}-->"; done | sort
