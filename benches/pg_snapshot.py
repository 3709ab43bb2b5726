"""Snapshot throughput: PostgreSQL table -> lake, against the limit and a peer, in one run.

Compares, on the same table of the local PostgreSQL server:
  1. raw `COPY (SELECT * FROM t) TO STDOUT (FORMAT binary)` into /dev/null (the limit),
  2. `gamelake ingest` of a snapshot pipeline (binary COPY -> Arrow -> Delta/Parquet, zstd),
  3. DuckDB's postgres extension copying the same table to a Parquet file.
Writes the table to benches/RESULTS.md (section "PostgreSQL snapshot").

Usage (from the repository root, after `cargo build --release` and `bash .ci/run` made the venv):
  ~/.cache/gamelake/venv/bin/python benches/pg_snapshot.py --rows 10000000
"""

import argparse
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

from bench_common import PG, ROOT, duckdb_extension, gamelake_binary, ingest_table, psql, psql_value, timed, write_section



def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--parallelism", type=int, default=2, help="gamelake snapshot connections")
    ap.add_argument("--zstd-levels", type=lambda t: [int(x) for x in t.split(",")], default=[3, 1],
                    help="gamelake runs, one per zstd level of the lake files (the pipeline's zstd_level)")
    ap.add_argument("--gamelake", default=None, help="binary (default: the release build)")
    ap.add_argument("--results", default=str(ROOT / "benches" / "RESULTS.md"))
    args = ap.parse_args()
    binary = gamelake_binary(args.gamelake)

    db = f"gamelake_bench_{os.getpid()}"
    psql("test", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    psql("test", f"CREATE DATABASE {db}")
    try:
        print(f"creating {args.rows:,} rows ...", flush=True)
        psql(db, f"""CREATE TABLE purchases AS
            SELECT g AS purchase_id, (g % 100000) AS player_id, (g % 180) + 1 AS item_id,
                   round((g % 64800) / 100.0, 2)::numeric(12,2) AS amount,
                   CASE WHEN g % 10 = 0 THEN 'USD' ELSE 'CNY' END AS currency,
                   timestamptz '2026-01-01' + (g % 31536000) * interval '1 second' AS purchased_at,
                   (ARRAY['beijing','shanghai','guangzhou','tokyo'])[g % 4 + 1] AS region
            FROM generate_series(1, {args.rows}) g""")
        psql(db, "VACUUM ANALYZE purchases")
        size = psql_value(db, "SELECT pg_size_pretty(pg_relation_size('purchases'))")
        results = {}
        with open(os.devnull, "wb") as null:
            results["raw COPY binary -> /dev/null (limit)"] = min(timed(lambda: psql(
                db, "COPY (SELECT * FROM purchases) TO STDOUT (FORMAT binary)", out=null)) for _ in range(2))

        work = pathlib.Path(tempfile.mkdtemp())
        sizes = {}
        for level in args.zstd_levels:
            pipeline = work / f"bench-{level}.toml"
            pipeline.write_text(f'''name = "bench"
[source]
kind = "postgres"
url = "{PG} dbname={db}"
parallelism = {args.parallelism}
[[table]]
from = "public.purchases"
to = "bench.purchases_zstd{level}"
mode = "snapshot"
zstd_level = {level}
''')
            name = f"gamelake ingest (snapshot, {args.parallelism} connections, zstd {level}) -> Delta"
            results[name] = min(timed(lambda: subprocess.run(
                [binary, "--lake", str(work / "lake"), "ingest", str(pipeline)], check=True,
                stderr=subprocess.DEVNULL)) for _ in range(2))
            table = work / "lake" / "bench" / f"purchases_zstd{level}"
            sizes[name] = sum(f.stat().st_size for f in table.glob("*.parquet"))

        import duckdb
        ext_dir = work / "ext"
        ext_dir.mkdir()
        shutil.copy(duckdb_extension("duckdb_extension_postgres", "postgres"), ext_dir / "postgres_scanner.duckdb_extension")
        con = duckdb.connect()
        con.execute("SET threads = 2")
        con.execute(f"LOAD '{ext_dir / 'postgres_scanner.duckdb_extension'}'")
        con.execute(f"ATTACH '{PG} dbname={db}' AS pg (TYPE postgres, READ_ONLY)")
        results["DuckDB postgres extension -> Parquet"] = min(timed(lambda: con.execute(
            f"COPY (SELECT * FROM pg.public.purchases) TO '{work / 'duck.parquet'}' (FORMAT parquet)")) for _ in range(2))
        sizes["DuckDB postgres extension -> Parquet"] = (work / "duck.parquet").stat().st_size
        con.close()
        shutil.rmtree(work, ignore_errors=True)
    finally:
        psql("test", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")

    limit = results["raw COPY binary -> /dev/null (limit)"]
    lines = [
        f"{args.rows:,} rows (7 columns: bigint, int, int, numeric(12,2), text, timestamptz, text; {size} on disk),",
        f"local PostgreSQL 15, {os.cpu_count()} cores, {platform.platform()}. Best of 2 runs each.",
        "Command: `~/.cache/gamelake/venv/bin/python benches/pg_snapshot.py "
        f"--rows {args.rows} --parallelism {args.parallelism} "
        f"--zstd-levels {','.join(map(str, args.zstd_levels))}`",
        "",
        "The limit is one psql connection; gamelake and DuckDB both read with several connections",
        "(DuckDB by ctid ranges too), so either can pass 100%. DuckDB writes snappy; gamelake zstd",
        "at the pipeline's `zstd_level` (default 3).",
        "",
        "| path | seconds | rows/s | share of the COPY limit | MB written |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += ingest_table(args.rows, results, sizes, lambda secs: f"{limit / secs:.0%}")
    write_section(args.results, "PostgreSQL snapshot", lines, binary)


if __name__ == "__main__":
    main()
