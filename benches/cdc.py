"""Change capture end to end: PostgreSQL's logical replication stream -> Delta, against the raw
logical decoding rate of the same changes, in one run.

On a PostgreSQL cluster of its own (initdb, wal_level = logical, a free port; the machine's
server is left alone):
  1. a table of 100,000 accounts copied by `gamelake ingest` (mode = "cdc": slot, publication,
     copy in the slot's snapshot),
  2. a backlog of --changes changes in transactions of 100 (60% updates, 25% inserts, 15%
     deletes), written by a procedure inside PostgreSQL,
  3. the limits: the server decoding that backlog from a second slot through the SQL function
     gamelake reads (counted in the server), and `pg_recvlogical` streaming it to /dev/null,
  4. `gamelake ingest` applying the same backlog to the lake (changes/s), checked equal to the
     source,
  5. lag: a writer at --rate changes/s for --seconds while `gamelake ingest --follow` runs; each
     batch reports the wait of its oldest transaction (commit in PostgreSQL to commit in the
     lake); p50/p99 over the batches.
Writes the table to benches/RESULTS.md (section "Change capture").

Usage (from the repository root, after `cargo build --release` and `bash .ci/run` made the venv):
  ~/.cache/gamelake/venv/bin/python benches/cdc.py --changes 1000000
A tiny run (`--changes 2000 --seconds 2 --rate 1000`, results to a temporary file) is a test.
"""

import argparse
import os
import pathlib
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

import psycopg

from bench_common import ROOT, free_port, gamelake_binary, percentile, write_section

PG_BIN = "/usr/lib/postgresql/15/bin"


def as_postgres(*args):
    subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True)


class Cluster:
    """A PostgreSQL cluster with wal_level = logical in a temporary folder; stopped on exit."""

    def __init__(self):
        self.dir = pathlib.Path(tempfile.mkdtemp())
        shutil.chown(self.dir, "postgres")
        self.data = self.dir / "data"
        self.port = free_port()
        as_postgres(f"{PG_BIN}/initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                    "--no-sync", "-E", "UTF8", "--no-instructions")
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c wal_level=logical "
                   "-c max_replication_slots=8 -c max_wal_senders=8 -c shared_buffers=512MB")
        as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"),
                    "-o", options, "-w", "start")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self):
        as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


SCHEMA = """
CREATE TABLE accounts (id bigint PRIMARY KEY, owner bigint NOT NULL, balance bigint NOT NULL, note text);
INSERT INTO accounts SELECT g, g % 1000, 0, 'start' FROM generate_series(1, 100000) g;
CREATE SEQUENCE ids START 100001;
-- One round: a transaction of 60 updates, 25 inserts and 15 deletes at random places.
CREATE PROCEDURE mix(rounds int) LANGUAGE plpgsql AS $$
DECLARE top bigint;
BEGIN
  FOR r IN 1..rounds LOOP
    top := (SELECT last_value FROM ids);
    UPDATE accounts SET balance = balance + 1, note = 'u' || r
      WHERE id IN (SELECT id FROM accounts WHERE id >= (random() * top)::bigint ORDER BY id LIMIT 60);
    INSERT INTO accounts SELECT nextval('ids'), g, 0, 'new' FROM generate_series(1, 25) g;
    DELETE FROM accounts
      WHERE id IN (SELECT id FROM accounts WHERE id >= (random() * top)::bigint ORDER BY id LIMIT 15);
    COMMIT;
  END LOOP;
END $$;
"""

