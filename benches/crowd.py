"""A crowd of clients: many concurrent loopback clients of one `gamelake serve`, over the
PostgreSQL protocol (asyncpg) and Flight SQL (ADBC), against PostgreSQL itself serving the same
one-player lookups from indexed tables, in one run.

Each client runs queries back to back for --seconds: in the "lookups" mix only the one-player
lookup of queries/player_activity.sql (a random player each time); in the "80/20" mix, 80% of
them lookups and 20% dashboards (the saved queries DASHBOARDS, their text as a BI tool sends
it). PostgreSQL clients prepare the lookup once per connection and bind the player (what an
application does); Flight SQL clients send each query's text with the player written in (what
ADBC's DB-API and Grafana do). A query the server refuses (too busy, a quota) is counted apart
and its client waits the retry time the message names (or 100 ms) before its next query;
latencies are those of the queries that ran. PostgreSQL (the OLTP anchor) holds the lookup's
two tables, copied from the lake, with an index on (player_id, day), and answers the same text.

    ~/.cache/gamelake/venv/bin/python benches/crowd.py --scale 2 --clients 64,512

Server CPU (the serving process's user+system seconds per second of the run) is reported beside
each row, and the clients' own: all run on the same cores, so the clients take a share the
servers do not get. Writes the section "A crowd of clients" of benches/RESULTS.md.
"""

import argparse
import asyncio
import os
import pathlib
import platform
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time

from bench_common import (ROOT, demo_lake, free_port, gamelake_binary, gamelake_version, percentile, psql,
                          psql_value, saved_query_params, tear_down, write_section)

DASHBOARDS = ["dau_by_region", "revenue_by_region", "revenue_by_category_day", "top_spenders"]
LOOKUP_SHARE = {"lookups": 1.0, "80/20": 0.8}
RETRY = re.compile(r"retry in (\d+(?:\.\d+)?) ?(ms|s)\b")


def query_text(name, params, positional=False):
    """A saved query's SQL without its comments, `$player_id` as `$1` (positional) and other
    parameters written in as literals."""
    text = (ROOT / "queries" / f"{name}.sql").read_text()
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--")).strip().rstrip(";")
    if positional:
        text = text.replace("$player_id", "$1")
    for key, value in params.items():
        text = text.replace(f"${key}", value if value.isdigit() else f"DATE '{value}'")
    return text


def retry_after(message):
    """Seconds a refusal asks the client to wait ("retry in 250 ms"), or None: not a refusal."""
    if "53300" not in message and "RESOURCE_EXHAUSTED" not in message and "retry" not in message:
        return None
    found = RETRY.search(message)
    if not found:
        return 0.1
    value = float(found.group(1))
    return value / 1000 if found.group(2) == "ms" else value


class Tally:
    """What the clients of one run saw: latencies by kind, refusals, errors (first few kept)."""

    def __init__(self):
        self.latency = {"lookup": [], "dashboard": []}
        self.refused = 0
        self.errors = 0
        self.messages = []
        self.lock = threading.Lock()

    def ran(self, kind, seconds):
        with self.lock:
            self.latency[kind].append(seconds)

    def failed(self, message):
        wait = retry_after(message)
        with self.lock:
            if wait is None:
                self.errors += 1
            else:
                self.refused += 1
            if len(self.messages) < 5:
                self.messages.append(message.splitlines()[0][:200])
        return wait or 0.0


