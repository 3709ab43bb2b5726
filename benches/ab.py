"""A/B of session settings: the same queries under each variant's SET statements, interleaved in
one warm `gamelake bench` session per round, so that the machine's slow and fast minutes fall
on every variant alike.

Each round runs every query once per variant, one after another (variant order reversed every
other round), each `--runs` times; a query's time in a round is its best run, and the report
gives each variant's median over the rounds per query and the sums. A variant is a name and the
SET statements that make it; SET lasts for the rest of the session, so every variant must set
the same settings (checked), the baseline included:

    ~/.cache/gamelake/venv/bin/python benches/ab.py --lake ~/.cache/gamelake/tpch-sf1/lake \\
        --variant "datafusion=SET datafusion.execution.perfect_hash_join_small_build_threshold = 1024" \\
        --variant "gamelake=SET datafusion.execution.perfect_hash_join_small_build_threshold = 8388608"

Queries default to TPC-H's (`benches/tpch/queries`, run `benches/tpch.py` first for the lake);
`--queries DIR` and `--param k=v` run others (the saved game queries on the demo lake). Prints
a table; nothing is written to RESULTS.md (A/B tables there are pasted with this command).
"""

import argparse
import pathlib
import re
import statistics
import sys
import tempfile

from bench_common import ROOT, gamelake_bench, gamelake_binary

SET = re.compile(r"^\s*SET\s+([\w.]+)\s*(?:=|TO)\s*(.+?)\s*;?\s*$", re.IGNORECASE)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", required=True, help="the lake the queries read")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=SET ...; SET ...",
                        help="a variant: its name and the SET statements that make it (give two or more)")
    parser.add_argument("--queries", default=str(ROOT / "benches" / "tpch" / "queries"),
                        help="folder of .sql files (default: TPC-H's 22)")
    parser.add_argument("--only", default="", help="file stems to run, e.g. q05,q18 (default: all)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds; the median of each query's rounds counts")
    parser.add_argument("--runs", type=int, default=3, help="runs per query, variant and round; the best counts")
    parser.add_argument("--threads", type=int, default=2, help="target partitions")
    parser.add_argument("--param", action="append", default=[], help="NAME=VALUE for the queries' $NAME")
    parser.add_argument("--gamelake", help="gamelake binary (default: the release build)")
    args = parser.parse_args()

    variants = dict(parse_variant(v) for v in args.variant)
    if len(variants) < 2:
        sys.exit("give two or more --variant NAME=SET ... with different names")
    check_same_settings(variants)
    stems = [s for s in args.only.split(",") if s]
    queries = sorted(p for p in pathlib.Path(args.queries).glob("*.sql") if not stems or p.stem in stems)
    if not queries:
        sys.exit(f"no .sql files in {args.queries}" + (f" named {args.only}" if stems else ""))

    binary = gamelake_binary(args.gamelake)
    params = [flag for p in args.param for flag in ("--param", p)]
    times = {name: {q.stem: [] for q in queries} for name in variants}
    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(variants)[::-1]
            files = []
            for query in queries:
                for name in order:
                    file = work / f"{name}__{query.stem}.sql"
                    file.write_text(variants[name] + "\n" + query.read_text())
                    files.append(file)
            results, code = gamelake_bench(binary, args.lake, work, files, args.threads, args.runs, params)
            for result in results:
                name, stem = result["query"].split("__", 1)
                if "error" in result:
                    sys.exit(f"{stem} under {name}: {result['error']}")
                times[name][stem].append(result["best"])
            if code != 0:
                sys.exit(f"gamelake bench failed with exit code {code} (its message above)")
            print(f"round {r + 1} of {args.rounds} done", file=sys.stderr, flush=True)

    names = list(variants)
    print("| query | " + " | ".join(f"{n} s" for n in names) + f" | {names[1]} / {names[0]} |")
    print("|---|" + "---:|" * (len(names) + 1))
    medians = {n: {q: statistics.median(t) for q, t in times[n].items()} for n in names}
    for query in queries:
        row = [f"{medians[n][query.stem]:.3f}" for n in names]
        ratio = medians[names[1]][query.stem] / medians[names[0]][query.stem]
        print(f"| {query.stem} | " + " | ".join(row) + f" | {ratio:.2f}x |")
    sums = {n: sum(medians[n].values()) for n in names}
    print("| **sum of medians** | " + " | ".join(f"{sums[n]:.2f}" for n in names)
          + f" | {sums[names[1]] / sums[names[0]]:.2f}x |")
    bests = {n: sum(min(t) for t in times[n].values()) for n in names}
    print("| **sum of bests** | " + " | ".join(f"{bests[n]:.2f}" for n in names)
          + f" | {bests[names[1]] / bests[names[0]]:.2f}x |")


def parse_variant(text):
    """`name=SET a = 1; SET b = 2` as (name, the statements one per line)."""
    name, sep, sets = text.partition("=")
    if not sep or not name.strip() or not re.fullmatch(r"\w+", name.strip()):
        sys.exit(f"--variant {text!r}: expected NAME=SET setting = value; ... (NAME in letters, digits, _)")
    statements = [s.strip() for s in sets.split(";") if s.strip()]
    for s in statements:
        if not SET.match(s):
            sys.exit(f"--variant {name}: {s!r} is not a SET statement")
    return name.strip(), "\n".join(s + ";" for s in statements)


def check_same_settings(variants):
    """Every variant sets the same settings: SET outlives its query in the shared session."""
    settings = {name: sorted(SET.match(s).group(1).lower() for s in text.splitlines())
                for name, text in variants.items()}
    first, *rest = settings.items()
    for name, names in rest:
        if names != first[1]:
            sys.exit(f"variants {first[0]} and {name} set different settings ({first[1]} vs {names}): "
                     "each SET lasts for the rest of the session, so every variant must set all of them")


if __name__ == "__main__":
    main()