STATE = "SELECT count(*), sum(id), sum(balance) FROM accounts"
LAKE_STATE = "SELECT count(*) AS n, sum(id) AS s, sum(balance) AS b FROM bench.accounts"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--changes", type=int, default=1_000_000, help="changes in the backlog")
    ap.add_argument("--rate", type=int, default=10_000, help="changes/s written while measuring lag")
    ap.add_argument("--seconds", type=int, default=30, help="seconds of the lag phase")
    ap.add_argument("--gamelake", default=None, help="binary (default: the release build)")
    ap.add_argument("--results", default=str(ROOT / "benches" / "RESULTS.md"))
    args = ap.parse_args()
    binary = gamelake_binary(args.gamelake)
    cluster = Cluster()
    work = pathlib.Path(tempfile.mkdtemp())
    try:
        with psycopg.connect(cluster.url, autocommit=True) as db:
            db.execute(SCHEMA)
            pipeline = work / "bench.toml"
            pipeline.write_text('name = "bench"\n[source]\nkind = "postgres"\nurl = "${PG_URL}"\n'
                                '[[table]]\nfrom = "public.accounts"\nto = "bench.accounts"\nmode = "cdc"\n')
            env = dict(os.environ, PG_URL=cluster.url)
            lake = str(work / "lake")
            ingest = [binary, "--lake", lake, "ingest", str(pipeline)]
            subprocess.run(ingest, check=True, env=env, capture_output=True)
            db.execute("SELECT pg_create_logical_replication_slot('limit_slot', 'pgoutput')")

            rounds = max(1, args.changes // 100)
            print(f"writing {rounds * 100:,} changes ...", flush=True)
            db.execute("CALL mix(%s)", [rounds])
            end = db.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
            expected = db.execute(STATE).fetchone()

            # The decoding limit of the interface gamelake reads: the same SQL function, counted
            # inside the server (peek consumes nothing, so the slot still holds it all).
            start = time.perf_counter()
            db.execute("SELECT count(*) FROM pg_logical_slot_peek_binary_changes('limit_slot', %s::pg_lsn, NULL, "
                       "'proto_version', '1', 'publication_names', 'gamelake_bench', 'binary', 'true')", [end])
            peek_seconds = time.perf_counter() - start

            recv = [f"{PG_BIN}/pg_recvlogical", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
                    "-d", "postgres", "--slot", "limit_slot", "--start", "--endpos", end,
                    "-o", "proto_version=1", "-o", "publication_names=gamelake_bench", "-o", "binary=true",
                    "-f", "/dev/null", "--no-loop"]
            start = time.perf_counter()
            subprocess.run(recv, check=True)
            limit_seconds = time.perf_counter() - start

            start = time.perf_counter()
            out = subprocess.run(ingest, check=True, env=env, capture_output=True, text=True).stderr
            apply_seconds = time.perf_counter() - start
            found = re.search(r"bench\.accounts: (\d+) rows", out)
            changes = int(found.group(1)) if found else 0
            if changes < rounds * 90:
                raise SystemExit(f"gamelake applied {changes} changes of {rounds * 100}:\n{out}")
            lake_state = subprocess.run([binary, "--lake", lake, "sql", "--format", "csv", "-c", LAKE_STATE],
                                        check=True, capture_output=True, text=True).stdout.splitlines()[1]
            if lake_state != ",".join(str(v) for v in expected):
                raise SystemExit(f"the lake ({lake_state}) differs from the source ({expected})")

            print(f"lag at {args.rate:,} changes/s for {args.seconds} s ...", flush=True)
            follower = subprocess.Popen(ingest + ["--follow", "--interval", "200ms"], env=env,
                                        stderr=subprocess.PIPE, text=True)
            time.sleep(1)
            per_tick = max(1, args.rate // 1000)  # rounds of 100 changes every 100 ms
            written, deadline = 0, time.monotonic() + args.seconds
            while time.monotonic() < deadline:
                tick = time.monotonic()
                db.execute("CALL mix(%s)", [per_tick])
                written += per_tick * 100
                time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
            achieved = written / args.seconds
            time.sleep(2)
            follower.send_signal(signal.SIGTERM)
            _, err = follower.communicate(timeout=60)
            lags = [float(l) for l in re.findall(r"lag ([0-9.]+)s", err)]
            if not lags:
                raise SystemExit(f"the follower reported no batch:\n{err}")
            lags.sort()
            p50 = statistics.median(lags)
            p99 = percentile(lags, 0.99)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        f"Backlog of {changes:,} changes (transactions of 100: 60% updates, 25% inserts, 15% deletes) "
        "on a table of 100,000 accounts, PostgreSQL 15 on the same 2 cores.",
        "",
        "| Path | Seconds | Changes/s | vs the limit |",
        "|---|---:|---:|---:|",
        f"| `pg_logical_slot_peek_binary_changes` counted in the server: the decoding limit of the interface gamelake reads | {peek_seconds:.2f} "
        f"| {changes / peek_seconds:,.0f} | 1.00× |",
        f"| `pg_recvlogical` (walsender stream, pgoutput, binary) to /dev/null | {limit_seconds:.2f} "
        f"| {changes / limit_seconds:,.0f} | {peek_seconds / limit_seconds:.2f}× |",
        f"| gamelake ingest (cdc): decode, fold by key, Delta MERGE, slot advance | {apply_seconds:.2f} "
        f"| {changes / apply_seconds:,.0f} | {peek_seconds / apply_seconds:.2f}× |",
        "",
        f"Lag with a writer at {achieved:,.0f} changes/s for {args.seconds} s and `--follow --interval 200ms` "
        f"({len(lags)} batches; each batch's oldest transaction, commit in PostgreSQL to commit in the lake): "
        f"p50 {p50:.2f} s, p99 {p99:.2f} s, max {lags[-1]:.2f} s.",
    ]
    write_section(pathlib.Path(args.results), "Change capture (PostgreSQL -> lake)", lines, binary)


if __name__ == "__main__":
    main()
