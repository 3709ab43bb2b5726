"""Recommendations, measured offline: the saved queries of queries/reco/ computed as of a day D on
the demo lake, scored against what players did in the week [D, D+7) that they could not see,
next to a popularity baseline and a random baseline computed by the same engine in the same run.

Items: the players who played in the 30 days before D and bought an item in the week that they did
not own before D. For each, hit rate@10 (a bought item among the first 10 suggested), recall@20
(share of the bought items among the first 20) and NDCG@10; coverage is the share of the catalogue
suggested to anyone. Baselines: the best sellers of the 30 days before D not owned (popularity),
and items not owned in a random order (random).
Friends: the players who played in the 30 days before D and made a friend in the week who was then
a friend of a friend; hit rate@10 and recall@20 of the friend suggestions against the friends of
friends in a random order (random among friends of friends), and mutual friends alone (no
interests).

    ~/.cache/gamelake/venv/bin/python benches/reco_eval.py --scale 10

The lake is the demo at --scale ending on the benchmarks' fixed day (kept in --work for the next
run); the suggestions are written to its reco.* tables.
"""

import argparse
import datetime
import pathlib
import subprocess
import sys
import tempfile

import pyarrow.parquet as pq

from bench_common import DEMO_END, ROOT, demo_lake, gamelake_binary, timed, write_section

RECO = ROOT / "queries" / "reco"
STEPS = ["player_interests", "item_suggestions", "friend_suggestions", "similar_players"]

# What the players did in the held-out week, and the baselines, as of $as_of (a DATE).
ACTIVE = """SELECT DISTINCT player_id FROM game.sessions
    WHERE session_date >= CAST($as_of AS DATE) - INTERVAL '30 days' AND session_date < CAST($as_of AS DATE)"""
OWNED = "SELECT DISTINCT player_id, item_id FROM game.purchases WHERE purchase_date < CAST($as_of AS DATE)"
FRIENDS = "SELECT player_id, friend_id FROM game.friendships WHERE CAST(since + INTERVAL '8 hours' AS DATE) < CAST($as_of AS DATE)"
# The server day (UTC+8) a friendship started on, as the tables' date columns count days.
FRIENDS_SINCE = "CAST(f.since + INTERVAL '8 hours' AS DATE)"
WEEK = "{column} >= CAST($as_of AS DATE) AND {column} < CAST($as_of AS DATE) + INTERVAL '7 days'"
QUERIES = {
    "held_items": f"""WITH active AS ({ACTIVE}), owned AS ({OWNED})
        SELECT DISTINCT p.player_id, p.item_id AS id
        FROM game.purchases p JOIN active a ON a.player_id = p.player_id
        LEFT JOIN owned o ON o.player_id = p.player_id AND o.item_id = p.item_id
        WHERE {WEEK.format(column='p.purchase_date')} AND o.player_id IS NULL""",
    "held_friends": f"""WITH active AS ({ACTIVE}), friends AS ({FRIENDS})
        SELECT f.player_id, f.friend_id AS id
        FROM game.friendships f JOIN active a ON a.player_id = f.player_id
        WHERE {WEEK.format(column=FRIENDS_SINCE)}""",
    "catalogue": "SELECT 0 AS player_id, item_id AS id FROM game.items",
    "items": """SELECT player_id, item_id AS id, rank FROM reco.item_suggestions""",
    "friends": """SELECT player_id, suggested_id AS id, rank FROM reco.friend_suggestions""",
    "items_popular": f"""WITH active AS ({ACTIVE}), owned AS ({OWNED}), sales AS (
            SELECT i.item_id, COUNT(p.item_id) AS sold FROM game.items i
            LEFT JOIN game.purchases p ON p.item_id = i.item_id
                 AND p.purchase_date >= CAST($as_of AS DATE) - INTERVAL '30 days' AND p.purchase_date < CAST($as_of AS DATE)
            GROUP BY i.item_id
        ), ranked AS (
            SELECT a.player_id, s.item_id AS id,
                   ROW_NUMBER() OVER (PARTITION BY a.player_id ORDER BY s.sold DESC, s.item_id) AS rank
            FROM active a CROSS JOIN sales s
            LEFT JOIN owned o ON o.player_id = a.player_id AND o.item_id = s.item_id
            WHERE o.player_id IS NULL
        ) SELECT * FROM ranked WHERE rank <= 20""",
    "items_random": f"""WITH active AS ({ACTIVE}), owned AS ({OWNED}), ranked AS (
            SELECT a.player_id, i.item_id AS id,
                   ROW_NUMBER() OVER (PARTITION BY a.player_id
                       ORDER BY md5(CAST(a.player_id AS VARCHAR) || ':' || CAST(i.item_id AS VARCHAR))) AS rank
            FROM active a CROSS JOIN game.items i
            LEFT JOIN owned o ON o.player_id = a.player_id AND o.item_id = i.item_id
            WHERE o.player_id IS NULL
        ) SELECT * FROM ranked WHERE rank <= 20""",
    # Every friend of a friend the suggestions chose from (the same candidates), in two orders.
    "fof": f"""WITH active AS ({ACTIVE}), friends AS ({FRIENDS}), fof AS (
            SELECT f1.player_id, f2.friend_id AS id, COUNT(*) AS mutual
            FROM friends f1 JOIN active a ON a.player_id = f1.player_id
            JOIN friends f2 ON f2.player_id = f1.friend_id
            JOIN active b ON b.player_id = f2.friend_id
            WHERE f2.friend_id <> f1.player_id
            GROUP BY f1.player_id, f2.friend_id
        ), new_ones AS (
            SELECT fof.* FROM fof LEFT JOIN friends e ON e.player_id = fof.player_id AND e.friend_id = fof.id
            WHERE e.player_id IS NULL
        ) SELECT player_id, id,
                 ROW_NUMBER() OVER (PARTITION BY player_id
                     ORDER BY md5(CAST(player_id AS VARCHAR) || ':' || CAST(id AS VARCHAR))) AS random_rank,
                 ROW_NUMBER() OVER (PARTITION BY player_id ORDER BY mutual DESC, id) AS mutual_rank
          FROM new_ones""",
}


