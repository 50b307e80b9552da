# Shell helpers shared by bench/run.sh and bench/scaling.sh (sourced, not run).
# They keep one server at a time in SERVER_PID and stop it on exit.

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }

SERVER_PID=""
SERVER_CMD=""

# stop_server: SIGTERM, up to 5 s to exit, then SIGKILL.
stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# build_peers CRATE...: builds the peers in bench/peers/CRATE, each on its own from its own
# Cargo.lock (--locked: the versions committed there) with cargo's default release profile,
# as a user of that runtime builds it, into target/peers (P: their binaries). PEER_BUILT[CRATE]
# is set for each that built; one that did not is logged and left out.
P=target/peers/release
declare -A PEER_BUILT=()
build_peers() {
  local crate
  for crate in "$@"; do
    if CARGO_TARGET_DIR=target/peers cargo build --release --quiet --locked \
         --manifest-path "bench/peers/$crate/Cargo.toml"; then
      PEER_BUILT[$crate]=yes
    else
      log "bench/peers/$crate did not build: its rows are left out"
    fi
  done
}

# raise_limits: descriptors for thousands of connections, locked memory for io_uring (as root
# the hard limits can be raised too; otherwise the soft ones go up to them).
raise_limits() {
  ulimit -Hn 1048576 2>/dev/null || true
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -Hl)" 2>/dev/null || true
}

# tree_pids PID: the process and its descendants (nginx's master and its worker).
tree_pids() {
  echo "$1"
  local c
  for c in $(pgrep -P "$1" 2>/dev/null); do tree_pids "$c"; done
}

# proc_ticks PID: CPU time (user + system, in clock ticks) of the process and its descendants.
proc_ticks() {
  local total=0 p f
  for p in $(tree_pids "$1"); do
    read -r -a f <"/proc/$p/stat" 2>/dev/null || continue
    total=$((total + f[13] + f[14]))
  done
  echo "$total"
}

# proc_user_sys PID: "user system" CPU clock ticks of the process and its descendants.
proc_user_sys() {
  local user=0 sys=0 p f
  for p in $(tree_pids "$1"); do
    read -r -a f <"/proc/$p/stat" 2>/dev/null || continue
    user=$((user + f[13])); sys=$((sys + f[14]))
  done
  echo "$user $sys"
}

# Kernel entries and CPU of the server over a window inside the measured part of a load:
# counters_start DELAY LENGTH FILE starts, in the background, `perf stat` on the server's
# processes (system-call tracepoints and task-clock; this needs no hardware counters) from
# DELAY s after now for LENGTH s, and brackets it with the /proc user/system ticks; it appends
# "window,USER_TICKS,SYS_TICKS,CLK_TCK,WALL_NS" to FILE. counters_end waits for it. Without
# perf (or permission for it) FILE says so and only the /proc split is recorded.
COUNTERS_JOB=""
counters_start() {
  local delay=$1 length=$2 file=$3 pids
  pids=$(tree_pids "$SERVER_PID" | paste -sd, -)
  (
    sleep "$delay"
    read -r u0 s0 < <(proc_user_sys "$SERVER_PID")
    t0=$(date +%s%N)
    if command -v perf >/dev/null; then
      perf stat -x, -o "$file" -e raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter,task-clock \
        -p "$pids" -- sleep "$length" >/dev/null 2>&1 || echo "perf,failed" >>"$file"
    else
      echo "perf,missing" >"$file"; sleep "$length"
    fi
    read -r u1 s1 < <(proc_user_sys "$SERVER_PID")
    echo "window,$((u1 - u0)),$((s1 - s0)),$(getconf CLK_TCK),$(($(date +%s%N) - t0))" >>"$file"
  ) &
  COUNTERS_JOB=$!
}
counters_end() {
  [[ -n $COUNTERS_JOB ]] || return 0
  wait "$COUNTERS_JOB" 2>/dev/null || true
  COUNTERS_JOB=""
}

# core_ticks CORE: "busy total" clock ticks of one core since boot (/proc/stat; busy is all but
# idle and iowait, so softirq work done on that core counts).
core_ticks() {
  awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# Usage sampling around a load: usage_start, then usage_end prints
# "server-process-CPU% server-core-busy% load-core-busy%" since usage_start.
usage_start() {
  U_T0=$(date +%s%N)
  U_P0=$(proc_ticks "$SERVER_PID")
  read -r U_S0 U_ST0 < <(core_ticks "$SERVER_CORE")
  read -r U_L0 U_LT0 < <(core_ticks "$LOAD_CORE")
}
usage_end() {
  local t1 p1 s1 st1 l1 lt1 hz
  t1=$(date +%s%N)
  p1=$(proc_ticks "$SERVER_PID")
  read -r s1 st1 < <(core_ticks "$SERVER_CORE")
  read -r l1 lt1 < <(core_ticks "$LOAD_CORE")
  hz=$(getconf CLK_TCK)
  awk -v p=$((p1 - U_P0)) -v hz="$hz" -v ns=$((t1 - U_T0)) -v s=$((s1 - U_S0)) -v st=$((st1 - U_ST0)) \
      -v l=$((l1 - U_L0)) -v lt=$((lt1 - U_LT0)) \
      'BEGIN { printf "%.0f %.0f %.0f\n", 100 * p / hz / (ns / 1e9), (st ? 100 * s / st : 0), (lt ? 100 * l / lt : 0) }'
}

# median: the median of the numbers on stdin, one per line ("-" for none).
median() { sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "-")}'; }

# next_port: sets PORT to the next port nobody listens on, and ADDR to 127.0.0.1:PORT. A fresh
# port per server keeps a lingering server from joining the next one's SO_REUSEPORT group.
next_port() {
  PORT=$((PORT + 1))
  while ss -Htln "sport = :$PORT" 2>/dev/null | grep -q .; do PORT=$((PORT + 1)); done
  ADDR=127.0.0.1:$PORT
}

# launch LOGFILE COMMAND...: starts a server in the background, sets SERVER_PID and
# SERVER_CMD, and waits (up to 10 s) until PORT accepts connections.
launch() {
  local logfile=$1; shift
  SERVER_CMD="$*"
  "$@" >"$logfile" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then sleep 0.2; return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "server did not start: $SERVER_CMD: $(tail -n 3 "$logfile" | tr '\n' ' ')"
  stop_server
  return 1
}
