"""Streaming a large result to a client: gamelake's Flight SQL (ADBC) against PostgreSQL
returning the same rows to psycopg, in one run.

Builds one table of N rows (5 columns: bigint, bigint, text, double, timestamp) twice, from
the same expressions: in a PostgreSQL database and in a gamelake lake. Then, best of 3 each:
  1. ADBC Flight SQL: `SELECT *` through `gamelake serve --flight`, fetched as an Arrow table,
  2. psycopg: `SELECT *` from PostgreSQL, fetched as Python tuples (what an application reads),
  3. psycopg binary COPY to nowhere (PostgreSQL's fastest way out, for reference).
Checks the row counts and sums agree, then writes the section "Flight SQL result streaming" of
benches/RESULTS.md.

Usage (from the repository root, after `cargo build --release` and `bash .ci/run` made the venv):
  ~/.cache/gamelake/venv/bin/python benches/flight_stream.py --rows 10000000
"""

import argparse
import os
import platform
import subprocess
import tempfile

from bench_common import PG, gamelake_binary, psql, tear_down, timed, write_section

COLUMNS_PG = """g AS id, g % 100000 AS player_id, 'item-' || (g % 5000) AS item,
    (g % 997) * 1.5::float8 AS amount, to_timestamp(1767225600 + g) AT TIME ZONE 'UTC' AS at"""
COLUMNS_LAKE = """v AS id, v % 100000 AS player_id, concat('item-', v % 5000) AS item,
    (v % 997) * 1.5 AS amount, to_timestamp_micros((1767225600 + v) * 1000000) AS at"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--gamelake", default=None, help="binary (default: the release build)")
    ap.add_argument("--results", default=None, help="results file (default: benches/RESULTS.md)")
    args = ap.parse_args()
    binary = gamelake_binary(args.gamelake)
    results_file = args.results or os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")

    import adbc_driver_flightsql.dbapi as flightsql
    import psycopg

    db = f"gamelake_flight_bench_{os.getpid()}"
    psql("test", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    psql("test", f"CREATE DATABASE {db}")
    work = tempfile.mkdtemp()
    lake = os.path.join(work, "lake")
    server = None
    try:
        print(f"creating {args.rows:,} rows in PostgreSQL and in the lake ...", flush=True)
        psql(db, f"CREATE TABLE t AS SELECT {COLUMNS_PG} FROM generate_series(1, {args.rows}) g")
        psql(db, "VACUUM ANALYZE t")
        subprocess.run([binary, "--lake", lake, "sql", "-q", "-c",
                        f"CREATE TABLE bench.t AS SELECT {COLUMNS_LAKE} FROM generate_series(1, {args.rows}) s(v)"],
                       check=True, stdout=subprocess.DEVNULL)

        server = subprocess.Popen([binary, "--lake", lake, "serve", "--flight", "127.0.0.1:0", "--insecure-no-auth"],
                                  stdout=subprocess.PIPE, text=True)
        line = server.stdout.readline()
        uri = "grpc://" + line.split("grpc://")[1].split()[0]

        conn = flightsql.connect(uri)
        pg = psycopg.connect(f"{PG} dbname={db}")

        def adbc():
            with conn.cursor() as cur:
                cur.execute("SELECT * FROM bench.t")
                table = cur.fetch_arrow_table()
                assert table.num_rows == args.rows, table.num_rows

        def rows():
            with pg.cursor() as cur:
                cur.execute("SELECT * FROM t")
                assert len(cur.fetchall()) == args.rows

        def copy():
            with pg.cursor() as cur:
                with cur.copy("COPY t TO STDOUT (FORMAT binary)") as out:
                    for _ in out:
                        pass

        # Same rows on both sides.
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), sum(player_id), sum(amount) FROM bench.t")
            lake_check = cur.fetchone()
        with pg.cursor() as cur:
            cur.execute("SELECT count(*), sum(player_id), sum(amount) FROM t")
            pg_check = cur.fetchone()
        assert lake_check[0] == pg_check[0] and lake_check[1] == pg_check[1], (lake_check, pg_check)
        assert abs(lake_check[2] - pg_check[2]) < 1e-6 * max(1.0, abs(pg_check[2])), (lake_check, pg_check)

        results = {
            "gamelake Flight SQL -> ADBC (Arrow table)": min(timed(adbc) for _ in range(3)),
            "PostgreSQL SELECT -> psycopg (tuples)": min(timed(rows) for _ in range(3)),
            "PostgreSQL COPY binary -> psycopg (bytes, reference)": min(timed(copy) for _ in range(3)),
        }
        conn.close()
        pg.close()
    finally:
        tear_down(server, db, work)

    baseline = results["PostgreSQL SELECT -> psycopg (tuples)"]
    lines = [
        f"{args.rows:,} rows (5 columns: bigint, bigint, text, double, timestamp), one client, local",
        f"servers on loopback, {os.cpu_count()} cores, {platform.platform()}. Best of 3 runs each.",
        f"Command: `~/.cache/gamelake/venv/bin/python benches/flight_stream.py --rows {args.rows}`",
        "",
        "| path | seconds | rows/s | speed vs PostgreSQL -> psycopg |",
        "|---|---:|---:|---:|",
    ]
    for name, secs in results.items():
        lines.append(f"| {name} | {secs:.2f} | {args.rows / secs:,.0f} | {baseline / secs:.1f}x |")
    write_section(results_file, "Flight SQL result streaming", lines, binary)


if __name__ == "__main__":
    main()
