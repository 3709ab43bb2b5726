"""MySQL/MariaDB table -> lake, against the peers, in one run.

Compares, on the same table of the local MariaDB server:
  1. `gamelake ingest` of a snapshot pipeline (mysql_async binary protocol -> Arrow ->
     Delta/Parquet, zstd), with N connections over primary-key ranges,
  2. `gamelake ingest` of a migration pipeline (the same table split at a cutoff into the lake
     and PostgreSQL, every range checksummed by MariaDB and read back from both sides),
  3. DuckDB's mysql extension copying the table to a Parquet file,
  4. mydumper (Debian's package) dumping it to files with as many threads.
Writes the table to benches/RESULTS.md (section "MySQL snapshot").

Usage (from the repository root, after `cargo build --release` and `bash .ci/run` made the venv;
`apt-get install mydumper` for that peer):
  ~/.cache/gamelake/venv/bin/python benches/mysql_snapshot.py --rows 10000000
"""

import argparse
import os
import resource
import pathlib
import platform
import shutil
import subprocess
import tempfile

from bench_common import PG, ROOT, duckdb_extension, gamelake_binary, psql, timed, write_section


def server_cpu():
    """CPU seconds (user + system) the MariaDB server process has used so far."""
    pid = subprocess.run(["pgrep", "-o", "-x", "mariadbd"], capture_output=True, text=True).stdout.split()
    if not pid:
        pid = subprocess.run(["pgrep", "-o", "-x", "mysqld"], capture_output=True, text=True).stdout.split()
    if not pid:
        raise SystemExit("no mariadbd or mysqld process to measure the server's CPU time of")
    fields = pathlib.Path(f"/proc/{pid[0]}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_cpu():
    """CPU seconds used by this process (DuckDB runs in it) and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measured(fn):
    """(wall seconds, server CPU seconds, client CPU seconds) of one run of `fn`."""
    server, client = server_cpu(), client_cpu()
    wall = timed(fn)
    return wall, server_cpu() - server, client_cpu() - client


def mariadb(db, sql):
    return subprocess.run(["mariadb", "-uroot", "-h127.0.0.1", "-N", "-B", db, "-e", sql],
                          check=True, capture_output=True, text=True).stdout.strip()



def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--parallelism", type=int, default=2, help="connections (gamelake) and threads (DuckDB, mydumper)")
    ap.add_argument("--runs", type=int, default=2, help="runs of each path; the best is reported")
    ap.add_argument("--gamelake", default=None, help="binary (default: the release build)")
    ap.add_argument("--results", default=str(ROOT / "benches" / "RESULTS.md"))
    args = ap.parse_args()
    binary = gamelake_binary(args.gamelake)

    db = f"gamelake_bench_{os.getpid()}"
    mariadb("test", f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db} CHARACTER SET utf8mb4")
    psql("test", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    psql("test", f"CREATE DATABASE {db}")
    work = pathlib.Path(tempfile.mkdtemp())
    try:
        print(f"creating {args.rows:,} rows ...", flush=True)
        mariadb(db, f"""CREATE TABLE purchases (
              purchase_id bigint unsigned NOT NULL PRIMARY KEY, player_id int NOT NULL,
              item_id smallint NOT NULL, amount decimal(12,2) NOT NULL, currency char(3) NOT NULL,
              purchased_at datetime(6) NOT NULL, region varchar(16) NOT NULL) ENGINE=InnoDB;
            INSERT INTO purchases SELECT seq, seq % 100000, seq % 180 + 1, (seq % 64800) / 100,
              IF(seq % 10 = 0, 'USD', 'CNY'), NOW(6) - INTERVAL 730 DAY + INTERVAL seq % 63072000 SECOND,
              ELT(seq % 4 + 1, 'beijing', 'shanghai', 'guangzhou', 'tokyo')
            FROM seq_1_to_{args.rows};
            ANALYZE TABLE purchases;""")
        size = mariadb("information_schema", f"SELECT ROUND((DATA_LENGTH + INDEX_LENGTH) / 1e6) FROM TABLES WHERE TABLE_SCHEMA = '{db}' AND TABLE_NAME = 'purchases'")
        url = f"mysql://root@127.0.0.1:3306/{db}"
        results, sizes = {}, {}

        snapshot = work / "snapshot.toml"
        snapshot.write_text(f'''name = "bench"
[source]
kind = "mysql"
url = "{url}"
parallelism = {args.parallelism}
[[table]]
from = "purchases"
to = "bench.purchases"
mode = "snapshot"
''')
        name = f"gamelake ingest (snapshot, {args.parallelism} connections) -> Delta"
        results[name] = min(measured(lambda: subprocess.run(
            [binary, "--lake", str(work / "lake"), "ingest", str(snapshot)], check=True,
            stderr=subprocess.DEVNULL)) for _ in range(args.runs))
        sizes[name] = sum(f.stat().st_size for f in (work / "lake" / "bench" / "purchases").glob("*.parquet"))

        def migrate():
            shutil.rmtree(work / "mlake", ignore_errors=True)
            psql(db, "DROP SCHEMA IF EXISTS gamelake CASCADE; DROP TABLE IF EXISTS public.purchases")
            migration = work / "migrate.toml"
            migration.write_text(f'''name = "bench"
[source]
kind = "mysql"
url = "{url}"
[sink]
kind = "postgres"
url = "{PG} dbname={db}"
[[table]]
from = "purchases"
to = "v1.purchases"
hot_to = "public.purchases"
mode = "migrate"
time_column = "purchased_at"
hot_after = "365d"
''')
            subprocess.run([binary, "--lake", str(work / "mlake"), "ingest", str(migration)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        name = "gamelake ingest (migrate: half to the lake, half to PostgreSQL, checksummed) "
        results[name] = min(measured(migrate) for _ in range(args.runs))

        import duckdb
        ext_dir = work / "ext"
        ext_dir.mkdir()
        shutil.copy(duckdb_extension("duckdb_extension_mysql", "mysql"), ext_dir / "mysql_scanner.duckdb_extension")
        con = duckdb.connect()
        con.execute(f"SET threads = {args.parallelism}")
        con.execute(f"LOAD '{ext_dir / 'mysql_scanner.duckdb_extension'}'")
        con.execute(f"ATTACH 'host=127.0.0.1 port=3306 user=root database={db}' AS my (TYPE mysql, READ_ONLY)")
        name = "DuckDB mysql extension -> Parquet"
        results[name] = min(measured(lambda: con.execute(
            f"COPY (SELECT * FROM my.purchases) TO '{work / 'duck.parquet'}' (FORMAT parquet)")) for _ in range(args.runs))
        sizes[name] = (work / "duck.parquet").stat().st_size
        con.close()

        def dump():
            shutil.rmtree(work / "dump", ignore_errors=True)
            subprocess.run(["mydumper", "-h", "127.0.0.1", "-u", "root", "-B", db, "-T", "purchases",
                            "-t", str(args.parallelism), "--rows", "500000", "-o", str(work / "dump")],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        name = f"mydumper ({args.parallelism} threads) -> SQL files"
        results[name] = min(measured(dump) for _ in range(args.runs))
        sizes[name] = sum(f.stat().st_size for f in (work / "dump").glob("*"))
        data = [f for f in (work / "dump").glob(f"{db}.purchases*.sql") if "schema" not in f.name]
        if not data:
            raise SystemExit("mydumper wrote no data files: see its output with -v 3")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        mariadb("test", f"DROP DATABASE IF EXISTS {db}")
        psql("test", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")

    duck = results["DuckDB mysql extension -> Parquet"][0]
    cores = os.cpu_count()
    lines = [
        f"{args.rows:,} rows (7 columns: bigint unsigned, int, smallint, decimal(12,2), char(3), datetime(6), varchar; {size} MB in InnoDB),",
        f"local MariaDB 10.11, {cores} cores, {platform.platform()}. Best of {args.runs} runs each.",
        "Command: `~/.cache/gamelake/venv/bin/python benches/mysql_snapshot.py "
        f"--rows {args.rows} --parallelism {args.parallelism}`",
        "",
        "Server CPU is what the MariaDB process used during the run, client CPU what the path's own",
        f"process used; on {cores} cores shared by both, no path can take less than their sum / {cores}",
        "(the floor column).",
        "",
        "| path | seconds | rows/s | speed vs DuckDB | MB written | server CPU s | client CPU s | floor s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (secs, server, client) in results.items():
        written = f"{sizes[name] / 1e6:,.0f}" if name in sizes else ""
        lines.append(f"| {name.strip()} | {secs:.2f} | {args.rows / secs:,.0f} | {duck / secs:.2f}x | {written} "
                     f"| {server:.1f} | {client:.1f} | {(server + client) / cores:.2f} |")
    write_section(args.results, "MySQL snapshot", lines, binary)


if __name__ == "__main__":
    main()
