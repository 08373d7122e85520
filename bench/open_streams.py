#!/usr/bin/env python3
"""Only the "memory per open stream" part of bench/run.py, for working on it.

    python3 bench/open_streams.py --open-streams 1000,5000 [--hold-secs 5] [--rounds 2]

Starts the fake upstream and Tollgate (control plane on SQLite, seeded like run.py), then for
each N: a fresh data plane, one warm-up request, N slow streams held open by
`stream-probe hold` (the upstream sends the first event and stays silent), and
(VmRSS while open - VmRSS before) / N. Exactly run.py's `hold_streams`; needs the release
binaries (`cargo build --release --bin tollgate-data-plane --bin fake-upstream --bin
stream-probe --bin tollgate-control-plane --bin tollgate-admin`).

BENCH_DP_BIN=/path/to/tollgate-data-plane measures another build of the data plane (before
and after a change, moments apart). BENCH_DP_PREFIX="heaptrack -o /tmp/dp" runs it under a
heap profiler (then the RSS numbers are the wrapper's, not meaningful; see bench/README.md).
"""

import argparse
import os
import resource
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--open-streams", default="1000")
    ap.add_argument("--hold-secs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--events", type=int, default=20)
    ap.add_argument("--event-interval-ms", type=int, default=5)
    ap.add_argument("--small-load", type=int, default=0, metavar="SECS",
                    help="first: a fresh data plane's peak RSS (VmHWM) after SECS of run.py's "
                         "non-streaming load (concurrency 32, wrk or oha)")
    ap.add_argument("--work-dir", default=os.path.join(run.ROOT, "target", "bench-streams"))
    args = ap.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 200_000
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    procs = run.Procs(args.work_dir)
    try:
        upstream = run.start_upstream(procs, args)
        tg = run.Tollgate(procs, args.work_dir, upstream)
        print(f"data plane: {run.DP_PREFIX} {run.DP_BIN}", flush=True)
        for _ in range(args.rounds):
            if args.small_load:
                tg.start_data_plane()
                tool = "oha" if run.shutil.which("oha") else "wrk"
                r = run.load(tool, tg.url + "/v1/responses", tg.key, run.SMALL_BODY, 32,
                             args.small_load, args.work_dir, "small")
                print(f"non-streaming {args.small_load} s: {r['rps']:,.0f} req/s, "
                      f"errors {r['errors']}, data plane peak RSS "
                      f"{run.status_kb(tg.dp.pid, 'VmHWM') / 1024:.1f} MiB", flush=True)
            for n in [int(x) for x in args.open_streams.split(",") if x]:
                r = run.hold_streams(tg, n, args.hold_secs, args.work_dir)
                print(f"{n} streams: opened {r['opened']}, failed {r['failed']}, "
                      f"data plane {r['dp_before_kb'] / 1024:.1f} MiB before, "
                      f"{r['dp_open_kb'] / 1024:.1f} MiB open, "
                      f"{run.fmt(r['dp_per_stream_kb'])} KiB per stream "
                      f"(control plane {run.fmt(r['cp_per_stream_kb'])} KiB)", flush=True)
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
