#!/usr/bin/env bash
# Shard scaling: weft echo with 1, 2, 4 and 8 shards against the same pinned load, as a table.
#
#   bench/scaling.sh                  # build, measure, print a markdown table
#
# Shards run on cores 0..N-1 (taskset, `weft serve --cores N`); the load (`weft load`, 64 B
# echo, SCALE_CONNS_PER_SHARD connections per shard) always runs on the same cores, the upper
# half of the machine, so that only the server side changes between rows. A shard count that
# does not fit in the lower half is skipped with a note: on a 2-core machine only the 1-shard
# row runs, a 16-core machine runs them all. Needs `weft load` (issue 7).
#
# Knobs: SCALE_SHARDS ("1 2 4 8"), SCALE_DURATION (s, 5), SCALE_WARMUP (s, 1),
# SCALE_CONNS_PER_SHARD (64), SCALE_PIPELINE (1), SCALE_SERVERS ("weft"; "weft tokio" adds the
# tokio peer), SCALE_LOAD_CORES (a taskset list overriding the upper half), SCALE_PORT (19300),
# SCALE_OUT (target/bench-raw/scaling.md), SCALE_BUILD=0 (use the binaries already in
# target/release and target/peers/release, e.g. on a machine without the crates), SCALE_LOAD_BIN (the binary whose
# `load` subcommand makes the load; default target/release/weft).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

SHARDS=${SCALE_SHARDS:-1 2 4 8}
D=${SCALE_DURATION:-5}
WARMUP=${SCALE_WARMUP:-1}
PER_SHARD=${SCALE_CONNS_PER_SHARD:-64}
PIPELINE=${SCALE_PIPELINE:-1}
SERVERS=${SCALE_SERVERS:-weft}
PORT=${SCALE_PORT:-19300}
OUT=${SCALE_OUT:-target/bench-raw/scaling.md}
T=target/release
NPROC=$(nproc)

if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
if (( NPROC < 2 )); then
  echo "scaling.sh: this machine has $NPROC core; the server and the load need one each at least." >&2
  exit 0
fi
# The largest shard count that leaves at least as many cores to the load.
MAX=0
for n in $SHARDS; do (( n <= NPROC / 2 && n > MAX )) && MAX=$n; done
if (( MAX == 0 )); then
  echo "scaling.sh: none of the shard counts ($SHARDS) fits in half of this machine's $NPROC cores." >&2
  exit 0
fi
LOAD_CORES=${SCALE_LOAD_CORES:-$MAX-$((NPROC - 1))}
LOAD_N=$(taskset -c "$LOAD_CORES" nproc)

if [[ ${SCALE_BUILD:-1} != 0 ]]; then
  log "building (release)"
  cargo build --release --quiet --bin weft
  [[ " $SERVERS " == *" tokio "* ]] && build_peers tokio
fi
LOAD_BIN=${SCALE_LOAD_BIN:-$T/weft}
if ! "$LOAD_BIN" load --help >/dev/null 2>&1; then
  echo "scaling.sh: $LOAD_BIN has no \`load\` subcommand yet (issue 7); nothing measured." >&2
  exit 1
fi
raise_limits
RAW=target/bench-raw/scaling
rm -rf "$RAW"
mkdir -p "$RAW" "$(dirname "$OUT")"

field() { # json-file key... : prints one number from weft load's JSON
  python3 -c 'import json,sys
v=json.load(open(sys.argv[1]))
for k in sys.argv[2:]:
    v=v.get(k) if isinstance(v,dict) else None
if isinstance(v,dict): v=v.get("total")
print("-" if v is None else ("%.0f" % v))' "$@"
}

rows=()
commands=()
for server in $SERVERS; do
  base=""
  for n in $SHARDS; do
    if (( n > MAX )); then
      rows+=("| $server | $n | skipped: needs $((2 * n)) cores, this machine has $NPROC | | | | | |")
      continue
    fi
    next_port
    case $server in
      weft)  cmd=("$T/weft" serve --proto echo --listen "$ADDR" --cores "$n" --drain-timeout 1s) ;;
      tokio) cmd=("$P/tokio-echo" --listen "$ADDR" --cores "$n") ;;
      *) echo "scaling.sh: unknown server $server (weft or tokio)" >&2; exit 2 ;;
    esac
    if ! launch "$RAW/$server.$n.log" taskset -c "0-$((n - 1))" "${cmd[@]}"; then
      rows+=("| $server | $n | server did not start | | | | | |")
      continue
    fi
    json=$RAW/$server.$n.json
    load=(taskset -c "$LOAD_CORES" "$LOAD_BIN" load --target "$ADDR" --proto echo --conns $((PER_SHARD * n))
          --cores "$LOAD_N" --duration "${D}s" --warmup "${WARMUP}s" --pipeline "$PIPELINE" --size 64 --json "$json")
    commands+=("$SERVER_CMD" "${load[*]}")
    log "$server, $n shards: ${load[*]}"
    if "${load[@]}" >"$RAW/$server.$n.load.log" 2>&1 && rps=$(field "$json" rps) && [[ $rps =~ ^[0-9]+$ ]]; then
      [[ -z $base ]] && base=$rps
      rows+=("$(printf '| %s | %s | %s | %s | %s | %s | %s | %s |' "$server" "$n" "$rps" \
        "$((rps / n))" "$(python3 -c "print('%.2fx' % ($rps / $base) if $base else '-')")" \
        "$(field "$json" latency_us p50)" "$(field "$json" latency_us p99)" "$(field "$json" errors)")")
    else
      rows+=("| $server | $n | load failed: $(tail -n 1 "$RAW/$server.$n.load.log") | | | | | |")
    fi
    stop_server
  done
done

{
  echo "## Shard scaling: 64 B echo, depth $PIPELINE, $PER_SHARD connections per shard"
  echo
  echo "$(lscpu | sed -n 's/^Model name: *//p'), $NPROC CPUs ($(lscpu | sed -n 's/^Thread(s) per core: *//p') thread(s) per core);" \
       "kernel $(uname -r); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
  echo "Shards on cores 0..N-1, load on cores $LOAD_CORES ($LOAD_N load threads); ${D} s measured after ${WARMUP} s warm-up."
  echo
  echo "| server | shards | requests/s | per shard | vs 1 shard | p50 (us) | p99 (us) | errors |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
  echo
  echo '```'
  printf '%s\n' "${commands[@]}"
  echo '```'
} | tee "$OUT"
log "wrote $OUT"
