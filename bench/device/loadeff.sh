#!/bin/bash
# weft load vs wrk per load core: an 8-shard weft http server (cores 0-7) that one load core
# cannot saturate; each generator pinned to core 8, 64 connections, 5 s, two rounds.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=$PWD
ulimit -l unlimited 2>/dev/null; ulimit -n 100000 2>/dev/null
taskset -c 0-7 ./weft serve --proto http --cores 8 --listen 127.0.0.1:21000 >/dev/null 2>&1 & spid=$!
sleep 1
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
tick=$(getconf CLK_TCK)
echo "| generator | round | req/s | load CPU s | req per load CPU-second |"
echo "|---|---|---:|---:|---:|"
for round in 1 2; do
  TIMEFORMAT=%U+%S
  t=$( { time taskset -c 8 ./wrk -t1 -c64 -d5s http://127.0.0.1:21000/ > wrk.out 2>&1; } 2>&1 )
  rps=$(awk '/Requests\/sec/ {print $2}' wrk.out); c=$(echo "$t" | awk -F+ '{print $1+$2}')
  echo "| wrk -t1 -c64 | $round | $rps | $c | $(awk -v r="$rps" -v c="$c" 'BEGIN{printf "%d", r*5/c}') |"
  t=$( { time taskset -c 8 ./weft load --target 127.0.0.1:21000 --proto http --conns 64 --cores 8, --duration 5s --json wl.json > /dev/null 2>&1; } 2>&1 )
  rps=$(sed -n 's/^  "rps": \([0-9.]*\).*/\1/p' wl.json | tail -1); c=$(echo "$t" | awk -F+ '{print $1+$2}')
  echo "| weft load --cores 8, --conns 64 | $round | $rps | $c | $(awk -v r="$rps" -v c="$c" 'BEGIN{printf "%d", r*5/c}') |"
done
kill $spid; wait $spid 2>/dev/null