def cpu_seconds(pid):
    """User+system CPU seconds of a process so far, with those of its children that ended
    (/proc/<pid>/stat): PostgreSQL's backends end with their connections, within each run."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def own_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def pg_crowd(dsn, clients, seconds, lookup, dashboards, share, players, seed, tally):
    """`clients` asyncpg connections running the mix for `seconds` after they all connected."""
    import asyncpg

    conns = [await asyncpg.connect(dsn) for _ in range(clients)]
    try:
        stmts = [await c.prepare(lookup) for c in conns]
        deadline = time.perf_counter() + seconds

        async def client(i):
            rng = random.Random(seed + i)
            while time.perf_counter() < deadline:
                kind = "lookup" if rng.random() < share else "dashboard"
                start = time.perf_counter()
                try:
                    if kind == "lookup":
                        await stmts[i].fetch(rng.randint(*players))
                    else:
                        await conns[i].fetch(rng.choice(dashboards))
                    tally.ran(kind, time.perf_counter() - start)
                except Exception as e:  # noqa: BLE001 - counted and reported, the run goes on
                    await asyncio.sleep(tally.failed(f"{getattr(e, 'sqlstate', '')} {e}"))

        await asyncio.gather(*(client(i) for i in range(clients)))
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


def flight_crowd(uri, clients, seconds, lookup, dashboards, share, players, seed, tally):
    """`clients` threads, each with its own ADBC connection, running the mix for `seconds`."""
    import adbc_driver_flightsql.dbapi as flightsql

    conns = [flightsql.connect(uri) for _ in range(clients)]
    ready = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(i):
        rng = random.Random(seed + i)
        ready.wait()
        with conns[i].cursor() as cur:
            while time.perf_counter() < deadline[0]:
                kind = "lookup" if rng.random() < share else "dashboard"
                sql = lookup.replace("$1", str(rng.randint(*players))) if kind == "lookup" else rng.choice(dashboards)
                start = time.perf_counter()
                try:
                    cur.execute(sql)
                    cur.fetch_arrow_table()
                    tally.ran(kind, time.perf_counter() - start)
                except Exception as e:  # noqa: BLE001 - counted and reported, the run goes on
                    time.sleep(tally.failed(str(e)))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    ready.wait()
    for t in threads:
        t.join()
    for c in conns:
        c.close()


def measure(label, run, server_pid, seconds):
    """Runs one crowd; answers its row of numbers."""
    tally = Tally()
    cpu_server, cpu_client, wall = cpu_seconds(server_pid), own_cpu(), time.perf_counter()
    run(tally)
    wall = time.perf_counter() - wall
    lookups, dashboards = tally.latency["lookup"], tally.latency["dashboard"]
    row = {
        "label": label,
        "qps": (len(lookups) + len(dashboards)) / seconds,
        "lookups/s": len(lookups) / seconds,
        "lookup p50": percentile(lookups, 0.5) if lookups else None,
        "lookup p99": percentile(lookups, 0.99) if lookups else None,
        "dashboard p50": percentile(dashboards, 0.5) if dashboards else None,
        "dashboard p99": percentile(dashboards, 0.99) if dashboards else None,
        "refused": tally.refused,
        "errors": tally.errors,
        "server cpu": (cpu_seconds(server_pid) - cpu_server) / wall,
        "client cpu": (own_cpu() - cpu_client) / wall,
        "messages": tally.messages,
    }
    print(label, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k != "label"},
          flush=True)
    return row


def anchor_tables(binary, lake, db):
    """The lookup's two tables, copied from the lake into PostgreSQL database `db` and indexed."""
    psql(db, "CREATE SCHEMA game")
    psql(db, "CREATE TABLE game.sessions (player_id bigint, session_date date, login_at timestamptz,"
             " logout_at timestamptz)")
    psql(db, "CREATE TABLE game.purchases (player_id bigint, purchase_date date, amount numeric(12,2))")
    for table, columns in [("sessions", "player_id, session_date, login_at, logout_at"),
                           ("purchases", "player_id, purchase_date, amount")]:
        export = subprocess.Popen([binary, "--lake", str(lake), "sql", "--format", "csv", "-c",
                                   f"SELECT {columns} FROM game.{table}"], stdout=subprocess.PIPE)
        subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-c",
                        f"\\copy game.{table} ({columns}) FROM STDIN (FORMAT csv, HEADER true)"],
                       stdin=export.stdout, check=True)
        if export.wait() != 0:
            sys.exit(f"exporting game.{table} from the lake failed")
    psql(db, "CREATE INDEX ON game.sessions (player_id, session_date)")
    psql(db, "CREATE INDEX ON game.purchases (player_id, purchase_date)")
    psql(db, "VACUUM ANALYZE")
    return int(psql_value(db, "SELECT count(*) FROM game.sessions")), \
        int(psql_value(db, "SELECT count(*) FROM game.purchases"))


