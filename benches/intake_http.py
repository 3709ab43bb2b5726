"""Log intake throughput: events per second committed durably by `gamelake serve --http`, with
several concurrent senders on loopback, and the file path against DuckDB, in one run.

1. HTTP intake: S senders (threads, keep-alive connections) POST NDJSON batches of B events
   (~300 bytes each) to `gamelake serve --http` for D seconds, retrying on 503 like a shipper.
   Reported: acknowledged events/s (durable: fsynced in the write-ahead log) over the sending
   window, and committed events/s: all acknowledged events over the time until the last one is
   in the Delta table (SIGTERM commits the rest; the count is checked in the table).
2. Files: the same events as one NDJSON file, loaded by `gamelake ingest` (a files pipeline: the
   intake's record path, event time and day partition, rejected rows) and by DuckDB (`read_json` -> Parquet), best of 3 each.
Writes the section "Log intake" of benches/RESULTS.md.

Usage (from the repository root, after `cargo build --release` and `bash .ci/run` made the venv):
  ~/.cache/gamelake/venv/bin/python benches/intake_http.py --seconds 20
"""

import argparse
import http.client
import json
import os
import platform
import random
import subprocess
import tempfile
import threading
import time

from bench_common import gamelake_binary, timed, write_section

TOKEN = "bench-token-0123456789abcdef"
EVENTS = ["login", "logout", "match_start", "match_end", "purchase", "chat", "level_up"]
MAPS = ["desert", "forest", "harbor", "canyon", "tundra"]


def event(rng, i):
    """One ~300-byte game-server event."""
    return json.dumps({
        "time": f"2026-11-25T{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(1000):03d}+08:00",
        "player_id": rng.randrange(1_000_000),
        "event": rng.choice(EVENTS),
        "server": f"bj-{rng.randrange(64):02d}",
        "map": rng.choice(MAPS),
        "level": rng.randrange(1, 80),
        "latency_ms": round(rng.random() * 120, 2),
        "session": f"{rng.getrandbits(64):016x}",
        "client": "android 14 / build 2.0.417",
        "message": "x" * rng.randrange(40, 80),
        "seq": i,
    }, separators=(",", ":"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="how long the senders send")
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2000, help="events per request")
    ap.add_argument("--file-events", type=int, default=1_000_000, help="events in the file comparison")
    ap.add_argument("--gamelake", default=None, help="binary (default: the release build)")
    ap.add_argument("--results", default=None, help="results file (default: benches/RESULTS.md)")
    args = ap.parse_args()
    binary = gamelake_binary(args.gamelake)
    results_file = args.results or os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")

    rng = random.Random(42)
    bodies = []
    for b in range(64):
        lines = [event(rng, b * args.batch + i) for i in range(args.batch)]
        bodies.append(("\n".join(lines) + "\n").encode())
    event_bytes = sum(len(b) for b in bodies) / (64 * args.batch)

    work = tempfile.mkdtemp()
    lake = os.path.join(work, "lake")
    os.makedirs(lake)
    config = os.path.join(work, "gamelake.toml")
    with open(config, "w") as f:
        f.write(f"""[intake]
commit_interval = "1s"
[[intake.tokens]]
name = "bench"
token = "{TOKEN}"
[[intake.tables]]
name = "logs.bench"
time_field = "time"
timezone = "+08:00"
columns = {{ player_id = "bigint", event = "text", level = "bigint", latency_ms = "double" }}
""")
    server = subprocess.Popen([binary, "--lake", lake, "--config", config, "serve", "--http", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        host, port = line.split("http://")[1].split("/")[0].rsplit(":", 1)
        acked = [0] * args.senders
        stop = threading.Event()

        def sender(k):
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"}
            n = k
            while not stop.is_set():
                body = bodies[n % len(bodies)]
                while True:
                    conn.request("POST", "/ingest/logs.bench", body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    if response.status == 200:
                        break
                    if response.status != 503:
                        raise RuntimeError(f"unexpected status {response.status}")
                    time.sleep(float(response.getheader("Retry-After", "1")))
                acked[k] += args.batch
                n += args.senders

        print(f"sending for {args.seconds:.0f} s with {args.senders} senders, {args.batch} events "
              f"of ~{event_bytes:.0f} bytes per request ...", flush=True)
        threads = [threading.Thread(target=sender, args=(k,)) for k in range(args.senders)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join()
        sent_for = time.perf_counter() - started
        server.terminate()  # commits everything acknowledged, then exits
        server.wait()
        committed_after = time.perf_counter() - started
        server = None
        total = sum(acked)
        count = subprocess.run([binary, "--lake", lake, "sql", "--format", "csv", "-q", "-c",
                                "SELECT count(*) AS n FROM logs.bench"],
                               check=True, capture_output=True, text=True).stdout.split()[-1]
        assert int(count) == total, (count, total)

        # The file path: the same kind of events in one NDJSON file.
        ndjson = os.path.join(work, "events.ndjson")
        with open(ndjson, "wb") as f:
            written = 0
            while written < args.file_events:
                f.write(bodies[(written // args.batch) % len(bodies)])
                written += args.batch
        file_events = written

        pipeline = os.path.join(work, "files.toml")
        with open(pipeline, "w") as f:
            f.write(f"""name = "bench-files"
[source]
kind = "files"
path = "{ndjson}"
[[table]]
to = "logs.from_file"
mode = "append"
time_field = "time"
timezone = "+08:00"
columns = {{ player_id = "bigint", event = "text", level = "bigint", latency_ms = "double" }}
""")

        runs = iter(range(100))

        def gamelake_file():
            # Each run into a new lake: the pipeline takes a file only once.
            subprocess.run([binary, "--lake", os.path.join(work, f"file-lake-{next(runs)}"), "ingest", pipeline],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def duckdb_file():
            import duckdb
            con = duckdb.connect()
            con.execute("SET threads = 2")
            con.execute(f"COPY (SELECT * FROM read_json('{ndjson}')) TO '{work}/duck.parquet' (FORMAT parquet)")
            con.close()

        file_results = {
            "gamelake ingest (files pipeline, intake record path) -> Delta": min(timed(gamelake_file) for _ in range(3)),
            "DuckDB read_json -> Parquet": min(timed(duckdb_file) for _ in range(3)),
        }
    finally:
        if server is not None:
            server.kill()
        subprocess.run(["rm", "-rf", work], check=False)

    lines = [
        f"{args.senders} senders on loopback, {args.batch} events of ~{event_bytes:.0f} bytes per request (NDJSON, "
        f"plain), {os.cpu_count()} cores shared by senders and server, {platform.platform()}.",
        f"Command: `~/.cache/gamelake/venv/bin/python benches/intake_http.py --seconds {args.seconds:.0f}`",
        "",
        "| path | events | seconds | events/s |",
        "|---|---:|---:|---:|",
        f"| HTTP intake, acknowledged (fsynced in the write-ahead log) | {total:,} | {sent_for:.1f} | {total / sent_for:,.0f} |",
        f"| HTTP intake, committed to Delta (until the last one is in the table) | {total:,} | {committed_after:.1f} | {total / committed_after:,.0f} |",
    ]
    duck = file_results["DuckDB read_json -> Parquet"]
    for name, secs in file_results.items():
        lines.append(f"| file, {name} (best of 3) | {file_events:,} | {secs:.1f} | {file_events / secs:,.0f} |")
    lines.append("")
    lines.append(f"Target: 200,000 events/s committed. Files: gamelake takes {file_results[next(iter(file_results))] / duck:.2f}x DuckDB's time.")
    write_section(results_file, "Log intake", lines, binary)


if __name__ == "__main__":
    main()
