"""TPC-H through gamelake, DuckDB and bare DataFusion on the same Parquet files, in one run.

Generates TPC-H at --scale with DuckDB's tpch extension (the duckdb-extension-tpch pip
package), loads each table into a gamelake lake as a Delta table in the default schema (public,
so the standard query text needs no schema: `CREATE TABLE public.x AS SELECT * FROM
'x.parquet'`), then runs the 22 queries of benches/tpch/queries/ through:

- gamelake: `gamelake bench` (one warm session; planning with the Delta log included),
- DuckDB: views over read_parquet of the Delta tables' own data files,
- bare DataFusion (Python bindings, default SessionConfig): the same files,
- gamelake over plain files: the same binary with views over the same folders read by
  DataFusion's own listing table, no Delta log (so Delta / plain is the catalog's cost alone,
  with the build and the settings held equal),

each with the same thread count, best of --runs, every answer compared with DuckDB's; with
--rounds N the four engines run N times, alternating, and each query's best run of all rounds
counts. Writes the table to benches/RESULTS.md (or --results).

    ~/.cache/gamelake/venv/bin/python benches/tpch.py --scale 1 --runs 3 --rounds 3
"""

import argparse
import importlib
import math
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import time

import duckdb
import pyarrow.parquet as pq

from bench_common import (ROOT, comparable_rows, gamelake_bench, gamelake_binary, gamelake_version, same_rows,
                          write_section)

QUERIES = ROOT / "benches" / "tpch" / "queries"
TABLES = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="TPC-H scale factor (1 = 6 M lineitems)")
    parser.add_argument("--runs", type=int, default=3, help="runs per query and engine in each round; the best counts")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of all four engines, alternating; the best run of all rounds counts "
                             "(more rounds: steadier ratios on a noisy machine)")
    parser.add_argument("--threads", type=int, default=2, help="threads (target partitions) for every engine")
    parser.add_argument("--queries", default="", help="e.g. 1,3,18 (default: all 22)")
    parser.add_argument("--work", help="folder for the data and the lake (default ~/.cache/gamelake/tpch-sf<scale>)")
    parser.add_argument("--gamelake", help="gamelake binary (default: the release build)")
    parser.add_argument("--compression", choices=["zstd", "lz4"], default="zstd",
                        help="codec of the lake's tables (CREATE TABLE ... WITH (compression = ...)); every engine reads those files")
    parser.add_argument("--layout", choices=["generated", "by-date"], default="generated",
                        help="row order of the lake's files: as dbgen wrote them (by order key), or lineitem by "
                             "l_shipdate and orders by o_orderdate (WITH (sort_by = ...)), as a lake of events is kept; "
                             "every engine reads those files")
    parser.add_argument("--results", default=str(ROOT / "benches" / "RESULTS.md"))
    args = parser.parse_args()

    work = pathlib.Path(args.work or pathlib.Path.home() / ".cache" / "gamelake" / f"tpch-sf{args.scale:g}")
    numbers = [int(q) for q in args.queries.split(",") if q] or list(range(1, 23))
    files = [QUERIES / f"q{n:02d}.sql" for n in numbers]
    source = generate(work / "parquet", args.scale)
    lake = work / "lake"
    binary = gamelake_binary(args.gamelake)
    load_seconds = load(binary, lake, source, args.compression, args.layout)
    data = {t: f"{lake}/public/{t}/*.parquet" for t in TABLES}

    engines = {
        "gamelake": lambda: run_gamelake(binary, lake, work, files, args),
        "plain": lambda: run_gamelake_plain(binary, lake, work, files, args),
        "DuckDB": lambda: run_duckdb(data, files, args),
        "DataFusion": lambda: run_datafusion(data, files, args),
    }
    times = {engine: {} for engine in engines}
    answers = {engine: {} for engine in engines}
    for r in range(args.rounds):
        # Each engine runs its queries in one block; the blocks alternate round by round (order
        # reversed every other round), so a slow minute of the machine falls on every engine.
        for engine in (list(engines) if r % 2 == 0 else list(engines)[::-1]):
            round_times, round_answers = engines[engine]()
            for n, seconds in round_times.items():
                times[engine][n] = min(seconds, times[engine].get(n, math.inf))
            answers[engine].update(round_answers)
        if args.rounds > 1:
            print(f"round {r + 1} of {args.rounds} done", flush=True)

    lines = report(numbers, times, answers, args, load_seconds, binary, lake)
    title = f"TPC-H SF{args.scale:g}" + ("" if args.compression == "zstd" else f", {args.compression} tables")
    title += "" if args.layout == "generated" else ", tables sorted by date"
    write_section(args.results, title, lines, binary)
    wrong = [n for n in numbers if verdict(answers, n) != "ok"]
    if wrong:
        sys.exit(f"answers differ from DuckDB's for queries {wrong}")