async def same_lookups(ours, theirs, lookup, players, count=20):
    """Checks that gamelake and PostgreSQL give the same lookup answers for `count` players
    (exits otherwise); answers how many of those players had rows."""
    import asyncpg

    a, b = await asyncpg.connect(ours), await asyncpg.connect(theirs)
    try:
        found = 0
        for player in random.Random(7).sample(range(players[0], players[1] + 1), count):
            mine = [tuple(str(v) for v in r.values()) for r in await a.fetch(lookup, player)]
            pg = [tuple(str(v) for v in r.values()) for r in await b.fetch(lookup, player)]
            if [tuple(map(canonical, r)) for r in mine] != [tuple(map(canonical, r)) for r in pg]:
                sys.exit(f"player {player}: gamelake answered {mine[:3]}..., PostgreSQL {pg[:3]}...")
            found += bool(mine)
        if not found:
            sys.exit(f"none of the {count} players drawn has rows: the comparison proved nothing")
        return found
    finally:
        await a.close()
        await b.close()


def canonical(text):
    """A value as text both servers agree on: numbers to 6 decimals."""
    try:
        return f"{float(text):.6f}"
    except ValueError:
        return text


def start_server(binary, lake, work, max_concurrent, max_queued):
    """`gamelake serve` with both protocols on free loopback ports; answers (process, pg port,
    flight uri)."""
    config = pathlib.Path(work) / "serve.toml"
    config.write_text(f"[flight]\nmax_concurrent_queries = {max_concurrent}\nmax_queued_queries = {max_queued}\n")
    pg_port = free_port()
    server = subprocess.Popen([binary, "--lake", str(lake), "--config", str(config), "serve", "--flight",
                               "127.0.0.1:0", "--pg", f"127.0.0.1:{pg_port}", "--insecure-no-auth"],
                              stdout=subprocess.PIPE, text=True)
    uri = None
    while uri is None:
        line = server.stdout.readline()
        if not line:
            sys.exit("gamelake serve stopped before it listened")
        if "grpc://" in line:
            uri = "grpc://" + line.split("grpc://")[1].split()[0]
    # Keep reading its output so that it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
    return server, pg_port, uri


