"""Helpers shared by the benchmark scripts: PostgreSQL via psql, timing, the gamelake binary,
the demo lake, answers compared across engines, and writing one section of benches/RESULTS.md."""

import datetime
import decimal
import importlib
import json
import math
import os
import pathlib
import platform
import shutil
import socket
import subprocess
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PG = "host=127.0.0.1 port=5432 user=postgres"


def psql(db, sql, out=None):
    subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-c", sql],
                   check=True, stdout=out or subprocess.DEVNULL)


def tear_down(server, db, folder):
    """Stops a benchmark's `gamelake serve` (if it started), drops its PostgreSQL database and
    removes its folder."""
    if server is not None:
        server.terminate()
        server.wait()
    psql("test", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    shutil.rmtree(folder, ignore_errors=True)


def psql_value(db, sql):
    return subprocess.run(["psql", "-X", "-tA", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def percentile(values, q):
    """The q-quantile (0..1) of values, nearest rank: one definition for every bench's p99."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def free_port():
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def gamelake_binary(explicit=None):
    """The binary to measure: --gamelake, else `gamelake` on PATH, else the release build."""
    return explicit or shutil.which("gamelake") or str(
        pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "gamelake")


def gamelake_version(binary):
    """`gamelake --version` of the measured binary."""
    return subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip() or "?"


# The demo's last day in every benchmark, so the saved queries' fixed windows (`since`, the
# history queries' weeks) find the same rows whatever the day of the run.
DEMO_END = "2026-10-31"


def demo_lake(binary, work, scale):
    """The demo lake at `scale` in `work/lake`, generated once per folder (a `done` marker keeps
    it for the next run). Answers the lake and the seconds generating took (0 when kept)."""
    lake = work / "lake"
    if (work / "done").exists():
        return lake, 0.0
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"demo at scale {scale:g} ...", flush=True)
    seconds = timed(lambda: subprocess.run([binary, "--lake", str(lake), "demo", "--scale", str(scale),
                                            "--end", DEMO_END, "--no-queries"],
                                           check=True, stdout=subprocess.DEVNULL))
    (work / "done").write_text("")
    return lake, seconds


def saved_query_params(binary, lake):
    """Values for the saved queries' parameters on a demo lake: `$player_id` the player with the
    most purchases, `$since` the first day of the demo's last month."""
    player = subprocess.run([binary, "--lake", str(lake), "sql", "--format", "csv", "-c",
                             "SELECT player_id FROM game.purchases GROUP BY player_id ORDER BY count(*) DESC,"
                             " player_id LIMIT 1"], check=True, stdout=subprocess.PIPE, text=True).stdout.splitlines()[1]
    return {"player_id": player, "since": "2026-10-01"}


def gamelake_bench(binary, lake, work, files, threads, runs, flags=(), out=None):
    """`gamelake bench` of `files` over `lake` in one warm session with `threads` target
    partitions (a config file written to `work`), each file `runs` times, each answer written to
    `out`/<stem>.parquet when given; `flags` go before the files (`--param`). Answers its JSON
    lines, one per file ({"query", "best", ...}, or {"query", "error"}), and its exit code."""
    config = pathlib.Path(work) / "gamelake.toml"
    config.write_text(f"[query]\ntarget_partitions = {threads}\n")
    command = [binary, "--lake", str(lake), "--config", str(config), "bench", "--runs", str(runs)]
    command += ["--out", str(out)] if out else []
    done = subprocess.run(command + list(flags) + [str(f) for f in files], stdout=subprocess.PIPE, text=True)
    return [json.loads(line) for line in done.stdout.splitlines()], done.returncode


def param_flags(params):
    """`--param NAME=VALUE` flags for gamelake."""
    return [flag for name, value in params.items() for flag in ("--param", f"{name}={value}")]


def duckdb_with_delta():
    """A DuckDB connection with the delta extension of the duckdb-extension-delta pip package."""
    import duckdb

    con = duckdb.connect()
    pkg = importlib.import_module("duckdb_extension_delta")
    ext = next(pathlib.Path(pkg.__file__).parent.rglob("delta.duckdb_extension"))
    con.execute(f"LOAD '{ext}'")
    return con


def comparable_rows(table):
    """An Arrow result as sorted tuples of comparable values: numbers as floats, dates and times
    as ISO text (times with a zone in UTC, without it), so engines' types need not match."""
    def value(v):
        if isinstance(v, (decimal.Decimal, float, int)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, datetime.datetime) and v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        if isinstance(v, (datetime.date, datetime.datetime)):
            return v.isoformat()
        return v
    out = [tuple(value(v) for v in row.values()) for row in table.to_pylist()]
    return sorted(out, key=lambda r: tuple((x is None, round(x, 2) if isinstance(x, float) else str(x)) for x in r))


def same_rows(a, b, abs_tol=1e-6):
    """Whether two [`comparable_rows`] answers are equal, numbers within `abs_tol` (or 1e-9
    relative); a missing answer (None) is never equal."""
    if a is None or b is None or len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if len(x) != len(y):
            return False
        for u, v in zip(x, y):
            if isinstance(u, float) and isinstance(v, float):
                if not math.isclose(u, v, rel_tol=1e-9, abs_tol=abs_tol):
                    return False
            elif u != v:
                return False
    return True


def provenance(binary):
    """When, at which commit, on which machine and with which binary a table was measured: the
    line every section ends with (a commit with changes not yet committed says `+changes`)."""
    def git(*command):
        done = subprocess.run(["git", "-C", str(ROOT), *command], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no", "--", "src", "Cargo.toml", "Cargo.lock"):
        commit += "+changes"
    date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    machine = f"{platform.platform()}, {os.cpu_count()} cores"
    return f"Measured {date} at commit {commit} on {machine}; binary `{binary}` ({gamelake_version(binary)})."


def write_section(results, title, lines, binary):
    """Replaces (or appends) the section `## title` of the results file, ending it with the
    measurement's provenance."""
    section = "\n".join([f"## {title}", ""] + lines + ["", provenance(binary)]) + "\n"
    print(section)
    path = pathlib.Path(results)
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    marker = f"## {title}\n"  # the whole heading line: "## TPC-H SF1" is not "## TPC-H SF1, lz4 tables"
    if marker in text:
        before, _, rest = text.partition(marker)
        after = rest[rest.find("\n## "):] if "\n## " in rest else ""
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


def duckdb_extension(package, name):
    """The file of a DuckDB extension shipped as a Python package (e.g. duckdb_extension_mysql)."""
    pkg = importlib.import_module(package)
    return next(pathlib.Path(pkg.__file__).parent.rglob(f"{name}.duckdb_extension"))


def ingest_table(title_rows, results, sizes, ratio):
    """Markdown rows `| path | seconds | rows/s | <ratio> | MB written |` of an ingest benchmark."""
    lines = []
    for name, secs in results.items():
        written = f"{sizes[name] / 1e6:,.0f}" if name in sizes else ""
        lines.append(f"| {name.strip()} | {secs:.2f} | {title_rows / secs:,.0f} | {ratio(secs)} | {written} |")
    return lines

