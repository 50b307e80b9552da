"""Writes bench/RESULTS.md from the rows bench/run.sh recorded.

Usage: python3 bench/report.py RESULTS.TSV OUT.md

Each TSV row: scenario, server, kind (load | json | wrk), status (ok | failed | skipped),
output file, note, server command, load command, and usage during the load: the server
process's CPU %, the server core's and the load core's busy %. `load` and `json` outputs are JSON objects
in the layout of `weft load --json` (rps, errors, latency_us.p50/p99, extras); `wrk` outputs
are wrk's text with --latency. The file is rewritten whole on every run.
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
    "http-wrk": ("HTTP plaintext keep-alive, wrk -t1 -c50", "rps"),
    "http-load": ("HTTP plaintext keep-alive, weft load --proto http, 50 connections", "rps"),
    "churn": ("Connection churn: a new connection per 64 B echo request, 50 in flight", "rps"),
    "idle": ("Idle connections: server RSS growth per connection", "rss_per_conn_bytes"),
    "storm": ("Accept storm: established clients' ping latency during the storm", "p99"),
}

# The targets of issue 8 (ratios of weft to tokio in the same run), and issue 4's 4 KiB.
TARGETS = [
    ("echo-d1", "req/s >= 1.10x tokio", lambda r, v, peers: r is not None and r >= 1.10),
    ("echo-d16", "req/s >= 1.10x tokio", lambda r, v, peers: r is not None and r >= 1.10),
    ("http-wrk", "req/s >= 1.05x tokio and ahead of nginx",
     lambda r, v, peers: r is not None and r >= 1.05 and v > peers.get("nginx", 0)),
    ("http-load", "req/s >= 1.05x tokio and ahead of nginx",
     lambda r, v, peers: r is not None and r >= 1.05 and v > peers.get("nginx", 0)),
    ("churn", "req/s >= 1.0x tokio", lambda r, v, peers: r is not None and r >= 1.0),
    ("idle", "RSS/conn <= 0.5x tokio and <= 4 KiB",
     lambda r, v, peers: r is not None and r <= 0.5 and v <= 4096),
]

SERVER_ORDER = ["weft", "tokio", "glommio", "twisted", "nginx"]


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
    for pct, key in (("50", "p50"), ("99", "p99")):
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
        "errors": errors,
        "extra": {k: v for k, v in j.items() if k not in known and isinstance(v, (int, float))},
    }


def load_rows(path):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 8:
                continue
            scenario, server, kind, status, out, note, server_cmd, load_cmd = parts[:8]
            usage = [float(x) for x in parts[8].split()] if len(parts) > 8 and parts[8].strip() else []
            row = {"scenario": scenario, "server": server, "peer": peer(server), "status": status,
                   "note": note, "server_cmd": server_cmd, "load_cmd": load_cmd, "m": None,
                   "usage": usage if len(usage) == 3 else None}
            if status == "ok":
                try:
                    with open(out) as o:
                        text = o.read()
                    row["m"] = parse_wrk(text) if kind == "wrk" else parse_json(text)
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
    if metric in ("rps", "p50", "p99"):
        return m.get(metric)
    return m["extra"].get(metric)


def usage_cells(row, rps):
    """Server CPU %, server and load core busy %, requests per server CPU-second."""
    u = row["usage"]
    if not u:
        return ["-", "-", "-", "-"]
    server_cpu, server_core, load_core = u
    per_cpu = fmt(rps / (server_cpu / 100)) if rps and server_cpu > 0 else "-"
    bound = " (load-bound)" if load_core >= 95 and server_core < 90 else ""
    return ["%.0f%%" % server_cpu, "%.0f%%" % server_core, "%.0f%%%s" % (load_core, bound), per_cpu]


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
    lock = open("Cargo.lock").read() if os.path.exists("Cargo.lock") else ""

    def locked(name):
        m = re.search(r'name = "%s"\nversion = "([^"]+)"' % re.escape(name), lock)
        return m.group(1) if m else "?"

    twisted = sh("python3 -c 'import twisted; print(twisted.__version__)'")
    nginx = sh("nginx -v 2>&1").replace("nginx version: ", "")
    wrk = sh("wrk -v 2>&1 | head -n 1").split(" [")[0]
    peers = ["tokio %s" % locked("tokio"), "glommio %s" % locked("glommio")]
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
         "%s runs, servers alternating" % (
            os.environ.get("BENCH_DURATION", "5"), os.environ.get("BENCH_WARMUP", "1"),
            os.environ.get("BENCH_ROUNDS", "1"))),
        ("peers", ", ".join(peers)),
    ]


def scenario_table(scenario, rows):
    title, metric = SCENARIOS[scenario]
    base = next((value(r, metric) for r in rows if r["peer"] == "tokio" and r["status"] == "ok"), None)
    lines = ["## %s" % title, ""]
    if scenario == "idle":
        lines += ["| server | RSS growth per connection | anonymous per connection | connections held "
                  "| errors | vs tokio (lower is better) |", "|---|---:|---:|---:|---:|---:|"]
    elif scenario == "storm":
        lines += ["| server | ping p50 quiet (us) | ping p99 quiet (us) | ping p50 storm (us) "
                  "| ping p99 storm (us) | storm connections/s | errors | server CPU "
                  "| p99 storm vs tokio (lower is better) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    else:
        lines += ["| server | requests/s | p50 (us) | p99 (us) | errors | server CPU | server core busy "
                  "| load core busy | requests per server CPU-second | vs tokio |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
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
                fmt(m["p99"]), fmt(m["rps"]), fmt(m["errors"]), usage_cells(r, None)[0], rs))
        else:
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % tuple(
                [r["server"], fmt(m["rps"]), fmt(m["p50"]), fmt(m["p99"]), fmt(m["errors"])]
                + usage_cells(r, m["rps"]) + [rs]))
    lines.append("")
    runs = ["- %s: %s" % (r["server"], r["note"]) for r in rows if r["status"] == "ok" and r["note"]]
    if runs:
        lines += ["Each row is the server's median run; all runs, in %s:" % (
            "requests/s" if metric == "rps" else metric), ""] + runs + [""]
    return lines


def targets_table(by_scenario):
    lines = ["## Targets (issue 8; idle memory: issue 4)", "",
             "| scenario | target | weft | vs tokio | met |", "|---|---|---:|---:|---|"]
    for scenario, text, check in TARGETS:
        rows = [r for r in by_scenario.get(scenario, []) if r["status"] == "ok"]
        metric = SCENARIOS[scenario][1]
        vals = {r["peer"]: value(r, metric) for r in rows}
        w, t = vals.get("weft"), vals.get("tokio")
        if w is None or t is None:
            lines.append("| %s | %s | - | - | not measured |" % (scenario, text))
            continue
        r = ratio(w, t)
        unit = " B" if scenario == "idle" else "/s"
        met = "yes" if check(r, w, {k: v or 0 for k, v in vals.items()}) else "**no**"
        lines.append("| %s | %s | %s%s | %.2fx | %s |" % (scenario, text, fmt(w), unit, r, met))
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
              "server's, and requests per server CPU-second compare the servers instead.", ""]
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
              "background), then the load; the server is stopped with SIGTERM after each load.", ""]
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
