#!/usr/bin/env python3
"""Instructions per request of Tollgate's processes, counted by valgrind's callgrind.

A count of executed instructions does not depend on what else the machine is doing, so
it can compare two builds on a busy, shared machine where req/s and CPU seconds cannot.
See bench/README.md ("Instructions per request"). Needs the release binaries
(`cargo build --release --bin tollgate-control-plane --bin tollgate-data-plane
--bin tollgate-admin --bin fake-upstream`) and valgrind (`apt-get install -y valgrind`).

One run: the fake upstream (native), the control plane (native, or under callgrind with
`--control-plane`) and the data plane under callgrind, seeded like bench/run.py; a
warm-up of sequential requests on one keep-alive connection; the counters zeroed; N more
requests; the counters dumped. Prints instructions per request of each counted process
and writes `callgrind_annotate`'s inclusive and self tables next to the dumps.
"""

import argparse
import glob
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the benchmark's process helpers and seeding)


def callgrind(work, name):
    out = os.path.join(work, f"callgrind.{name}.out")
    for old in glob.glob(out + "*"):
        os.remove(old)
    # No per-instruction data (function totals are enough); calls traced for inclusive
    # costs. Collection runs from the start; the counters are zeroed after the warm-up.
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            "--dump-instr=no", "--compress-strings=no"], out


def drive(url, key, body, n, stream):
    """n sequential POSTs on one keep-alive connection; every answer read to its end."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    for _ in range(n):
        conn.request("POST", u.path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        if r.status != 200 or (stream and b"response.completed" not in data):
            raise SystemExit(f"request failed: {r.status} {data[:300]!r}")
    conn.close()


def control(pid, *args):
    subprocess.run(["callgrind_control", *args, str(pid)], check=True,
                   stdout=subprocess.DEVNULL)


def total_ir(dump):
    """The dump's `summary:` line (or `totals:`): instructions executed."""
    with open(dump) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit(f"no totals in {dump}")


def inclusive_costs(dump, limit):
    """`callgrind_annotate --inclusive=yes`: (instructions, %, function), largest first."""
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
        capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.*)", line)
        if m and "PROGRAM TOTALS" not in line:
            rows.append((int(m.group(1).replace(",", "")), float(m.group(2)), m.group(3)))
    return rows[:limit]


def self_costs(dump, limit, callee=None):
    """Self cost per function, read from the dump itself (callgrind_annotate 3.19 puts
    all self cost of these dumps on the thread's entry function). With `callee`, the
    cost of calls into functions whose name contains it, per calling function instead
    (who calls memcpy)."""
    names, cost = {}, {}
    fn = cfn = None
    call = False

    def name(v):
        m = re.match(r"\((\d+)\)(?:\s+(.*))?", v)
        if not m:
            return v
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), v)

    with open(dump) as f:
        for line in f:
            if line.startswith("fn="):
                fn = name(line[3:].strip())
            elif line.startswith("cfn="):
                cfn = name(line[4:].strip())
            elif line.startswith("calls="):
                call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) < 2:
                    continue
                if call:
                    call = False
                    if callee and callee in cfn:
                        cost[fn] = cost.get(fn, 0) + int(parts[1])
                elif not callee:
                    cost[fn] = cost.get(fn, 0) + int(parts[1])
    total = total_ir(dump)
    rows = sorted(cost.items(), key=lambda kv: -kv[1])[:limit]
    return [(c, 100 * c / total, f) for f, c in rows]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="counted requests")
    ap.add_argument("--warmup", type=int, default=200, help="uncounted requests first")
    ap.add_argument("--stream", action="store_true",
                    help="streaming requests (20 events, no pause between them)")
    ap.add_argument("--control-plane", action="store_true",
                    help="count the control plane too (also under callgrind)")
    ap.add_argument("--top", type=int, default=40, help="rows of each table printed")
    ap.add_argument("--work-dir", default=os.path.join(run.ROOT, "target", "bench", "count"))
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is missing: apt-get install -y valgrind")
    work = args.work_dir
    os.makedirs(work, exist_ok=True)
    counted = ["data-plane"] + (["control-plane"] if args.control_plane else [])
    dumps = {}

    def wrap(name):
        if name not in counted:
            return []
        prefix, dumps[name] = callgrind(work, name)
        return prefix

    procs = run.Procs(work)
    body = run.STREAM_BODY if args.stream else run.SMALL_BODY
    results = {}
    try:
        up_args = argparse.Namespace(events=20, event_interval_ms=0)
        upstream = run.start_upstream(procs, up_args)
        tg = run.Tollgate(procs, work, upstream, wrap=wrap, patience=10)
        url = tg.url + "/v1/responses"
        pids = {"data-plane": tg.dp.pid, "control-plane": tg.cp.pid}
        run.log(f"warm-up: {args.warmup} requests")
        drive(url, tg.key, body, args.warmup, args.stream)
        time.sleep(1)
        for name in counted:
            control(pids[name], "--zero")
        run.log(f"counting {args.requests} requests")
        started = time.time()
        drive(url, tg.key, body, args.requests, args.stream)
        run.log(f"  {time.time() - started:.1f} s")
        for name in counted:
            control(pids[name], "--dump=counted")
        time.sleep(1)
        for name in counted:
            # The dump callgrind_control asked for: `<out>.<n>` (the final one at exit
            # has no suffix).
            parts = sorted(glob.glob(dumps[name] + ".*"), key=os.path.getmtime)
            if not parts:
                raise SystemExit(f"no callgrind dump for the {name}")
            dump = parts[-1]
            ir = total_ir(dump)
            results[name] = {
                "dump": dump,
                "instructions": ir,
                "per_request": ir / args.requests,
                "inclusive": inclusive_costs(dump, args.top),
                "self": self_costs(dump, args.top),
                "memcpy callers": self_costs(dump, 15, callee="memcpy"),
            }
    finally:
        procs.stop_all()
    kind = "streaming" if args.stream else "non-streaming"
    lines = [f"# Instructions per request ({kind}, {args.requests} requests after "
             f"{args.warmup} warm-up, sequential, one connection)", ""]
    for name, r in results.items():
        lines.append(f"{name}: {r['per_request']:,.0f} instructions per request "
                     f"({r['instructions']:,} in all; dump {r['dump']})")
    for name, r in results.items():
        for table in ("inclusive", "self", "memcpy callers"):
            lines += ["", f"## {name}: top {table} (instructions per request, % of total)", ""]
            for ir, pct, sym in r[table]:
                lines.append(f"{ir / args.requests:>12,.0f} {pct:6.2f}%  {sym[:160]}")
    text = "\n".join(lines) + "\n"
    path = os.path.join(work, f"count-{'stream' if args.stream else 'small'}.md")
    with open(path, "w") as f:
        f.write(text)
    with open(os.path.join(work, f"count-{'stream' if args.stream else 'small'}.json"), "w") as f:
        json.dump({n: {k: v for k, v in r.items() if k in ("instructions", "per_request")}
                   for n, r in results.items()}, f)
    print(text)
    run.log(f"report: {path}")


if __name__ == "__main__":
    main()
