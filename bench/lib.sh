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

# raise_limits: descriptors for thousands of connections, locked memory for io_uring (as root
# the hard limits can be raised too; otherwise the soft ones go up to them).
raise_limits() {
  ulimit -Hn 1048576 2>/dev/null || true
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -Hl)" 2>/dev/null || true
}

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