def generate(folder, scale):
    """TPC-H tables as Parquet files, generated once per scale (kept in the work folder)."""
    done = folder / "done"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    con = duckdb.connect()
    pkg = importlib.import_module("duckdb_extension_tpch")
    ext = next(pathlib.Path(pkg.__file__).parent.rglob("tpch.duckdb_extension"))
    con.execute(f"LOAD '{ext}'")
    print(f"generating TPC-H SF{scale:g} ...", flush=True)
    con.execute(f"CALL dbgen(sf={scale})")
    for table in TABLES:
        con.execute(f"COPY {table} TO '{folder / table}.parquet' (FORMAT parquet)")
    done.write_text("")
    return folder


# The date each table is sorted by with --layout by-date (the others keep dbgen's order).
DATE_ORDER = {"lineitem": "l_shipdate", "orders": "o_orderdate"}


def load(binary, lake, source, compression, layout="generated"):
    """A new lake with one Delta table per TPC-H table; answers the seconds it took."""
    shutil.rmtree(lake, ignore_errors=True)
    statements = []
    for t in TABLES:
        options = f"compression = '{compression}'"
        if layout == "by-date" and t in DATE_ORDER:
            options += f", sort_by = '{DATE_ORDER[t]}'"
        statements.append(f"CREATE TABLE public.{t} WITH ({options}) AS SELECT * FROM '{source / t}.parquet';")
    # Distinct counts for the planner's estimates, as a user of the lake would keep them.
    statements += [f"ANALYZE public.{t};" for t in TABLES]
    started = time.perf_counter()
    subprocess.run([binary, "--lake", str(lake), "sql", "-q", "-c", "\n".join(statements)], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def run_gamelake_plain(binary, lake, work, files, args):
    """The same queries and binary over the Delta tables' folders as plain Parquet: each file
    starts with `CREATE OR REPLACE VIEW t AS SELECT * FROM '<folder>/'` for every table, in an
    empty lake."""
    folder = work / "plain-queries"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    views = "".join(f"CREATE OR REPLACE VIEW {t} AS SELECT * FROM '{lake}/public/{t}/';\n" for t in TABLES)
    plain = []
    for file in files:
        (folder / file.name).write_text(views + file.read_text())
        plain.append(folder / file.name)
    empty = work / "empty-lake"
    empty.mkdir(exist_ok=True)
    return run_gamelake(binary, empty, work, plain, args, "plain")


def run_gamelake(binary, lake, work, files, args, label="gamelake"):
    out = work / f"answers-{label}"
    shutil.rmtree(out, ignore_errors=True)
    results, _ = gamelake_bench(binary, lake, work, files, args.threads, args.runs, out=out)
    times, answers = {}, {}
    for result in results:
        n = int(result["query"][1:])
        if "error" in result:
            print(f"{label} q{n}: {result['error']}", file=sys.stderr)
            continue
        times[n] = result["best"]
        answers[n] = comparable_rows(pq.read_table(out / f"{result['query']}.parquet"))
    return times, answers


def run_duckdb(data, files, args):
    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    for table, glob in data.items():
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{glob}')")
    return timed_runs(lambda sql: con.execute(sql).to_arrow_table(), files, args.runs, "DuckDB")


def run_datafusion(data, files, args):
    import datafusion

    ctx = datafusion.SessionContext(datafusion.SessionConfig().with_target_partitions(args.threads))
    for table, glob in data.items():
        ctx.register_parquet(table, glob)
    return timed_runs(lambda sql: ctx.sql(sql).to_arrow_table(), files, args.runs, "DataFusion")


def timed_runs(execute, files, runs, engine):
    times, answers = {}, {}
    for file in files:
        n = int(file.stem[1:])
        sql = file.read_text()
        best = math.inf
        try:
            for _ in range(runs):
                started = time.perf_counter()
                table = execute(sql)
                best = min(best, time.perf_counter() - started)
        except Exception as e:  # a failing query is reported in the table, the rest still run
            print(f"{engine} q{n}: {e}", file=sys.stderr)
            continue
        times[n], answers[n] = best, comparable_rows(table)
    return times, answers


def verdict(answers, n):
    expected = answers["DuckDB"].get(n)
    if expected is None:
        return "no DuckDB answer"
    bad = [engine for engine in ("gamelake", "DataFusion", "plain") if not same_rows(answers[engine].get(n), expected)]
    return "ok" if not bad else "differs: " + ", ".join(bad)


def lake_megabytes(lake):
    """The size of the lake's files (data and logs), in MB."""
    return sum(f.stat().st_size for f in pathlib.Path(lake).rglob("*") if f.is_file()) / 1e6


def report(numbers, times, answers, args, load_seconds, binary, lake):
    import datafusion

    def cell(engine, n):
        t = times[engine].get(n)
        return f"{t:.3f}" if t is not None else "failed"

    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b else "-"

    lines = [
        f"TPC-H scale {args.scale:g}, {args.threads} threads for each engine, warm, best of {args.runs}"
        + ("" if args.rounds == 1 else f" runs in each of {args.rounds} rounds (the engines alternating)") + ";"
        f" {platform.platform()}, {os.cpu_count()} cores. {gamelake_version(binary)}, DuckDB {duckdb.__version__},"
        f" DataFusion {datafusion.__version__} (Python, default config). Every answer compared with DuckDB's.",
        f"Command: `~/.cache/gamelake/venv/bin/python benches/tpch.py --scale {args.scale:g} --runs {args.runs}"
        + ("" if args.rounds == 1 else f" --rounds {args.rounds}")
        + f" --threads {args.threads}" + ("" if args.compression == "zstd" else f" --compression {args.compression}")
        + ("" if args.layout == "generated" else f" --layout {args.layout}") + "`",
        "",
        f"Loading the 8 tables into the lake (`CREATE TABLE ... WITH (compression = '{args.compression}'"
        + (", sort_by = ...)" if args.layout == "by-date" else ")")
        + f" AS SELECT * FROM 'x.parquet'`, then `ANALYZE` of each): {load_seconds:.1f} s; the lake holds {lake_megabytes(lake):,.0f} MB.",
        "",
        "| query | gamelake s | DuckDB s | DataFusion s | gamelake, plain files s | gamelake / DuckDB "
        "| gamelake / DataFusion | Delta / plain files | answers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n in numbers:
        g, d, f, p = (times[e].get(n) for e in ("gamelake", "DuckDB", "DataFusion", "plain"))
        lines.append(
            f"| Q{n} | {cell('gamelake', n)} | {cell('DuckDB', n)} | {cell('DataFusion', n)} | {cell('plain', n)} "
            f"| {ratio(g, d)} | {ratio(g, f)} | {ratio(g, p)} | {verdict(answers, n)} |")
    totals = {e: sum(times[e].get(n, 0.0) for n in numbers) for e in times}
    complete = all(n in times[e] for e in times for n in numbers)
    lines.append(
        f"| **sum** | {totals['gamelake']:.2f} | {totals['DuckDB']:.2f} | {totals['DataFusion']:.2f} "
        f"| {totals['plain']:.2f} | {ratio(totals['gamelake'], totals['DuckDB'])} "
        f"| {ratio(totals['gamelake'], totals['DataFusion'])} | {ratio(totals['gamelake'], totals['plain'])} "
        f"| {'all 22 ran' if complete and len(numbers) == 22 else 'some failed or not run'} |")
    lines.append("")
    lines.append("Ratios above 1 mean gamelake took longer. Target: gamelake sum <= 1.0x DuckDB.")
    lines.append("\"gamelake, plain files\": the same binary and settings over the same folders as plain Parquet")
    lines.append("(DataFusion's listing table, no Delta log), so Delta / plain files is the catalog's cost alone.")
    return lines


if __name__ == "__main__":
    main()
