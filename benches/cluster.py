"""Embedded vs a Ballista cluster on the same machine: the saved queries (queries/*.sql) on the
demo lake through `gamelake bench`, once in-process and once with --cluster against a
`gamelake scheduler` and two `gamelake executor`s on loopback, warm, best of --runs, answers
compared. On one machine the cluster cannot be faster (same cores, plus planning round trips,
task scheduling and shuffles through Flight); the point is the measured per-query overhead and
that every answer is the same.

    ~/.cache/gamelake/venv/bin/python benches/cluster.py --scale 1 --runs 3
"""

import argparse
import json
import os
import pathlib
import platform
import re
import shutil
import socket
import subprocess
import time

import pyarrow.parquet as pq

from bench_common import (ROOT, comparable_rows, demo_lake, free_port, gamelake_binary, param_flags, same_rows,
                          saved_query_params, write_section)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="demo scale (players = 100,000 x scale)")
    parser.add_argument("--runs", type=int, default=3, help="runs per query; the best counts")
    parser.add_argument("--executors", type=int, default=2)
    parser.add_argument("--work", help="folder for the lake (default ~/.cache/gamelake/demo-<scale>, shared with game.py)")
    parser.add_argument("--gamelake", help="gamelake binary (default: the release build)")
    parser.add_argument("--results", default=str(ROOT / "benches" / "RESULTS.md"))
    args = parser.parse_args()

    binary = gamelake_binary(args.gamelake)
    work = pathlib.Path(args.work or pathlib.Path.home() / ".cache" / "gamelake" / f"demo-{args.scale:g}")
    lake, _ = demo_lake(binary, work, args.scale)
    files = sorted((ROOT / "queries").glob("*.sql"))
    params = param_flags(saved_query_params(binary, lake))

    embedded = bench(binary, lake, files, params, args.runs, work / "embedded", [])
    procs, url = start_cluster(binary, args.executors)
    try:
        cluster = bench(binary, lake, files, params, args.runs, work / "cluster", ["--cluster", url])
    finally:
        for p in procs:
            p.kill()
            p.wait()

    lines = [
        f"The demo at scale {args.scale:g} (queries/*.sql), embedded vs `--cluster` with a scheduler and"
        f" {args.executors} executors on this machine (loopback); warm, best of {args.runs};"
        f" {platform.platform()}, {os.cpu_count()} cores.",
        f"Command: `~/.cache/gamelake/venv/bin/python benches/cluster.py --scale {args.scale:g} --runs {args.runs}`",
        "",
        "| query | embedded s | cluster s | cluster / embedded | overhead s | answers |",
        "|---|---:|---:|---:|---:|---|",
    ]
    total_e = total_c = 0.0
    for f in files:
        q = f.stem
        e, c = embedded[q], cluster[q]
        # Sums may add in another order on the cluster.
        same = same_rows(answer(work / "embedded", q), answer(work / "cluster", q))
        total_e += e
        total_c += c
        lines.append(f"| {q} | {e:.3f} | {c:.3f} | {c / e:.2f}x | {c - e:+.3f} | {'equal' if same else 'DIFFERENT'} |")
    lines.append(f"| **sum** | {total_e:.2f} | {total_c:.2f} | {total_c / total_e:.2f}x | {total_c - total_e:+.2f} | |")
    lines.append("")
    lines.append("Ratios above 1 mean the cluster took longer; on one machine it cannot win, it adds the"
                 " round trips to the scheduler, stage scheduling and shuffles through Flight.")
    write_section(args.results, "Embedded vs cluster (Ballista)", lines, binary)


def bench(binary, lake, files, params, runs, out, extra):
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run([binary, "--lake", str(lake)] + extra + ["bench", "--runs", str(runs), "--out", str(out)]
                          + params + [str(f) for f in files], stdout=subprocess.PIPE, text=True)
    times = {}
    for line in done.stdout.splitlines():
        r = json.loads(line)
        if "error" in r:
            raise SystemExit(f"{r['query']} failed {'on the cluster' if extra else 'embedded'}: {r['error']}")
        times[r["query"]] = r["best"]
    return times


def answer(folder, query):
    return comparable_rows(pq.read_table(folder / f"{query}.parquet"))


def start_cluster(binary, executors):
    """A scheduler on a free port and executors; answers the processes and the --cluster URL."""
    scheduler = subprocess.Popen([binary, "scheduler", "--bind", "127.0.0.1:0"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
    line = scheduler.stdout.readline()
    address = re.search(r"listening on (\S+)", line).group(1)
    procs = [scheduler]
    cores = max(1, (os.cpu_count() or 2) // executors)
    for _ in range(executors):
        flight, grpc = free_port(), free_port()
        procs.append(subprocess.Popen([binary, "executor", "--scheduler", address, "--bind", f"127.0.0.1:{flight}",
                                       "--grpc-port", str(grpc), "--concurrency", str(cores)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in (flight, grpc):
            wait_for(port)
    time.sleep(0.5)
    return procs, f"df://{address}"


def wait_for(port):
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"executor did not listen on {port}")


if __name__ == "__main__":
    main()
