#!/usr/bin/env python3
"""Tollgate against its peers: one run, the same load, alternating targets.

Started by bench/run.sh (which builds and installs what is missing); see bench/README.md.
Targets: the fake upstream directly, nginx as a keep-alive reverse proxy, LiteLLM's proxy
and Tollgate (one control plane on SQLite, one data plane), all in front of the same fake
upstream process. Load comes from oha (or wrk when oha is not installed) in its own process. Writes a Markdown report.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
# The data plane's binary and a command to run it under (a heap profiler), both optional:
# bench/open_streams.py compares two builds and attributes their memory with them.
DP_BIN = os.environ.get("BENCH_DP_BIN") or os.path.join(BIN, "tollgate-data-plane")
DP_PREFIX = shlex.split(os.environ.get("BENCH_DP_PREFIX", ""))
SMALL_BODY = '{"model":"gpt-5.1","input":"hello"}'
STREAM_BODY = '{"model":"gpt-5.1","input":"hello","stream":true}'
UPSTREAM_KEY = "sk-bench-upstream"
SLOW_KEY = "sk-bench-slow"
# LiteLLM refuses to start without a strong master key; the benchmark's clients send it.
LITELLM_KEY = "sk-bench-litellm-0123456789abcdefghijklmnop"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, check, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def http_ok(url):
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status < 500


def post(url, key, body):
    req = urllib.request.Request(
        url,
        data=body.encode(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()
        return r.status == 200


# ---------------------------------------------------------------------------------------
# /proc


def cpu_seconds(pid):
    """utime + stime of the process and its waited-for children, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the ")": state is field 3, so utime (14) and stime (15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_pids(pid):
    pids = [pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        for child in out.split():
            pids += tree_pids(int(child))
    except OSError:
        pass
    return pids


def tree_cpu(pid):
    return sum(cpu_seconds(p) for p in tree_pids(pid))


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------------------
# Processes


class Procs:
    def __init__(self, work):
        self.work = work
        self.procs = []

    def start(self, name, args, env=None, stdout=None):
        logf = open(os.path.join(self.work, f"{name}.log"), "w")
        p = subprocess.Popen(
            args,
            stdout=stdout or logf,
            stderr=logf,
            env={**os.environ, **(env or {})},
            text=True,
            start_new_session=True,
        )
        self.procs.append((name, p))
        return p

    def stop(self, p, timeout=15):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = [(n, q) for n, q in self.procs if q is not p]

    def stop_all(self):
        for _, p in reversed(list(self.procs)):
            self.stop(p, timeout=10)


def start_upstream(procs, args):
    p = procs.start(
        "fake-upstream",
        [
            f"{BIN}/fake-upstream",
            "--events",
            str(args.events),
            "--event-interval-ms",
            str(args.event_interval_ms),
            "--slow-key",
            SLOW_KEY,
        ],
        stdout=subprocess.PIPE,
    )
    line = p.stdout.readline()
    m = re.search(r"http://[\d.:]+", line)
    if not m:
        raise SystemExit(f"fake upstream did not start: {line!r}")
    return m.group(0)


def start_nginx(procs, work, upstream):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    prefix = os.path.join(work, "nginx")
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    host = upstream.removeprefix("http://")
    conf = f"""
daemon off;
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 32768; }}
http {{
  access_log off;
  upstream fake {{ server {host}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""
    with open(os.path.join(prefix, "nginx.conf"), "w") as f:
        f.write(conf)
    p = procs.start("nginx", [nginx, "-p", prefix, "-c", "nginx.conf"])
    url = f"http://127.0.0.1:{port}"
    wait_until("nginx", lambda: post(url + "/v1/responses", UPSTREAM_KEY, SMALL_BODY), 20)
    return p, url


def start_litellm(procs, work, upstream, venv):
    port = free_port()
    cfg = os.path.join(work, "litellm.yaml")
    with open(cfg, "w") as f:
        f.write(
            f"""model_list:
  - model_name: gpt-5.1
    litellm_params:
      model: openai/gpt-5.1
      api_base: {upstream}/v1
      api_key: {UPSTREAM_KEY}
litellm_settings:
  telemetry: false
general_settings:
  master_key: {LITELLM_KEY}
"""
        )
    p = procs.start(
        "litellm",
        [
            os.path.join(venv, "bin", "litellm"),
            "--config",
            cfg,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
            "--telemetry",
            "False",
        ],
        env={"LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION"},
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(
        "litellm",
        lambda: p.poll() is None and post(url + "/v1/responses", LITELLM_KEY, SMALL_BODY),
        180,
    )
    return p, url


class Tollgate:
    """`wrap(name)` gives a command prefix for a plane's process (`bench/count.py` runs
    them under callgrind), and `patience` scales the start-up waits accordingly."""

    def __init__(self, procs, work, upstream, wrap=lambda name: [], patience=1):
        self.procs, self.work, self.upstream = procs, work, upstream
        self.wrap, self.patience = wrap, patience
        self.data = os.path.join(work, "tollgate")
        shutil.rmtree(self.data, ignore_errors=True)
        os.makedirs(self.data)
        self.cp_addr = f"127.0.0.1:{free_port()}"
        self.cp = procs.start(
            "control-plane",
            [
                *self.wrap("control-plane"),
                f"{BIN}/tollgate-control-plane",
                "--listen",
                self.cp_addr,
                "--data-dir",
                self.data,
                "--allow-insecure-upstreams",
                "--allow-private-upstreams",
            ],
        )
        tls = os.path.join(self.data, "tls")
        wait_until(
            "control plane",
            lambda: os.path.getsize(os.path.join(self.data, "admin-token")) > 0
            and os.path.getsize(os.path.join(tls, "data-plane.key")) > 0,
            30 * self.patience,
        )
        self.admin_env = {
            "TOLLGATE_ADMIN_ENDPOINT": f"https://{self.cp_addr}",
            "TOLLGATE_ADMIN_TOKEN_FILE": os.path.join(self.data, "admin-token"),
            "TOLLGATE_ADMIN_CA_CERT": os.path.join(tls, "ca.crt"),
        }
        self.dp = None
        self.start_data_plane()
        self.seed()

    def start_data_plane(self):
        if self.dp is not None:
            self.procs.stop(self.dp)
        tls = os.path.join(self.data, "tls")
        port, admin = free_port(), free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.dp = self.procs.start(
            "data-plane",
            [
                *self.wrap("data-plane"),
                *DP_PREFIX,
                DP_BIN,
                "--listen",
                f"127.0.0.1:{port}",
                "--admin-listen",
                f"127.0.0.1:{admin}",
                "--control-plane-url",
                f"https://{self.cp_addr}",
                "--control-plane-ca",
                os.path.join(tls, "ca.crt"),
                "--client-cert",
                os.path.join(tls, "data-plane.crt"),
                "--client-key",
                os.path.join(tls, "data-plane.key"),
                "--allow-private-upstreams",
                "--max-connections",
                "50000",
                "--max-connections-per-ip",
                "50000",
                "--max-in-flight",
                "50000",
            ],
        )
        wait_until("data plane", lambda: http_ok(f"http://127.0.0.1:{admin}/readyz"),
                   30 * self.patience)

    def admin(self, *args):
        out = subprocess.run(
            [f"{BIN}/tollgate-admin", "--json", *args],
            env={**os.environ, **self.admin_env},
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise SystemExit(f"tollgate-admin {' '.join(args)}: {out.stderr}")
        return json.loads(out.stdout) if out.stdout.strip() else None

    @staticmethod
    def id_of(created):
        """The id in the CLI's JSON answer: at the top level or in its one record."""
        if "id" in created:
            return str(created["id"])
        for v in created.values():
            if isinstance(v, dict) and "id" in v:
                return str(v["id"])
        raise SystemExit(f"no id in {created}")

    # The user's concurrency is a large number rather than 0 (unlimited): admission caps a
    # user's pending requests at max(concurrency, 1) + user_extra_pending even when 0.
    def seed(self):
        user = self.admin("user", "create", "--email", "bench@example.com", "--balance",
                          "1000000", "--concurrency", "100000")
        self.admin("price", "set", "gpt-5.1", "--input", "1.25", "--output", "10",
                   "--cached-input", "0.125")
        keys = []
        for name, upstream_key in (("bench", UPSTREAM_KEY), ("slow", SLOW_KEY)):
            group = self.admin("group", "create", "--name", name)
            self.admin("account", "create", "--name", name, "--api-key", upstream_key,
                       "--base-url", self.upstream, "--concurrency", "0", "--group",
                       self.id_of(group))
            key = self.admin("key", "create", "--user", self.id_of(user), "--group",
                             self.id_of(group), "--name", name)
            keys.append(key["secret"])
        self.key, self.slow_key = keys
        wait_until("a first request through Tollgate",
                   lambda: post(self.url + "/v1/responses", self.key, SMALL_BODY),
                   30 * self.patience)

    def pids(self):
        return {"data plane": self.dp.pid, "control plane": self.cp.pid}


# ---------------------------------------------------------------------------------------
# Load


def load(tool, url, key, body, concurrency, seconds, work, label):
    if tool == "wrk":
        return wrk(url, key, body, concurrency, seconds)
    return oha(url, key, body, concurrency, seconds, work, label)


def wrk(url, key, body, concurrency, seconds):
    """wrk (C, epoll; two threads): the fallback when oha is not installed."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s",
         "-s", os.path.join(ROOT, "bench", "wrk.lua"), url],
        env={**os.environ, "BENCH_BODY": body, "BENCH_KEY": key},
        capture_output=True, text=True, check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH_JSON "))
    r = json.loads(line.split(" ", 1)[1])
    errors = r["non2xx"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    ok = r["requests"] - r["non2xx"]
    return {
        "rps": ok / (r["duration_us"] / 1e6),
        "p50": r["p50_us"] / 1000, "p90": r["p90_us"] / 1000, "p99": r["p99_us"] / 1000,
        "errors": errors, "requests": r["requests"], "ok": ok,
        "error_kinds": {k: r[k] for k in ("non2xx", "connect", "read", "write", "timeout") if r[k]},
    }


def oha(url, key, body, concurrency, seconds, work, label):
    out = os.path.join(work, f"oha-{label}.json")
    args = [
        # -w: requests in flight at the deadline finish and count (oha otherwise aborts
        # them and lists them as "aborted due to deadline" errors, one per connection).
        "oha", "-z", f"{seconds}s", "-w", "-c", str(concurrency), "--no-tui",
        "--output-format", "json", "-o", out,
        "-m", "POST", "-H", f"Authorization: Bearer {key}",
        "-H", "Content-Type: application/json", "-d", body, url,
    ]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        r = json.load(f)
    codes = {int(k): v for k, v in (r.get("statusCodeDistribution") or {}).items()}
    errors = sum((r.get("errorDistribution") or {}).values())
    ok = codes.get(200, 0)
    total = sum(codes.values()) + errors
    lat = r.get("latencyPercentiles") or {}
    ms = lambda k: (lat.get(k) or 0) * 1000  # noqa: E731
    return {
        "rps": ok / seconds,
        "p50": ms("p50"), "p90": ms("p90"), "p99": ms("p99"),
        "errors": total - ok,
        "requests": total,
        "ok": ok,
        "error_kinds": {**{str(k): v for k, v in codes.items() if k != 200},
                        **(r.get("errorDistribution") or {})},
    }


def perf_top(data):
    """Self time per symbol from a perf.data file: (percent, kernel?, symbol), 1 % and up."""
    rep = subprocess.run(
        ["perf", "report", "-i", data, "--no-children", "--stdio", "--sort", "symbol",
         "--percent-limit", "1", "-g", "none"],
        capture_output=True, text=True).stdout
    rows = []
    for line in rep.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[([.k])\]\s+(.*)", line)
        if m:
            sym = re.split(r"\s{2,}", m.group(3).strip())[0][:90]
            rows.append((float(m.group(1)), m.group(2) == "k", sym))
    return rows


def perf_profile(tool, tg, key, body, conc, seconds, work):
    """An extra, uncounted Tollgate series under `perf record`: each process's top symbols."""
    out = {}
    recs = {}
    for name, pid in tg.pids().items():
        data = os.path.join(work, f"perf-{name.replace(' ', '-')}.data")
        recs[name] = (subprocess.Popen(
            ["perf", "record", "-F", "499", "-g", "-p", str(pid), "-o", data],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), data)
    time.sleep(0.5)
    load(tool, tg.url + "/v1/responses", key, body, conc, seconds, work, "perf")
    for name, (p, data) in recs.items():
        p.send_signal(signal.SIGINT)
        p.wait()
        rows = perf_top(data)
        out[name] = rows[:15]
    return out


def probe_ttfe(url, key, n):
    out = subprocess.run([f"{BIN}/stream-probe", "ttfe", url, key, str(n)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def hold_streams(tg, n, secs, work):
    """Fresh data plane, one warm-up stream, then n slow streams held open at once."""
    tg.start_data_plane()
    post(tg.url + "/v1/responses", tg.key, SMALL_BODY)
    time.sleep(1)
    before = status_kb(tg.dp.pid, "VmRSS")
    cp_before = status_kb(tg.cp.pid, "VmRSS")
    p = subprocess.Popen([f"{BIN}/stream-probe", "hold", tg.url + "/v1/responses",
                          tg.slow_key, str(n), str(secs)],
                         stdout=subprocess.PIPE, stderr=open(os.path.join(work, f"hold-{n}.log"), "w"),
                         text=True)
    line = p.stdout.readline().split()
    opened = int(line[1]) if len(line) == 3 else 0
    failed = int(line[2]) if len(line) == 3 else n
    time.sleep(min(2, secs))
    during = status_kb(tg.dp.pid, "VmRSS")
    cp_during = status_kb(tg.cp.pid, "VmRSS")
    p.send_signal(signal.SIGTERM)
    p.wait()
    return {
        "n": n, "opened": opened, "failed": failed,
        "dp_before_kb": before, "dp_open_kb": during,
        "dp_per_stream_kb": (during - before) / opened if opened else None,
        "cp_per_stream_kb": (cp_during - cp_before) / opened if opened else None,
    }


# ---------------------------------------------------------------------------------------
# Report


def fmt(v, digits=1):
    return "—" if v is None else f"{v:,.{digits}f}"


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem,
        "kernel": platform.release(), "commit": commit + (" (modified)" if dirty else ""),
        "load": os.getloadavg(),
    }


def micro_results():
    """Criterion's estimates from target/criterion (written by `cargo bench`)."""
    base = os.path.join(os.path.dirname(BIN), "criterion")
    rows = []
    if not os.path.isdir(base):
        return rows
    for dirpath, _, files in os.walk(base):
        if os.path.basename(dirpath) == "new" and "estimates.json" in files:
            with open(os.path.join(dirpath, "estimates.json")) as f:
                e = json.load(f)
            name = os.path.relpath(os.path.dirname(dirpath), base)
            if name.startswith("report") or "/report" in name:
                continue
            rows.append((name, e["median"]["point_estimate"], e["mean"]["point_estimate"]))
    return sorted(rows)


def ns(v):
    return f"{v / 1000:,.2f} µs" if v >= 1000 else f"{v:,.0f} ns"


def targets_table(results, ttfe, cpu, rss, streams):
    """Issue 13's targets against this run."""
    small, stream = results.get("small_agg", {}), results.get("stream_agg", {})
    tg, d, n, ll = (small.get(k) for k in ("tollgate", "direct", "nginx", "litellm"))
    rows = []

    def row(what, target, value, ok):
        rows.append(f"| {what} | {target} | {value} | {'yes' if ok else 'no'} |")

    if tg and n:
        r = tg["rps"] / n["rps"]
        row("non-streaming throughput", "≥ 0.5× nginx, 0 errors",
            f"{r:.2f}× nginx, {tg['errors']} errors", r >= 0.5 and tg["errors"] == 0)
    if tg and d:
        added = tg["p99"] - d["p99"]
        row("non-streaming p99", "≤ direct + 1 ms", f"direct + {added:.2f} ms", added <= 1.0)
    dt, tt = ttfe.get("direct"), ttfe.get("tollgate")
    if dt and tt:
        added = (tt["first_event"]["p50_us"] - dt["first_event"]["p50_us"]) / 1000
        row("added time to first event (p50)", "< 0.3 ms", f"{added:.3f} ms", added < 0.3)
    st, sd = stream.get("tollgate"), stream.get("direct")
    if st and sd:
        gap = 1 - st["rps"] / sd["rps"]
        row("streaming throughput", "within 1 % of direct", f"{gap * 100:.1f} % below",
            gap <= 0.01)
    if tg and ll and ll["rps"]:
        r = tg["rps"] / ll["rps"]
        row("vs LiteLLM", "≥ 150× its throughput", f"{r:.0f}×", r >= 150)
    if "data plane" in rss:
        mb = rss["data plane"][0] * 1024 / 1e6
        row("data-plane peak RSS, non-streaming", "< 48 MB", f"{mb:.1f} MB", mb < 48)
    big = [s for s in streams if s["n"] >= 10_000 and s["dp_per_stream_kb"] is not None]
    if big:
        kb = big[-1]["dp_per_stream_kb"] * 1.024
        row("memory per open stream at 10,000", "< 16 KB", f"{kb:.1f} KB", kb < 16)
    cp = cpu.get(("control plane", "small"))
    if cp is not None:
        row("control-plane CPU per request", "< 40 µs", f"{cp:.0f} µs", cp < 40)
    if not rows:
        return []
    return ["## Targets (issue 13)", "", "| | target | this run | met |", "|---|---|---|---|",
            *rows, ""]


def report(args, m, results, ttfe, cpu, rss, streams, started, profile):
    L = []
    L.append(f"# Tollgate benchmark — {started:%Y-%m-%d %H:%M} UTC")
    L.append("")
    L.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']:.0f} GiB, Linux "
             f"{m['kernel']}; commit {m['commit']}. Load average at start: "
             f"{m['load'][0]:.1f} / {m['load'][1]:.1f} / {m['load'][2]:.1f}"
             + (" — the machine was busy with other work, so throughput is noisy."
                if m['load'][0] > 1.5 else "."))
    L.append("")
    L.append(f"Everything on one machine over loopback: the load generator, the fake upstream (one process), "
             f"nginx, LiteLLM and Tollgate share the cores. Load generator: {args.load_tool}. "
             f"Each series runs {args.duration} s; "
             f"targets alternate within each of {args.rounds} round(s); cells are the mean "
             f"of the rounds (p99: the worst round). Command: `{args.command}`.")
    L.append("")
    targets = [t for t in ("direct", "nginx", "litellm", "tollgate") if t in results["small"]]
    names = {"direct": "fake upstream directly", "nginx": "nginx (keep-alive reverse proxy)",
             "litellm": f"LiteLLM proxy {args.litellm_version} (1 worker)",
             "tollgate": "Tollgate (data plane + control plane on SQLite)"}
    for kind, title in (("small", f"Non-streaming `POST /v1/responses`, concurrency {args.concurrency}"),
                        ("stream", f"Streaming ({args.events} events {args.event_interval_ms} ms "
                                   f"apart), concurrency {args.stream_concurrency}")):
        L.append(f"## {title}")
        L.append("")
        L.append("| target | req/s | p50 ms | p90 ms | p99 ms | errors | × direct | × nginx |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        agg = {}
        for t in targets:
            rs = results[kind].get(t, [])
            if not rs:
                continue
            agg[t] = {
                "rps": statistics.mean(r["rps"] for r in rs),
                "p50": statistics.mean(r["p50"] for r in rs),
                "p90": statistics.mean(r["p90"] for r in rs),
                "p99": max(r["p99"] for r in rs),
                "errors": sum(r["errors"] for r in rs),
            }
        for t, a in agg.items():
            d = agg.get("direct", {}).get("rps")
            n = agg.get("nginx", {}).get("rps")
            L.append(f"| {names[t]} | {fmt(a['rps'], 0)} | {fmt(a['p50'], 2)} | {fmt(a['p90'], 2)} "
                     f"| {fmt(a['p99'], 2)} | {a['errors']} | {fmt(a['rps'] / d if d else None, 3)} "
                     f"| {fmt(a['rps'] / n if n else None, 3)} |")
        L.append("")
        results[kind + "_agg"] = agg
    targets_at = len(L)
    L.append("## Time to the first streamed event")
    L.append("")
    L.append(f"`stream-probe ttfe`: {args.ttfe_requests} streaming requests one after another on "
             "one keep-alive connection (after a 10 % warm-up), nothing else running.")
    L.append("")
    L.append("| target | first event p50 µs | p90 µs | p99 µs | added p50 µs | added p99 µs |")
    L.append("|---|---:|---:|---:|---:|---:|")
    d = ttfe.get("direct")
    for t in targets:
        r = ttfe.get(t)
        if not r:
            L.append(f"| {names[t]} | failed | | | | |")
            continue
        f = r["first_event"]
        add50 = f["p50_us"] - d["first_event"]["p50_us"] if d else None
        add99 = f["p99_us"] - d["first_event"]["p99_us"] if d else None
        L.append(f"| {names[t]} | {fmt(f['p50_us'])} | {fmt(f['p90_us'])} | {fmt(f['p99_us'])} "
                 f"| {fmt(add50)} | {fmt(add99)} |")
    L.append("")
    L.append("## Tollgate's CPU and memory")
    L.append("")
    L.append("CPU seconds per request from `/proc/<pid>/stat` (utime + stime) over each series; "
             "nginx's is its master and workers together, for comparison.")
    L.append("")
    L.append("| process | series | CPU µs / request |")
    L.append("|---|---|---:|")
    for (proc, kind), v in cpu.items():
        L.append(f"| {proc} | {kind} | {fmt(v)} |")
    L.append("")
    L.append("| process | peak RSS (VmHWM) after the non-streaming series | after all series |")
    L.append("|---|---:|---:|")
    for proc, (a, b) in rss.items():
        L.append(f"| {proc} | {a / 1024:.1f} MiB | {b / 1024:.1f} MiB |")
    L.append("")
    L.append("## Memory per open stream")
    L.append("")
    L.append("A fresh data plane; N streams whose upstream sends the first event and then stays "
             "silent, all open at once (`stream-probe hold`); resident memory (VmRSS) of the "
             "data plane while they are open minus before, divided by N: the process's own memory "
             "for both connections of a stream (kernel socket buffers are not in RSS).")
    L.append("")
    L.append("| open streams | opened | failed | data plane before | while open | per stream | control plane per stream |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|")
    for s in streams:
        L.append(f"| {s['n']:,} | {s['opened']:,} | {s['failed']:,} | {s['dp_before_kb'] / 1024:.1f} MiB "
                 f"| {s['dp_open_kb'] / 1024:.1f} MiB | {fmt(s['dp_per_stream_kb'])} KiB "
                 f"| {fmt(s['cp_per_stream_kb'])} KiB |")
    L.append("")
    L[targets_at:targets_at] = targets_table(results, ttfe, cpu, rss, streams)
    if profile:
        L.append("## Where Tollgate's CPU goes (perf, non-streaming load)")
        L.append("")
        L.append("`perf record -F 499 -g` on each process during an extra, uncounted non-streaming "
                 "series; self time per symbol, 1 % and above.")
        L.append("")
        for name, rows in profile.items():
            L.append(f"**{name}**")
            L.append("")
            L.append("| self % | where | symbol |")
            L.append("|---:|---|---|")
            for pct, kernel, sym in rows:
                L.append(f"| {pct:.1f} | {'kernel' if kernel else 'user'} | `{sym}` |")
            L.append("")
    micro = micro_results()
    if micro:
        L.append("## Micro-benchmarks (criterion, `cargo bench -p tollgate-tests --bench hot_path`)")
        L.append("")
        L.append("| benchmark | median | mean |")
        L.append("|---|---:|---:|")
        for name, med, mean in micro:
            L.append(f"| {name} | {ns(med)} | {ns(mean)} |")
        L.append("")
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--short", action="store_true", help="a quick check: 3 s series, fewer streams")
    ap.add_argument("--duration", type=int, default=10, help="seconds per series")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of alternating targets")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--stream-concurrency", type=int, default=64)
    ap.add_argument("--events", type=int, default=20)
    ap.add_argument("--event-interval-ms", type=int, default=5)
    ap.add_argument("--ttfe-requests", type=int, default=500)
    ap.add_argument("--open-streams", default="1000,10000")
    ap.add_argument("--hold-secs", type=int, default=5)
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--load-tool", choices=["oha", "wrk"],
                    default="oha" if shutil.which("oha") else "wrk")
    ap.add_argument("--litellm-venv", default=None)
    ap.add_argument("--litellm-version", default="?")
    ap.add_argument("--work-dir", default=os.path.join(ROOT, "target", "bench"))
    ap.add_argument("--perf", action="store_true", help="profile Tollgate with perf record")
    ap.add_argument("--publish", action="store_true", help="also write docs/benchmarks.md")
    args = ap.parse_args()
    args.command = "./bench/run.sh " + " ".join(sys.argv[1:])
    if args.short:
        args.duration, args.ttfe_requests, args.open_streams, args.hold_secs = 3, 100, "1000", 2
    work = args.work_dir
    os.makedirs(work, exist_ok=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 200_000
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = datetime.datetime.now(datetime.timezone.utc)
    m = machine()
    procs = Procs(work)
    try:
        log("starting the fake upstream, nginx, LiteLLM and Tollgate")
        upstream = start_upstream(procs, args)
        nginx_p, nginx_url = start_nginx(procs, work, upstream)
        urls = {"direct": (upstream, UPSTREAM_KEY), "nginx": (nginx_url, UPSTREAM_KEY)}
        watched = {"nginx": nginx_p.pid}
        if not args.no_litellm and args.litellm_venv:
            _, litellm_url = start_litellm(procs, work, upstream, args.litellm_venv)
            urls["litellm"] = (litellm_url, LITELLM_KEY)
        tg = Tollgate(procs, work, upstream)
        urls["tollgate"] = (tg.url, tg.key)
        watched.update(tg.pids())
        results = {"small": {}, "stream": {}}
        cpu_acc = {}
        rss = {}
        for kind, body, conc in (("small", SMALL_BODY, args.concurrency),
                                 ("stream", STREAM_BODY, args.stream_concurrency)):
            for rnd in range(args.rounds):
                for t, (base, key) in urls.items():
                    log(f"{kind} round {rnd + 1}: {t}")
                    pids = {n: p for n, p in watched.items()
                            if (n == "nginx") == (t == "nginx") and t in ("nginx", "tollgate")}
                    before = {n: tree_cpu(p) for n, p in pids.items()}
                    r = load(args.load_tool, base + "/v1/responses", key, body, conc,
                             args.duration, work, f"{kind}-{t}-{rnd}")
                    for n, p in pids.items():
                        acc = cpu_acc.setdefault((n, kind), [0.0, 0])
                        acc[0] += tree_cpu(p) - before[n]
                        acc[1] += r["requests"]
                    results[kind].setdefault(t, []).append(r)
                    log(f"  {r['rps']:,.0f} req/s, p99 {r['p99']:.2f} ms, errors {r['errors']} "
                        f"{r['error_kinds'] or ''}")
            if kind == "small":
                rss = {n: [status_kb(p, "VmHWM"), 0] for n, p in tg.pids().items()}
        for n, p in tg.pids().items():
            rss[n][1] = status_kb(p, "VmHWM")
        cpu = {k: (v[0] / v[1] * 1e6 if v[1] else None) for k, v in cpu_acc.items()}
        profile = None
        if args.perf and shutil.which("perf"):
            log("perf profile of Tollgate (uncounted)")
            profile = perf_profile(args.load_tool, tg, tg.key, SMALL_BODY, args.concurrency,
                                   args.duration, work)
        ttfe = {}
        for t, (base, key) in urls.items():
            log(f"time to first event: {t}")
            ttfe[t] = probe_ttfe(base + "/v1/responses", key, args.ttfe_requests)
        streams = []
        for n in [int(x) for x in args.open_streams.split(",") if x]:
            log(f"{n} open streams")
            streams.append(hold_streams(tg, n, args.hold_secs, work))
            log(f"  {streams[-1]}")
    finally:
        procs.stop_all()
    text = report(args, m, results, ttfe, cpu, rss, streams, started, profile)
    out = os.path.join(work, f"report-{started:%Y%m%d-%H%M%S}.md")
    with open(out, "w") as f:
        f.write(text)
    with open(os.path.join(work, "latest.md"), "w") as f:
        f.write(text)
    if args.publish:
        shutil.copy(out, os.path.join(ROOT, "docs", "benchmarks.md"))
    print(text)
    log(f"report: {out}" + (" (and docs/benchmarks.md)" if args.publish else ""))


if __name__ == "__main__":
    main()
