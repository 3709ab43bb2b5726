"""Replication between two loopback S3 servers: `gamelake replicate` against plain parallel
object copies of the same files (rclone, boto3), and the lag of `replicate --follow` under appends
every second, in one run.

  1. two moto S3 servers on free loopback ports (two "regions"), a bucket each;
  2. the demo lake at --scale written into the first (`gamelake demo` straight to S3);
  3. plain parallel object copies of every object of the lake to the second server, in no
     order, timed: `rclone copy` with --parallel transfers (Debian's rclone), and --parallel
     boto3 threads (GET then PUT);
  4. `gamelake replicate --parallel N` of the same lake into another prefix of the second server,
     timed, then checked: `lake verify` of the replica passes and each table's row count
     equals the source's;
  5. lag: an append (one INSERT, one commit) every second for --seconds while `gamelake
     replicate --follow --interval 200ms` runs; each round prints the longest wait of the
     versions it copied (commit in the source to commit in the replica); p50/p99 over them.
Writes the table to benches/RESULTS.md (section "Replication between regions").

Usage (from the repository root, after `cargo build --release` and `bash .ci/run` made the venv):
  ~/.cache/gamelake/venv/bin/python benches/replicate.py --scale 1
A tiny run (`--scale 0.02 --seconds 3`, results to a temporary file) is a test.
"""

import argparse
import concurrent.futures
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

import boto3

from bench_common import DEMO_END, ROOT, free_port, gamelake_binary, percentile, write_section

KEYS = dict(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")


class Moto:
    """A moto S3 server on a free loopback port with one bucket; stopped by `stop`."""

    def __init__(self, bucket):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = bucket
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                         "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit(f"moto did not start on {self.endpoint}")
                time.sleep(0.1)
        self.client().create_bucket(Bucket=bucket)

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, **KEYS)

    def env(self):
        return dict(os.environ, AWS_ENDPOINT_URL=self.endpoint, AWS_REGION="us-east-1",
                    AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_ALLOW_HTTP="true")

    def stop(self):
        self.process.kill()
        self.process.wait()


def plain_copy(source, target, prefix, target_prefix, threads):
    """Every object under `prefix` copied by `threads` threads; answers (objects, bytes)."""
    src, dst = source.client(), target.client()
    keys = [(o["Key"], o["Size"]) for page in src.get_paginator("list_objects_v2").paginate(
        Bucket=source.bucket, Prefix=prefix) for o in page.get("Contents", [])]

    def copy(item):
        key, _ = item
        body = src.get_object(Bucket=source.bucket, Key=key)["Body"].read()
        dst.put_object(Bucket=target.bucket, Key=target_prefix + key[len(prefix):], Body=body)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(copy, keys))
    return len(keys), sum(size for _, size in keys)


