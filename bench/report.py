"""Writes bench/RESULTS.md from the rows bench/run.sh recorded.

Usage: python3 bench/report.py RESULTS.TSV OUT.md

Each TSV row: scenario, server, kind (load | json | wrk), status (ok | failed | skipped),
output file, note, server command, load command, usage during the load (the server
process's CPU %, the server core's and the load core's busy %) and the counters file: `perf
stat -x,` output (raw_syscalls:sys_enter, syscalls:sys_enter_io_uring_enter, task-clock) for
a window inside the measured part, then a line "window,USER_TICKS,SYS_TICKS,CLK_TCK,WALL_NS"
from /proc over the same window (bench/lib.sh, counters_start). `load` and `json` outputs are
JSON objects in the layout of `weft load --json` (rps, errors, latency_us.p50/p99/p999,
extras); `wrk` outputs are wrk's text with --latency. The file is rewritten whole on every run.
"""

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone

# scenario -> (title, what is compared, direction). "rps": higher is better; the rest lower.
SCENARIOS = {
    "echo-d1": ("Echo, 64 B, 50 connections, depth 1", "rps"),
    "echo-d16": ("Echo, 64 B, 50 connections, depth 16 (pipelined)", "rps"),
    "echo-rate": ("Echo latency at a fixed rate: 64 B, 50 connections, open loop at BENCH_RATE "
                  "requests/s (well below saturation)", "p99"),
    "http-wrk": ("HTTP plaintext keep-alive, wrk -t1 -c50", "rps"),
    "http-load": ("HTTP plaintext keep-alive, weft load --proto http, 50 connections", "rps"),
    "churn": ("Connection churn: a new connection per 64 B echo request, closed with a reset, 50 in "
              "flight", "rps"),
    "idle": ("Idle connections: server RSS growth per connection", "rss_per_conn_bytes"),
    "storm": ("Accept storm: established clients' ping latency during the storm", "p99"),
}

# The targets: issue 14 (against the best of the named peers in the same run), issue 8's churn
# and issue 4's idle memory. Each: scenario, text, measure (a row -> number), the peers it is
# compared with, and the test of weft's value against the best of theirs (None: no peer).
TARGETS = [
    ("echo-d1", "req/s >= 1.05x best of tokio, monoio", "rps", ("tokio", "monoio"),
     lambda v, best: v >= 1.05 * best),
    ("echo-d16", "req/s >= 1.05x best of tokio, monoio", "rps", ("tokio", "monoio"),
     lambda v, best: v >= 1.05 * best),
    ("http-wrk", "req/s >= 1.05x best of tokio, nginx", "rps", ("tokio", "nginx"),
     lambda v, best: v >= 1.05 * best),
    ("http-load", "req/s >= 1.05x best of tokio, nginx", "rps", ("tokio", "nginx"),
     lambda v, best: v >= 1.05 * best),
    ("echo-d1", "syscalls per request <= 0.2", "syscalls_per_req", (), lambda v, best: v <= 0.2),
    ("echo-rate", "p99 <= best peer's", "p99", ("tokio", "monoio", "glommio"),
     lambda v, best: v <= best),
    ("churn", "req/s >= 1.0x tokio", "rps", ("tokio",), lambda v, best: v >= best),
    ("idle", "RSS/conn <= 0.5x tokio and <= 4 KiB", "rss_per_conn_bytes", ("tokio",),
     lambda v, best: v <= 0.5 * best and v <= 4096),
]

SERVER_ORDER = ["weft", "tokio", "monoio", "glommio", "twisted", "nginx"]


def peer(server):
    """weft-echo -> weft, nginx -> nginx."""
    return server.split("-")[0]