def ms(value):
    return "" if value is None else f"{value * 1000:,.0f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=2.0, help="demo scale (players = 100,000 x scale)")
    parser.add_argument("--clients", default="64,512", help="client counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each run")
    parser.add_argument("--protocols", default="pg,flight", help="pg, flight or both")
    parser.add_argument("--mixes", default="lookups,80/20", help="lookups, 80/20 or both")
    parser.add_argument("--max-concurrent", type=int, default=8, help="[flight] max_concurrent_queries of the server")
    parser.add_argument("--max-queued", type=int, default=64, help="[flight] max_queued_queries of the server")
    parser.add_argument("--work", help="folder for the lake (default ~/.cache/gamelake/demo-<scale>)")
    parser.add_argument("--gamelake", help="gamelake binary (default: the release build)")
    parser.add_argument("--results", default=str(ROOT / "benches" / "RESULTS.md"))
    parser.add_argument("--no-results", action="store_true", help="print the table only")
    args = parser.parse_args()

    binary = gamelake_binary(args.gamelake)
    work = pathlib.Path(args.work or pathlib.Path.home() / ".cache" / "gamelake" / f"demo-{args.scale:g}")
    lake, _ = demo_lake(binary, work, args.scale)
    params = saved_query_params(binary, lake)
    params.pop("player_id")
    players = (1, int(args.scale * 100_000))
    lookup = query_text("player_activity", params, positional=True)
    dashboards = [query_text(name, params) for name in DASHBOARDS]
    clients = [int(n) for n in args.clients.split(",")]
    protocols = args.protocols.split(",")
    mixes = args.mixes.split(",")

    db = f"gamelake_crowd_{os.getpid()}"
    psql("test", f"CREATE DATABASE {db}")
    rows = []
    server = None
    tmp = tempfile.mkdtemp()
    try:
        print("copying the lookup's tables into PostgreSQL ...", flush=True)
        sessions, purchases = anchor_tables(binary, lake, db)
        server, pg_port, uri = start_server(binary, lake, tmp, args.max_concurrent, args.max_queued)
        ours = f"postgresql://anonymous@127.0.0.1:{pg_port}/lake"
        theirs = f"postgresql://postgres@127.0.0.1:5432/{db}"
        checked = asyncio.run(same_lookups(ours, theirs, lookup, players))
        # Warm the server: every query at least once.
        asyncio.run(pg_crowd(ours, 1, 2.0, lookup, dashboards, 0.5, players, 0, Tally()))
        for n in clients:
            for mix in mixes:
                share = LOOKUP_SHARE[mix]
                for protocol in protocols:
                    label = f"gamelake {'PostgreSQL protocol' if protocol == 'pg' else 'Flight SQL'}, {mix}, {n}"
                    if protocol == "pg":
                        def run(tally, n=n, share=share):
                            asyncio.run(pg_crowd(ours, n, args.seconds, lookup, dashboards, share, players,
                                                 n, tally))
                    else:
                        def run(tally, n=n, share=share):
                            flight_crowd(uri, n, args.seconds, lookup, dashboards, share, players, n, tally)
                    rows.append(measure(label, run, server.pid, args.seconds))
            if n <= 100:  # PostgreSQL's own max_connections is 100
                def anchor(tally, n=n):
                    asyncio.run(pg_crowd(theirs, n, args.seconds, lookup, dashboards, 1.0, players, n, tally))
                rows.append(measure(f"PostgreSQL (indexed tables), lookups, {n}", anchor,
                                    postgres_pid(), args.seconds))
    finally:
        tear_down(server, db, tmp)

    lines = [
        f"The demo at scale {args.scale:g} ({players[1]:,} players; game.sessions {sessions:,} rows,"
        f" game.purchases {purchases:,}); `gamelake serve --flight --pg` with max_concurrent_queries ="
        f" {args.max_concurrent}, every client on loopback on the same {os.cpu_count()} cores"
        f" ({platform.platform()}); {args.seconds:g} s per row after every client connected."
        f" Lookup: queries/player_activity.sql for a random player; dashboards: {', '.join(DASHBOARDS)}."
        f" PostgreSQL {psql_value('test', 'SHOW server_version').split()[0]} serves the same lookup text from the"
        f" same rows, indexed on (player_id, day); both answered the same for {checked} players with rows (of 20"
        " drawn). CPU: cores' worth of user+system time of the server process and of"
        " the clients (one Python process) per second of the run.",
        f"Command: `~/.cache/gamelake/venv/bin/python benches/crowd.py --scale {args.scale:g}"
        f" --clients {args.clients} --seconds {args.seconds:g}`",
        "",
        "| server, mix, clients | queries/s | lookups/s | lookup p50 ms | lookup p99 ms | dashboard p50 ms"
        " | dashboard p99 ms | refused | errors | server CPU | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['label']} | {r['qps']:,.0f} | {r['lookups/s']:,.0f} | {ms(r['lookup p50'])} |"
                     f" {ms(r['lookup p99'])} | {ms(r['dashboard p50'])} | {ms(r['dashboard p99'])} |"
                     f" {r['refused']:,} | {r['errors']:,} | {r['server cpu']:.2f} | {r['client cpu']:.2f} |")
    # One line per kind of message: retry times differ.
    messages = sorted({re.sub(r"retry in \d+ ms", "retry in N ms", m) for r in rows for m in r["messages"]})
    if messages:
        lines += ["", "Messages seen (first of each kind):", ""] + [f"- `{m}`" for m in messages]
    if args.no_results:
        print("\n".join(lines))
    else:
        write_section(args.results, "A crowd of clients", lines, binary)
    if any(r["errors"] for r in rows):
        sys.exit("some queries failed (not refusals): see the errors column")


def postgres_pid():
    """The PostgreSQL postmaster's pid (the oldest `postgres` process)."""
    return int(subprocess.run(["pgrep", "-o", "-x", "postgres"], capture_output=True, text=True).stdout.split()[0])


if __name__ == "__main__":
    main()