def rclone_copy(source, target, prefix, target_prefix, threads):
    """`rclone copy` of every object under `prefix` (Go, `threads` transfers at once): a plain
    parallel object copy by a tool built for it."""
    def remote(moto, path):
        return (f":s3,provider=Other,endpoint='{moto.endpoint}',access_key_id=test,"
                f"secret_access_key=test,region=us-east-1:{moto.bucket}/{path}")
    # A CA bundle in the environment (for a proxy) makes rclone's S3 client refuse its own
    # transport; loopback http needs none.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    subprocess.run(["rclone", "copy", remote(source, prefix), remote(target, target_prefix),
                    "--transfers", str(threads), "--checkers", str(threads), "--s3-no-check-bucket"],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def counts(binary, lake, env, tables):
    """Row count of each table, one `gamelake sql` statement."""
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t}" for t in tables)
    out = subprocess.run([binary, "--lake", lake, "sql", "--format", "csv", "-c", sql + " ORDER BY t"],
                         env=env, check=True, capture_output=True, text=True).stdout
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="demo scale of the lake copied")
    ap.add_argument("--parallel", type=int, default=16, help="files copied at once, by both paths")
    ap.add_argument("--seconds", type=int, default=60, help="seconds of appends in the lag phase")
    ap.add_argument("--gamelake", default=None, help="binary (default: the release build)")
    ap.add_argument("--results", default=str(ROOT / "benches" / "RESULTS.md"))
    args = ap.parse_args()
    binary = gamelake_binary(args.gamelake)
    bj, sh = Moto("bj-lake"), Moto("sh-lake")
    try:
        source = "s3://bj-lake/lake"
        env = bj.env()
        print(f"demo at scale {args.scale:g} into {source} ...", flush=True)
        subprocess.run([binary, "--lake", source, "demo", "--scale", str(args.scale), "--end", DEMO_END,
                        "--no-queries"], env=env, check=True, stdout=subprocess.DEVNULL)
        verified = subprocess.run([binary, "--lake", source, "lake", "verify"], env=env, check=True,
                                  capture_output=True, text=True).stdout
        tables = re.findall(r"^(\S+): versions", verified, re.MULTILINE)

        start = time.perf_counter()
        objects, size = plain_copy(bj, sh, "lake/", "plain/", args.parallel)
        plain_seconds = time.perf_counter() - start
        start = time.perf_counter()
        rclone_copy(bj, sh, "lake", "rclone", args.parallel)
        rclone_seconds = time.perf_counter() - start

        to_sh = ["--to", "s3://sh-lake/replica", "--to-option", f"AWS_ENDPOINT_URL={sh.endpoint}"]
        replicate = [binary, "--lake", source, "replicate", "--parallel", str(args.parallel)] + to_sh
        start = time.perf_counter()
        subprocess.run(replicate, env=env, check=True, stdout=subprocess.DEVNULL)
        replicate_seconds = time.perf_counter() - start
        replica_env = sh.env()
        subprocess.run([binary, "--lake", "s3://sh-lake/replica", "lake", "verify"], env=replica_env,
                       check=True, stdout=subprocess.DEVNULL)
        expected, got = counts(binary, source, env, tables), counts(binary, "s3://sh-lake/replica",
                                                                    replica_env, tables)
        if expected != got:
            raise SystemExit(f"the replica differs from the source:\n{expected}\n{got}")

        # Lag: one commit a second on the source while --follow runs.
        follow = subprocess.Popen(replicate + ["--follow", "--interval", "200ms", "--tables", "bench.*"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        sql = [binary, "--lake", source, "sql", "-c"]
        subprocess.run(sql + ["CREATE TABLE bench.appends AS SELECT 0 AS n"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        for n in range(1, args.seconds + 1):
            began = time.time()
            subprocess.run(sql + [f"INSERT INTO bench.appends VALUES ({n})"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            time.sleep(max(0.0, 1.0 - (time.time() - began)))
        time.sleep(2)
        follow.send_signal(signal.SIGTERM)
        printed, _ = follow.communicate(timeout=60)
        lags = [int(m.group(1)) / 1000 for m in re.finditer(r"lag (\d+) ms", printed)]
        copied = sum(int(m.group(1)) for m in re.finditer(r"(\d+) versions copied", printed))
        versions = int(subprocess.run(sql + ['SELECT max(version) + 1 AS n FROM bench."appends$history"',
                                             "--format", "csv"], env=env, check=True, capture_output=True,
                                      text=True).stdout.splitlines()[1])
        if copied != versions:
            raise SystemExit(f"--follow copied {copied} versions, the source has {versions}:\n{printed}")
    finally:
        bj.stop()
        sh.stop()

    mb = size / 1e6
    lines = [
        f"Demo lake at scale {args.scale:g}: {len(tables)} tables, {objects:,} objects, {mb:,.1f} MB, "
        f"from one loopback moto S3 server to another, {args.parallel} files at once.",
        "",
        f"Command: `~/.cache/gamelake/venv/bin/python benches/replicate.py --scale {args.scale:g} "
        f"--seconds {args.seconds}`",
        "",
        "| Path | Seconds | MB/s | vs rclone |",
        "|---|---:|---:|---:|",
        f"| `rclone copy` (plain parallel object copy, no order) | {rclone_seconds:.2f} | "
        f"{mb / rclone_seconds:,.1f} | 1.00× |",
        f"| boto3 threads, GET then PUT (plain parallel object copy, no order) | {plain_seconds:.2f} | "
        f"{mb / plain_seconds:,.1f} | {rclone_seconds / plain_seconds:.2f}× |",
        f"| gamelake replicate (versions in order, files before each commit) | {replicate_seconds:.2f} | "
        f"{mb / replicate_seconds:,.1f} | {rclone_seconds / replicate_seconds:.2f}× |",
        "",
        f"The replica passed `lake verify` and each table's row count equals the source's. "
        f"Lag with one append a second for {args.seconds} s and `--follow --interval 200ms` "
        f"({len(lags)} rounds; commit in the source to commit in the replica): "
        f"p50 {statistics.median(lags):.2f} s, p99 {percentile(lags, 0.99):.2f} s, max {max(lags):.2f} s.",
    ]
    write_section(args.results, "Replication between regions", lines, binary)


if __name__ == "__main__":
    main()