def run_sql(binary, lake, as_of, args, out=None):
    command = [binary, "--lake", str(lake), "sql", "--quiet", "--param", f"as_of={as_of}"] + args
    if out:
        command += ["--format", "parquet", "-o", str(out)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def suggestions(path, rank_column="rank"):
    """player -> ids in rank order, from a parquet file of (player_id, id, <rank_column>)."""
    table = pq.read_table(path).to_pydict()
    ranked = {}
    for player, id_, rank in zip(table["player_id"], table["id"], table[rank_column]):
        ranked.setdefault(player, []).append((rank, id_))
    return {player: [id_ for _, id_ in sorted(pairs)] for player, pairs in ranked.items()}


def held(path):
    table = pq.read_table(path).to_pydict()
    out = {}
    for player, id_ in zip(table["player_id"], table["id"]):
        out.setdefault(player, set()).add(id_)
    return out


def scores(truth, ranked):
    """hit rate@10, recall@20 and NDCG@10 over the players of `truth`, and the ids suggested."""
    import math

    hits = recall = ndcg = 0.0
    for player, wanted in truth.items():
        ids = ranked.get(player, [])
        top10, top20 = ids[:10], ids[:20]
        hits += any(i in wanted for i in top10)
        recall += len(wanted.intersection(top20)) / len(wanted)
        dcg = sum(1 / math.log2(k + 2) for k, i in enumerate(top10) if i in wanted)
        ideal = sum(1 / math.log2(k + 2) for k in range(min(10, len(wanted))))
        ndcg += dcg / ideal
    n = max(1, len(truth))
    suggested = {i for ids in ranked.values() for i in ids[:20]}
    return {"hit@10": hits / n, "recall@20": recall / n, "ndcg@10": ndcg / n, "suggested": suggested}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=10.0, help="demo scale (players = 100,000 x scale)")
    parser.add_argument("--holdout-days", type=int, default=14,
                        help="D is this many days before the demo's last day; the held-out week starts on D")
    parser.add_argument("--work", help="folder for the lake (default ~/.cache/gamelake/demo-<scale>)")
    parser.add_argument("--gamelake", help="gamelake binary (default: the release build)")
    parser.add_argument("--results", default=str(ROOT / "benches" / "RESULTS.md"))
    args = parser.parse_args()
    binary = gamelake_binary(args.gamelake)
    work = pathlib.Path(args.work or pathlib.Path.home() / ".cache" / "gamelake" / f"demo-{args.scale:g}")
    lake, _ = demo_lake(binary, work, args.scale)
    as_of = (datetime.date.fromisoformat(DEMO_END) - datetime.timedelta(days=args.holdout_days - 1)).isoformat()

    step_seconds = {}
    for step in STEPS:
        print(f"{step} as of {as_of} ...", flush=True)
        step_seconds[step] = timed(lambda: run_sql(binary, lake, as_of, ["-f", str(RECO / f"{step}.sql")]))
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, sql in QUERIES.items():
            files[name] = pathlib.Path(tmp) / f"{name}.parquet"
            run_sql(binary, lake, as_of, ["-c", sql], files[name])
        held_items, held_friends = held(files["held_items"]), held(files["held_friends"])
        catalogue = pq.read_table(files["catalogue"]).num_rows or 1
        candidates = {"fof_random": suggestions(files["fof"], "random_rank"),
                      "fof_mutual": suggestions(files["fof"], "mutual_rank")}
        # Players with more friends of friends than are suggested (for fewer, any order shows all)
        # whose new friend was one of them.
        friends = {p: ids for p, ids in held_friends.items()
                   if len(candidates["fof_random"].get(p, [])) > 20
                   and any(i in ids for i in candidates["fof_random"][p])}
        item_rows = [("item_suggestions", scores(held_items, suggestions(files["items"]))),
                     ("popularity baseline", scores(held_items, suggestions(files["items_popular"]))),
                     ("random baseline", scores(held_items, suggestions(files["items_random"])))]
        friend_rows = [("friend_suggestions", scores(friends, suggestions(files["friends"]))),
                       ("mutual friends only", scores(friends, candidates["fof_mutual"])),
                       ("random among friends of friends", scores(friends, candidates["fof_random"]))]

    def table(rows, players, what, base, who):
        lines = [f"{what}: {players} {who}.", "",
                 "| recommender | hit rate@10 | recall@20 | NDCG@10 | coverage | hit rate@10 / " + base + " |",
                 "|---|---:|---:|---:|---:|---:|"]
        reference = dict(rows)[base]["hit@10"]
        for name, s in rows:
            cover = f"{len(s['suggested']) / catalogue:.0%}" if what == "Items" else "-"
            ratio = f"{s['hit@10'] / reference:.2f}x" if reference else "-"
            lines.append(f"| {name} | {s['hit@10']:.3f} | {s['recall@20']:.3f} | {s['ndcg@10']:.3f} | {cover} | {ratio} |")
        return lines

    lines = [f"Demo lake at scale {args.scale:g} (ends {DEMO_END}); suggestions as of {as_of} from the data before it,"
             f" scored against the week {as_of} + 7 days. Command:", "",
             f"    ~/.cache/gamelake/venv/bin/python benches/reco_eval.py --scale {args.scale:g}", ""]
    lines += table(item_rows, len(held_items), "Items", "popularity baseline",
                   "players who played in the 30 days before D and bought an item new to them in the week") + [""]
    lines += table(friend_rows, len(friends), "Friends", "random among friends of friends",
                   "players with more than 20 friends of friends who befriended one of them in the week") + [""]
    total = sum(step_seconds.values())
    lines.append("Time to compute (each step one `gamelake sql -f` run, process start included): "
                 + ", ".join(f"{s} {t:.1f} s" for s, t in step_seconds.items()) + f"; all {total:.1f} s.")
    write_section(args.results, f"Recommendations, scale {args.scale:g}", lines, binary)
    if not held_items or not friends:
        sys.exit("no held-out purchases or friendships: the scale is too small to measure anything")


if __name__ == "__main__":
    main()
