#!/bin/bash
# Device run: shard scaling (weft vs tokio, 1-8 shards) and a quiet 1-core head-to-head.
cd "$(dirname "$0")"
ulimit -l unlimited 2>/dev/null; ulimit -n 100000 2>/dev/null
echo "kernel $(uname -r); cpus $(nproc); $(grep -m1 'model name' /proc/cpuinfo)"
num() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p" "$2" | head -1; }
p99() { python3 - "$1" 2>/dev/null <<'P' || grep -A6 '"latency_us"' "$1" | sed -n 's/.*"p99": \([0-9.]*\).*/\1/p' | head -1
import json,sys;print(json.load(open(sys.argv[1]))["latency_us"]["p99"])
P
}
port=20000
run() { # name shards server-cores load-cores conns pipeline -- server command...
  local name=$1 shards=$2 sc=$3 lc=$4 conns=$5 pipe=$6; shift 7
  port=$((port+1))
  taskset -c $sc "$@" --listen 127.0.0.1:$port >/dev/null 2>&1 & local spid=$!
  sleep 0.5
  local nl=$(taskset -c $lc nproc)
  taskset -c $lc ./weft load --target 127.0.0.1:$port --proto echo --conns $conns --cores $lc --duration 4s --warmup 1s --size 64 --pipeline $pipe --json $OUT/$name-$shards-$pipe.json >/dev/null 2>&1
  kill $spid; wait $spid 2>/dev/null
  echo "| $name | $shards | $pipe | $conns | $(num rps $OUT/$name-$shards-$pipe.json) | $(p99 $OUT/$name-$shards-$pipe.json) |"
}
echo "| server | shards | pipeline | conns | req/s | p99 µs |"
echo "|---|---|---|---|---|---|"
if [ -z "$HEAD_ONLY" ]; then
for n in 1 2 4 8; do
  sc=0-$((n-1)); lc=8-15
  run weft $n $sc $lc $((64*n)) 1 -- ./weft serve --proto echo --cores $n
  run tokio $n $sc $lc $((64*n)) 1 -- ./tokio-echo --cores $sc
done
fi
for pipe in 1 16; do
  run weft 1 0 1 50 $pipe -- ./weft serve --proto echo --cores 1
  run tokio 1 0 1 50 $pipe -- ./tokio-echo --cores 0,
  run glommio 1 0 1 50 $pipe -- ./glommio-echo --cores 0,
  run weft-spin 1 0 1 50 $pipe -- ./weft serve --proto echo --cores 1 --spin-before-park 50us
done
