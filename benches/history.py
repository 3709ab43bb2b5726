"""Flat as history grows: the demo lake with 1, 2, 5 and 10 years of history, and the latency
of a one-player lookup, a one-week aggregate and a one-month retention query at each size
(benches/history/*.sql through `gamelake bench`, warm, best of --runs), with what the scans
pruned (from EXPLAIN ANALYZE) so the reason it stays flat, or does not, is visible.

The demo's players sign up over the whole history, so a game with N years of history is
generated at --scale x N: each day holds about as much activity whatever the years, and the
tables grow with the history as a real game's do.

    ~/.cache/gamelake/venv/bin/python benches/history.py --scale 0.2 --years 1,2,5,10
"""

import argparse
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess

from bench_common import DEMO_END, ROOT, gamelake_binary, write_section

QUERIES = ["lookup", "week", "retention"]
TABLES_READ = {"lookup": ["sessions", "purchases"], "week": ["sessions", "purchases"],
               "retention": ["players", "sessions"]}
PLAYER = "42"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.2,
                        help="demo scale per year of history (players = 100,000 x scale x years)")
    parser.add_argument("--years", default="1,2,5,10", help="history sizes, in years")
    parser.add_argument("--runs", type=int, default=5, help="runs per query; the best counts")
    parser.add_argument("--work", help="folder for the lakes (default ~/.cache/gamelake/history)")
    parser.add_argument("--gamelake", help="gamelake binary (default: the release build)")
    parser.add_argument("--results", default=str(ROOT / "benches" / "RESULTS.md"))
    args = parser.parse_args()

    binary = gamelake_binary(args.gamelake)
    work = pathlib.Path(args.work or pathlib.Path.home() / ".cache" / "gamelake" / "history")
    sizes = [int(y) for y in args.years.split(",")]
    measured = {}
    for years in sizes:
        lake = work / f"y{years}"
        shutil.rmtree(lake, ignore_errors=True)
        print(f"demo: {years} years at scale {args.scale * years:g} ...", flush=True)
        subprocess.run([binary, "--lake", str(lake), "demo", "--scale", str(args.scale * years), "--years", str(years),
                        "--end", DEMO_END, "--no-queries"], check=True, stdout=subprocess.DEVNULL)
        measured[years] = measure(binary, lake, args.runs)
        shutil.rmtree(lake, ignore_errors=True)

    first, last = sizes[0], sizes[-1]
    lines = [
        f"The demo with {', '.join(map(str, sizes))} years of history at scale {args.scale:g} per year; warm, best of"
        f" {args.runs}; {platform.platform()}, {os.cpu_count()} cores.",
        f"Command: `~/.cache/gamelake/venv/bin/python benches/history.py --scale {args.scale:g}"
        f" --years {args.years} --runs {args.runs}`",
        "",
        "| years | sessions rows | query | seconds | files scanned / in the tables | row groups: scanned files' → kept by statistics → by bloom filters |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for years in sizes:
        m = measured[years]
        for q in QUERIES:
            p = m["pruning"][q]
            lines.append(f"| {years} | {m['sessions']:,} | {q} | {m['seconds'][q]:.3f} | {p['files']} | {p['row_groups']} |")
    lines.append("")
    growth = ", ".join(f"{q} {measured[last]['seconds'][q] / measured[first]['seconds'][q]:.2f}x" for q in QUERIES)
    lines.append(f"Growth from {first} to {last} years (target <= 1.2x): {growth}.")
    write_section(args.results, "History growth", lines, binary)


def measure(binary, lake, runs):
    files = [str(ROOT / "benches" / "history" / f"{q}.sql") for q in QUERIES]
    out = subprocess.run([binary, "--lake", str(lake), "bench", "--runs", str(runs), "--param", f"player_id={PLAYER}"]
                         + files, check=True, stdout=subprocess.PIPE, text=True).stdout
    seconds = {r["query"]: r["best"] for r in map(json.loads, out.splitlines())}
    pruning = {q: pruned(binary, lake, q) for q in QUERIES}
    sessions = int(subprocess.run([binary, "--lake", str(lake), "sql", "-q", "--format", "csv", "-c",
                                   "SELECT count(*) AS n FROM game.sessions"],
                                  check=True, capture_output=True, text=True).stdout.split()[-1])
    return {"seconds": seconds, "pruning": pruning, "sessions": sessions}


def pruned(binary, lake, query):
    """What a query's scans read, from the metrics of EXPLAIN ANALYZE: files opened (after the
    planner kept those whose partition values, logged bounds and bloom filters can match, and the
    opener skipped more by the same bounds and by join filters) out of the files of the tables it
    reads, and row groups kept by statistics and then by bloom filters."""
    sql = (ROOT / "benches" / "history" / f"{query}.sql").read_text()
    sql = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
    plan = subprocess.run([binary, "--lake", str(lake), "sql", "-q", "--format", "csv", "--param",
                           f"player_id={PLAYER}", "-c", f"EXPLAIN ANALYZE {sql}"],
                          check=True, capture_output=True, text=True).stdout
    def pairs(metric):
        return re.findall(metric + r"=(" + COUNT + r") total \u2192 (" + COUNT + r") matched", plan)

    scanned = sum(count(m) for _, m in pairs("files_ranges_pruned_statistics"))
    in_tables = sum(len(list((lake / "game" / t).rglob("*.parquet"))) for t in TABLES_READ[query])
    stats = pairs("row_groups_pruned_statistics")
    groups = sum(count(t) for t, _ in stats)
    after_stats = sum(count(m) for _, m in stats)
    after_bloom = sum(count(m) for _, m in pairs("row_groups_pruned_bloom_filter"))
    return {"files": f"{scanned} / {in_tables}", "row_groups": f"{groups} → {after_stats} → {after_bloom}"}


# A count in EXPLAIN ANALYZE's metrics: exact below 1,000, then rounded with a unit ("1.17 K").
COUNT = r"\d+(?:\.\d+)?(?: [KMB])?"


def count(text):
    """The number a metric's count stands for (rounded ones to their three digits)."""
    number, _, unit = text.partition(" ")
    return round(float(number) * {"": 1, "K": 1e3, "M": 1e6, "B": 1e9}[unit])


if __name__ == "__main__":
    main()
