#!/usr/bin/env bash
# Echo A/B of builds (and peers), side by side in one run, as Markdown on stdout: the quick
# check of a change to the socket path before a full bench/run.sh.
#
#   bench/ab.sh before=/tmp/weft-before after=target/release/weft
#   bench/ab.sh weft=target/release/weft tokio=target/peers/release/tokio-echo
#   BENCH_AB_DEPTH=16 bench/ab.sh ...           # pipelined requests per connection (default 1)
#   BENCH_AB_RATE=20000 bench/ab.sh ...         # open loop at this rate instead of closed loop
#   BENCH_AB_USER=1 bench/ab.sh ...             # also user time per request (perf record)
#
# Servers are NAME=PATH: a path whose name ends in -echo (bench/peers binaries) runs as
# `PATH --listen ADDR --cores 1`, any other as `PATH serve --proto echo --listen ADDR --cores 1`.
# Each runs alone on BENCH_SERVER_CORE (default 0) under `weft load --proto echo --conns 50
# --size 64` on BENCH_LOAD_CORE (default 1), BENCH_ROUNDS rounds (default 3) alternating
# servers, BENCH_DURATION seconds each (default 5) after a 1 s warm-up; medians reported. Over a
# window inside each run: the server's CPU per request (perf's task-clock), system calls and
# io_uring_enter calls per request, its user share (/proc), and with BENCH_AB_USER=1 its
# user-space time per request (`perf record --all-user` samples at 20 kHz; the sampling
# itself slows the server, so compare that column between servers only). Ratios are against
# the first server. Load: BENCH_LOAD_BIN (default target/release/weft).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SERVER_CORE=${BENCH_SERVER_CORE:-0}
LOAD_CORE=${BENCH_LOAD_CORE:-1}
ROUNDS=${BENCH_ROUNDS:-3}
D=${BENCH_DURATION:-5}
DEPTH=${BENCH_AB_DEPTH:-1}
RATE=${BENCH_AB_RATE:-}
LOAD=${BENCH_LOAD_BIN:-target/release/weft}
PORT=${BENCH_PORT:-19400}
DIR=target/bench-raw/ab
mkdir -p "$DIR"
[[ $# -gt 0 ]] || { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
raise_limits

# one NAME=PATH ROUND: a row "name rps cpu_us enters syscalls user_share user_us" in $DIR/rows.
one() {
  local name=${1%%=*} path=${1#*=} out counters cmd
  next_port
  case $path in
    *-echo) cmd=("$path" --listen "$ADDR" --cores 1) ;;
    *) cmd=("$path" serve --proto echo --listen "$ADDR" --cores 1 --drain-timeout 1s) ;;
  esac
  launch "$DIR/$name.log" taskset -c "$SERVER_CORE" "${cmd[@]}" || return 0
  out=$DIR/$name.r$2.out counters=$DIR/$name.r$2.counters
  rm -f "$counters"
  taskset -c "$LOAD_CORE" "$LOAD" load --proto echo --target "$ADDR" --conns 50 --size 64 \
    --pipeline "$DEPTH" --warmup 1s --duration "${D}s" ${RATE:+--rate "$RATE"} --json "$out" \
    >/dev/null 2>&1 &
  local load=$! window=$((D - 2)) samples=-
  counters_start 2 "$window" "$counters"
  if [[ -n ${BENCH_AB_USER:-} ]]; then
    sleep 2
    perf record -q -o "$DIR/$name.perf" -e cpu-clock -F 20000 --all-user -p "$SERVER_PID" \
      -- sleep "$window" >/dev/null 2>&1
    samples=$(perf script -i "$DIR/$name.perf" -F period 2>/dev/null | wc -l)
  fi
  counters_end
  wait "$load" || true
  stop_server
  # Per request as bench/run.sh counts it (report.py reads the load's JSON and the counters).
  python3 - "$name" "$out" "$counters" "$window" "$samples" >>"$DIR/rows" <<'EOF'
import sys
sys.path.insert(0, "bench")
import report
name, out, counters, window, samples = sys.argv[1:]
with open(out) as f:
    row = {"m": report.parse_json(f.read()), "counters": report.parse_counters(counters)}
report.per_request(row)
x, rps = row["m"]["extra"], row["m"]["rps"]
user_us = "%.3f" % (int(samples) / 20000 / (rps * float(window)) * 1e6) if samples != "-" else "-"
keys = ("cpu_us_per_req", "uring_per_req", "syscalls_per_req", "user_share")
print(name, rps, *(x.get(k, "nan") for k in keys), user_us)
EOF
}

rm -f "$DIR/rows"
for r in $(seq "$ROUNDS"); do
  for s in "$@"; do
    log "ab round $r: ${s%%=*}"
    one "$s" "$r"
  done
done
python3 - "$DIR/rows" "$@" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
names = [a.split("=", 1)[0] for a in sys.argv[2:]]
med = lambda xs: statistics.median(xs) if xs else float("nan")
print("| server | req/s | CPU µs/req | io_uring_enter/req | syscalls/req | user share | user µs/req | req/s vs %s | CPU/req vs %s |" % (names[0], names[0]))
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
base = None
for n in names:
    rs = [r for r in rows if r[0] == n]
    rps, cpu = med([float(r[1]) for r in rs]), med([float(r[2]) for r in rs])
    user = [float(r[6]) for r in rs if r[6] != "-"]
    base = base or (rps, cpu)
    print("| %s | %s | %.3f | %.3f | %.3f | %.0f%% | %s | %.2fx | %.2fx |" % (
        n, f"{rps:,.0f}", cpu, med([float(r[3]) for r in rs]), med([float(r[4]) for r in rs]),
        100 * med([float(r[5]) for r in rs]), "%.3f" % med(user) if user else "-",
        rps / base[0], cpu / base[1]))
EOF
