"""Helpers shared by the benchmark scripts: PostgreSQL via psql, timing, the gamelake binary,
and writing one section of benches/RESULTS.md."""

import os
import pathlib
import shutil
import subprocess
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PG = "host=127.0.0.1 port=5432 user=postgres"


def psql(db, sql, out=None):
    subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-c", sql],
                   check=True, stdout=out or subprocess.DEVNULL)


def psql_value(db, sql):
    return subprocess.run(["psql", "-X", "-tA", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def gamelake_binary(explicit=None):
    """The binary to measure: --gamelake, else `gamelake` on PATH, else the release build."""
    return explicit or shutil.which("gamelake") or str(
        pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "gamelake")


def write_section(results, title, lines):
    """Replaces (or appends) the section `## title` of the results file."""
    section = "\n".join([f"## {title}", ""] + lines) + "\n"
    print(section)
    path = pathlib.Path(results)
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    marker = f"## {title}"
    if marker in text:
        before, _, rest = text.partition(marker)
        after = rest[rest.find("\n## "):] if "\n## " in rest else ""
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)
