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
# BENCH_DURATION seconds per run (default 5), after a 1 s wrk warm-up. Needs nginx, wrk and
# openssl (Debian), and a built weft.
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_CORE=${BENCH_SERVER_CORE:-0}
LOAD_CORE=${BENCH_LOAD_CORE:-1}
ROUNDS=${BENCH_ROUNDS:-3}
D=${BENCH_DURATION:-5}
PORT=${BENCH_PORT:-19500}
WEFT=target/release/weft
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
        --cores "$SERVER_CORE," --drain-timeout 1s "${tls[@]}" >/dev/null 2>&1 & ;;
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
# rps name mode port -> requests/s (mode: plain, tls, handshake)
rps() {
  local name=$1 mode=$2 port=$3 pid scheme=https extra=()
  [[ $mode == plain ]] && scheme=http
  [[ $mode == handshake ]] && extra=(-H "Connection: close")
  pid=$(start "$name" "$port" "$([[ $mode == plain ]] && echo 0 || echo 1)")
  wait_port "$port"
  taskset -c "$LOAD_CORE" wrk -t1 -c50 -d1s "${extra[@]}" "$scheme://127.0.0.1:$port/" >/dev/null 2>&1 || true
  local out
  out=$(taskset -c "$LOAD_CORE" wrk -t1 -c50 "-d${D}s" "${extra[@]}" "$scheme://127.0.0.1:$port/" 2>&1)
  stop "$pid"
  echo "$out" >>"$DIR/wrk.log"
  echo "$out" | awk '/^Requests\/sec:/ {print $2}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A runs
for _ in $(seq 1 "$ROUNDS"); do
  for mode in plain tls handshake; do
    for name in weft nginx; do
      PORT=$((PORT + 1))
      runs[$name.$mode]+="$(rps "$name" "$mode" "$PORT") "
    done
  done
done
m() { printf '%s\n' ${runs[$1]} | median; }
echo "| wrk -t1 -c50, one server core | plaintext req/s | TLS 1.3 keep-alive req/s | TLS/plaintext | full handshakes/s (Connection: close) |"
echo "|---|---:|---:|---:|---:|"
for name in weft nginx; do
  awk -v n="$name" -v p="$(m "$name.plain")" -v t="$(m "$name.tls")" -v h="$(m "$name.handshake")" 'BEGIN {
    printf "| %s | %.0f | %.0f | %.2f | %.0f |\n", n, p, t, (p ? t/p : 0), h }'
done
awk -v wt="$(m weft.tls)" -v nt="$(m nginx.tls)" -v wh="$(m weft.handshake)" -v nh="$(m nginx.handshake)" 'BEGIN {
  printf "| weft / nginx | | %.2fx | | %.2fx |\n", (nt ? wt/nt : 0), (nh ? wh/nh : 0) }'
for k in "${!runs[@]}"; do echo "<!-- runs $k: ${runs[$k]}-->"; done | sort