def wrk_time_us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return None
    scale = {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[m.group(2)]
    return float(m.group(1)) * scale


def parse_wrk(text):
    out = {"extra": {}}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        raise ValueError("no Requests/sec in wrk output")
    out["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = int(m.group(1)) if m else None
    for pct, key in (("50", "p50"), ("99", "p99"), ("99.9", "p999")):
        m = re.search(r"^\s+%s(?:\.000)?%%\s+(\S+)" % pct, text, re.M)
        out[key] = wrk_time_us(m.group(1)) if m else None
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errors += sum(int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errors += int(m.group(1))
    out["errors"] = errors
    return out


def parse_json(text):
    j = json.loads(text)
    lat = j.get("latency_us") or {}
    errors = j.get("errors", 0)
    if isinstance(errors, dict):
        errors = errors.get("total", sum(v for v in errors.values() if isinstance(v, (int, float))))
    known = {"requests", "rps", "errors", "latency_us", "latency_uncorrected_us"}
    return {
        "rps": j.get("rps"),
        "requests": j.get("requests"),
        "p50": lat.get("p50"),
        "p99": lat.get("p99"),
        "p999": lat.get("p999"),
        "errors": errors,
        "extra": {k: v for k, v in j.items() if k not in known and isinstance(v, (int, float))},
    }


def parse_counters(path):
    """The counters file of one run: system calls, io_uring_enter calls, task-clock (ms),
    user and system CPU seconds and the window's wall seconds; None where not measured."""
    c = {"syscalls": None, "uring": None, "task_ms": None, "user_s": None, "sys_s": None,
         "wall_s": None, "note": None}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    events = {"raw_syscalls:sys_enter": "syscalls", "syscalls:sys_enter_io_uring_enter": "uring",
              "task-clock": "task_ms"}
    for line in lines:
        parts = line.split(",")
        if line.startswith("#") or len(parts) < 2:
            continue
        if parts[0] == "window" and len(parts) >= 5:
            hz = float(parts[3]) or 100.0
            c["user_s"], c["sys_s"] = int(parts[1]) / hz, int(parts[2]) / hz
            c["wall_s"] = int(parts[4]) / 1e9
        elif parts[0] == "perf":
            c["note"] = "perf %s" % parts[1]
        elif len(parts) >= 3 and parts[2] in events:
            try:
                c[events[parts[2]]] = float(parts[0])
            except ValueError:  # <not counted>, <not supported>
                pass
    return c


def per_request(row):
    """Adds the per-request figures of a run to its metrics: syscalls, io_uring_enter calls,
    server CPU (µs) per request over the counted window, and the user share of its CPU."""
    m, c = row["m"], row.get("counters")
    if m is None or not c or not c["wall_s"] or not m.get("rps"):
        return
    requests = m["rps"] * c["wall_s"]
    x = m["extra"]
    if c["syscalls"] is not None:
        x["syscalls_per_req"] = c["syscalls"] / requests
    if c["uring"] is not None:
        x["uring_per_req"] = c["uring"] / requests
    if c["task_ms"] is not None:
        x["cpu_us_per_req"] = c["task_ms"] * 1e3 / requests
    if c["user_s"] is not None and c["user_s"] + c["sys_s"] > 0:
        x["user_share"] = c["user_s"] / (c["user_s"] + c["sys_s"])


def load_rows(path):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 8:
                continue
            scenario, server, kind, status, out, note, server_cmd, load_cmd = parts[:8]
            usage = [float(x) for x in parts[8].split()] if len(parts) > 8 and parts[8].strip() else []
            counters = parse_counters(parts[9]) if len(parts) > 9 and parts[9].strip() else None
            row = {"scenario": scenario, "server": server, "peer": peer(server), "status": status,
                   "note": note, "server_cmd": server_cmd, "load_cmd": load_cmd, "m": None,
                   "usage": usage if len(usage) == 3 else None, "counters": counters}
            if status == "ok":
                try:
                    with open(out) as o:
                        text = o.read()
                    row["m"] = parse_wrk(text) if kind == "wrk" else parse_json(text)
                    per_request(row)
                except (OSError, ValueError) as e:
                    row["status"], row["note"] = "failed", "unreadable output: %s" % e
            rows.append(row)
    return rows


def median_rows(rows):
    """Keeps one row per scenario and server: the median run by the scenario's metric (the
    other runs are named in its note)."""
    groups = {}
    for r in rows:
        groups.setdefault((r["scenario"], r["server"]), []).append(r)
    kept = []
    for (scenario, _), rs in groups.items():
        metric = SCENARIOS.get(scenario, ("", "rps"))[1]
        ok = [r for r in rs if r["status"] == "ok" and value(r, metric) is not None]
        if len(ok) < 2:
            kept.append(ok[0] if ok else rs[0])
            continue
        ok.sort(key=lambda r: value(r, metric))
        mid = ok[len(ok) // 2]
        mid["note"] = "median of %d runs: %s" % (len(ok), ", ".join(fmt(value(r, metric)) for r in ok))
        kept.append(mid)
    return kept


def value(row, metric):
    m = row["m"]
    if m is None:
        return None
    if metric in ("rps", "p50", "p99", "p999"):
        return m.get(metric)
    return m["extra"].get(metric)


def usage_cells(row):
    """Server CPU %, server and load core busy %."""
    u = row["usage"]
    if not u:
        return ["-", "-", "-"]
    server_cpu, server_core, load_core = u
    bound = " (load-bound)" if load_core >= 95 and server_core < 90 else ""
    return ["%.0f%%" % server_cpu, "%.0f%%" % server_core, "%.0f%%%s" % (load_core, bound)]


def cost_cells(row):
    """Per request over the counted window: syscalls, io_uring_enter calls, server CPU (µs),
    and the server's user / kernel split."""
    x = row["m"]["extra"]
    share = x.get("user_share")
    split = "%.0f%% / %.0f%%" % (100 * share, 100 * (1 - share)) if share is not None else "-"
    return [fmt(x.get("syscalls_per_req"), 2), fmt(x.get("uring_per_req"), 2),
            fmt(x.get("cpu_us_per_req"), 2), split]


def fmt(v, digits=0):
    if v is None:
        return "-"
    if isinstance(v, float) and digits == 0:
        return "{:,.0f}".format(v)
    return "{:,.{}f}".format(v, digits)


def ratio(v, base):
    if v is None or not base:
        return None
    return v / base


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine():
    model = ""
    for line in sh("lscpu").splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    commit = sh("git rev-parse --short HEAD") or "unknown"
    if sh("git status --porcelain --untracked-files=no"):
        commit += " (with uncommitted changes)"
    def locked(name, crate):
        """The version of `name` in the peer crate's own lock file."""
        path = os.path.join("bench", "peers", crate, "Cargo.lock")
        lock = open(path).read() if os.path.exists(path) else ""
        m = re.search(r'name = "%s"\nversion = "([^"]+)"' % re.escape(name), lock)
        return m.group(1) if m else "?"

    twisted = sh("python3 -c 'import twisted; print(twisted.__version__)'")
    nginx = sh("nginx -v 2>&1").replace("nginx version: ", "")
    wrk = sh("wrk -v 2>&1 | head -n 1").split(" [")[0]
    peers = ["tokio %s" % locked("tokio", "tokio"), "monoio %s" % locked("monoio", "monoio"),
             "glommio %s (crates.io)" % locked("glommio", "glommio")]
    peers += ["Twisted %s (%s)" % (twisted, sh("python3 --version"))] if twisted else []
    peers += [nginx] if nginx else []
    peers += [wrk] if wrk else []
    return [
        ("machine", "%s, %s CPUs (nproc)" % (model or "unknown CPU", sh("nproc"))),
        ("kernel", sh("uname -r")),
        ("rustc", sh("rustc --version")),
        ("commit", commit),
        ("date", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("pinning", "every server on core %s, every load generator on core %s (taskset), one at a time"
         % (os.environ.get("BENCH_SERVER_CORE", "0"), os.environ.get("BENCH_LOAD_CORE", "1"))),
        ("length", "%s s measured after a %s s warm-up per run; throughput rows: the median of "
         "%s runs, servers alternating; fixed-rate latency at %s requests/s" % (
            os.environ.get("BENCH_DURATION", "5"), os.environ.get("BENCH_WARMUP", "1"),
            os.environ.get("BENCH_ROUNDS", "1"), os.environ.get("BENCH_RATE", "20000"))),
        ("peers", ", ".join(peers)),
    ]


def scenario_table(scenario, rows):
    title, metric = SCENARIOS[scenario]
    title = title.replace("BENCH_RATE", os.environ.get("BENCH_RATE", "20000"))
    base = next((value(r, metric) for r in rows if r["peer"] == "tokio" and r["status"] == "ok"), None)
    lines = ["## %s" % title, ""]
    if scenario == "idle":
        lines += ["| server | RSS growth per connection | anonymous per connection | connections held "
                  "| errors | vs tokio (lower is better) |", "|---|---:|---:|---:|---:|---:|"]
    elif scenario == "storm":
        lines += ["| server | ping p50 quiet (us) | ping p99 quiet (us) | ping p50 storm (us) "
                  "| ping p99 storm (us) | storm connections/s | errors | server CPU "
                  "| p99 storm vs tokio (lower is better) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    elif scenario == "echo-rate":
        lines += ["| server | requests/s | p50 (us) | p99 (us) | p99.9 (us) | errors | syscalls/req "
                  "| io_uring_enter/req | server CPU/req (us) | user / kernel | server CPU "
                  "| p99 vs tokio (lower is better) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    else:
        lines += ["| server | requests/s | p50 (us) | p99 (us) | errors | syscalls/req "
                  "| io_uring_enter/req | server CPU/req (us) | user / kernel | server CPU "
                  "| server core busy | load core busy | vs tokio |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append("| %s | %s: %s |" % (r["server"], r["status"], r["note"] or "-"))
            continue
        m = r["m"]
        rv = ratio(value(r, metric), base)
        rs = "%.2fx" % rv if rv is not None else "-"
        if scenario == "idle":
            x = m["extra"]
            lines.append("| %s | %s B | %s B | %s | %s | %s |" % (
                r["server"], fmt(x.get("rss_per_conn_bytes")), fmt(x.get("anon_per_conn_bytes")),
                fmt(x.get("alive")), fmt(m["errors"]), rs))
        elif scenario == "storm":
            x = m["extra"]
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                r["server"], fmt(x.get("quiet_p50_us")), fmt(x.get("quiet_p99_us")), fmt(m["p50"]),
                fmt(m["p99"]), fmt(m["rps"]), fmt(m["errors"]), usage_cells(r)[0], rs))
        elif scenario == "echo-rate":
            cells = [r["server"], fmt(m["rps"]), fmt(m["p50"]), fmt(m["p99"]), fmt(m["p999"]),
                     fmt(m["errors"])] + cost_cells(r) + [usage_cells(r)[0], rs]
            lines.append("| " + " | ".join(cells) + " |")
        else:
            cells = [r["server"], fmt(m["rps"]), fmt(m["p50"]), fmt(m["p99"]), fmt(m["errors"])]
            lines.append("| " + " | ".join(cells + cost_cells(r) + usage_cells(r) + [rs]) + " |")
    lines.append("")
    runs = ["- %s: %s" % (r["server"], r["note"]) for r in rows if r["status"] == "ok" and r["note"]]
    if runs:
        lines += ["Each row is the server's median run; all runs, in %s:" % (
            "requests/s" if metric == "rps" else metric), ""] + runs + [""]
    return lines


def targets_table(by_scenario):
    lines = ["## Targets (issue 14; churn: issue 8; idle memory: issue 4)", "",
             "For a rate target, the last two columns tell whether the rate is the server's: the "
             "load core's busy share in weft's run (near 100%: the client's limit), and weft's "
             "server CPU per request against the same peer's (below 1.00x: weft does each request "
             "with less CPU).", "",
             "| scenario | target | weft | best peer | weft / best peer | met | load core (weft run) | "
             "CPU/req, weft / that peer |",
             "|---|---|---:|---:|---:|---|---:|---:|"]
    units = {"rps": "/s", "rss_per_conn_bytes": " B", "p99": " us", "syscalls_per_req": ""}
    for scenario, text, metric, peers, check in TARGETS:
        rows = [r for r in by_scenario.get(scenario, []) if r["status"] == "ok"]
        vals = {r["peer"]: value(r, metric) for r in rows}
        w = vals.get("weft")
        theirs = {p: vals[p] for p in peers if vals.get(p) is not None}
        if w is None or (peers and not theirs):
            lines.append("| %s | %s | - | - | - | not measured | - | - |" % (scenario, text))
            continue
        pick = max if metric == "rps" else min
        best_peer = pick(theirs, key=theirs.get) if theirs else None
        best = theirs.get(best_peer)
        digits = 2 if metric == "syscalls_per_req" else 0
        shown = "%s (%s)" % (fmt(best, digits) + units[metric], best_peer) if best_peer else "-"
        r = ratio(w, best)
        load, cpu = "-", "-"
        if metric == "rps":
            by_peer = {row["peer"]: row for row in rows}
            if by_peer["weft"]["usage"]:
                load = "%.0f%%" % by_peer["weft"]["usage"][2]
            cpus = [by_peer[p]["m"]["extra"].get("cpu_us_per_req") for p in ("weft", best_peer)]
            if None not in cpus and cpus[1]:
                cpu = "%.2fx" % (cpus[0] / cpus[1])
        lines.append("| %s | %s | %s%s | %s | %s | %s | %s | %s |" % (
            scenario, text, fmt(w, digits), units[metric], shown, "%.2fx" % r if r is not None else "-",
            "yes" if check(w, best) else "**no**", load, cpu))
    lines.append("")
    return lines


def main():
    tsv, out = sys.argv[1], sys.argv[2]
    rows = median_rows(load_rows(tsv))
    by_scenario = {}
    for r in rows:
        by_scenario.setdefault(r["scenario"], []).append(r)
    for rs in by_scenario.values():
        rs.sort(key=lambda r: SERVER_ORDER.index(r["peer"]) if r["peer"] in SERVER_ORDER else 99)
    lines = ["# Benchmark results", "",
             "Written by `bench/run.sh` (scenarios: %s); rerun it to regenerate this file, do not "
             "edit it. Method: tuning.md, \"Measuring\". Ratios are against tokio in the same run."
             % os.environ.get("BENCH_ONLY", "all"), "",
             "| | |", "|---|---|"]
    lines += ["| %s | %s |" % kv for kv in machine()]
    lines += ["",
              "Server CPU: the server's CPU time (all its threads and processes) over the load "
              "run's wall time, 100% being one core. Server and load core busy: each core's busy "
              "share (/proc/stat, softirq included); a server core much busier than the server's "
              "CPU means something else ran there (or loopback softirq work). *load-bound* marks a run whose load core was "
              "saturated while the server core was not: its rate is the client's limit, not the "
              "server's, and server CPU per request compares the servers instead.", "",
              "Per request, counted on the server's processes over the measured part of each run "
              "less a margin at each end (so neither warm-up nor teardown is in it), and divided by "
              "the requests the load tool counted in the same time (its requests/s times the "
              "window): *syscalls/req* (`perf stat -e raw_syscalls:sys_enter`, every system call "
              "entry), *io_uring_enter/req* (`syscalls:sys_enter_io_uring_enter`, a subset of "
              "them), *server CPU/req* (perf's task-clock: CPU time of all the server's threads), "
              "and *user / kernel*: the split of the server's CPU time over the same window "
              "(/proc/PID/stat utime and stime). Loopback TCP makes the sender's core run the "
              "receiver's softirq work, so the kernel share includes part of the client's "
              "receive path. \"-\": not measured (perf missing or not permitted).", ""]
    lines += targets_table(by_scenario)
    analysis = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ANALYSIS.md")
    if os.path.exists(analysis):
        with open(analysis) as f:
            lines += [f.read().rstrip("\n"), ""]
    for scenario in SCENARIOS:
        if scenario in by_scenario:
            lines += scenario_table(scenario, by_scenario[scenario])
    lines += ["## Commands", "",
              "Exactly as run from the repository root, one server at a time: the server (in the "
              "background), then the load; the server is stopped with SIGTERM after each load. "
              "During each throughput and fixed-rate load, bench/lib.sh (counters_start) also runs "
              "`perf stat -x, -e raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter,task-clock "
              "-p SERVER_PIDS -- sleep WINDOW` from the start of the measured part plus the margin, "
              "reading /proc/PID/stat before and after it.", ""]
    for scenario in SCENARIOS:
        runs = [r for r in by_scenario.get(scenario, []) if r["server_cmd"] or r["load_cmd"]]
        if runs:
            lines += ["%s:" % scenario, "```"]
            for r in runs:
                lines += [r["server_cmd"] or "# (no server)", r["load_cmd"] or "# (no load)"]
            lines += ["```", ""]
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
