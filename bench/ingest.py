"""Ingest from object storage: registering a prefix in place against today's copy path, in the
same run, against a local S3 server (moto_server in its own process, spoken to over HTTP).

- in place: ``workers.inplace.register_prefix`` (what ``verge submit s3://BUCKET/PREFIX/`` runs):
  list the prefix, record each object by location and ETag, send the scoring tasks. No byte is
  read; the worker that scores an image hashes what it reads anyway.
- copy (baseline): what a user had to do before: fetch every object on the submitting machine
  and submit the bytes (``workers.submission.submit_items``: sha256, a blob written, registered,
  tasks sent) -- the same database, broker and process, on a sample of the same objects.

No worker runs: both paths end once the tasks are on the broker. Objects are small (``--size``),
which flatters the copy path (its cost grows with bytes; registering does not read them).

    python bench/ingest.py                      # 100,000 objects, Redis + Postgres
    python bench/ingest.py --objects 20000 --embedded
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import (  # noqa: E402 (puts the checkout first on sys.path)
    install_sigterm, load, machine, on_exit, port_open, postgres_available, redis_available,
    temp_dir, worker_services,
)

GOAL = 5000  # images/s registered in place on a 2-core machine (issue 11)


def start_s3(log: Path) -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fh = open(log, "w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1",
                             "-p", str(port)], stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)

    def stop_s3():
        proc.terminate()
        proc.wait(timeout=30)
        fh.close()

    on_exit(stop_s3)
    deadline = time.monotonic() + 60
    while not port_open("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"moto_server did not start: {log.read_text()}")
        time.sleep(0.1)
    return f"http://127.0.0.1:{port}"


def fill(client, bucket: str, prefix: str, n: int, size: int, threads: int = 16) -> float:
    """n distinct objects of ``size`` bytes named like photos; returns seconds taken."""
    pad = os.urandom(size)

    def put(i):
        body = i.to_bytes(8, "big") + pad[8:]
        client.put_object(Bucket=bucket, Key=f"{prefix}{i // 1000:03d}/photo {i:06d}.jpg", Body=body)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, range(n), chunksize=256))
    return time.perf_counter() - started


def main() -> None:
    install_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=100_000, help="objects registered in place")
    ap.add_argument("--copy-objects", type=int, default=5_000, help="objects sent the copy way")
    ap.add_argument("--size", type=int, default=2_000, help="bytes per object")
    ap.add_argument("--embedded", action="store_true", help="SQLite + filesystem broker instead of "
                                                            "Postgres + Redis")
    args = ap.parse_args()
    if not args.embedded and not (postgres_available() and redis_available()):
        raise SystemExit("Postgres and Redis are needed (or pass --embedded)")

    import boto3

    data = temp_dir("verge-ingest-")
    endpoint = start_s3(data / "moto.log")
    aws = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(aws)
    env, url, _node, where = worker_services(data / "var", "ingest", args.embedded, {})
    from verge.settings import Settings
    from workers.inplace import register_prefix
    from workers.submission import submit_items

    settings = Settings.from_env({k: str(v) for k, v in env.items() if k.startswith("VERGE_")})
    client = boto3.client("s3")
    bucket = "verge-bench-ingest"
    client.create_bucket(Bucket=bucket)
    print(f"machine: {machine()}; {where}; load {load()}")
    took = fill(client, bucket, "all/", args.objects, args.size)
    print(f"filled s3://{bucket}/all/ with {args.objects:,} objects of {args.size:,} B in {took:.1f} s")
    fill(client, bucket, "copy/", args.copy_objects, args.size)

    # the copy path: every object fetched by the submitter, hashed, written to the blob store
    def fetch(key):
        return lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read()

    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="copy/")
            for o in page.get("Contents", ())]
    started = time.perf_counter()
    copied = submit_items(settings, ((f"s3://{bucket}/{k}", fetch(k)) for k in keys), "bench-copy")
    copy_s = time.perf_counter() - started
    copy_rate = copied.submitted / copy_s

    started = time.perf_counter()
    reg = register_prefix(settings, f"s3://{bucket}/all/", "bench-in-place")
    reg_s = time.perf_counter() - started
    reg_rate = reg.submitted / reg_s
    assert reg.submitted == reg.new == args.objects and reg.chunks, reg.as_dict()

    print(f"copy path      : {copied.submitted:>7,} objects in {copy_s:6.1f} s = {copy_rate:8,.0f} img/s "
          f"(fetched, hashed, stored, registered, {copied.chunks} tasks)")
    print(f"register in place: {reg.submitted:>7,} objects in {reg_s:6.1f} s = {reg_rate:8,.0f} img/s "
          f"(listed, registered, {reg.chunks} tasks; no byte read)")
    print(f"ratio in place / copy: {reg_rate / copy_rate:.1f}x; goal {GOAL:,} img/s: "
          f"{'met' if reg_rate >= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
