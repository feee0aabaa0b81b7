"""Ingest from object storage: registering a prefix in place against today's copy path, in the
same run, against a local S3 server (moto_server in its own process, spoken to over HTTP).

Three figures: the copy path; ``verge submit s3://...`` end to end against the server (its pace
is the server's listing: moto_server lists a few hundred keys a second on a busy 2-core machine,
MinIO or S3 thousands); and verge's own side at ``--scale`` objects, the same registration code
fed the server's listing replayed under distinct keys (filling moto with 100k objects would
take longer than the rest of the run).

- in place: ``workers.inplace.register_prefix`` (what ``verge submit s3://BUCKET/PREFIX/`` runs):
  list the prefix, record each object by location and ETag, send the scoring tasks. No byte is
  read; the worker that scores an image hashes what it reads anyway.
- copy (baseline): what a user had to do before: fetch every object on the submitting machine
  and submit the bytes (``workers.submission.submit_items``: sha256, a blob written, registered,
  tasks sent) -- the same database, broker and process, on a sample of the same objects.

No worker runs: both paths end once the tasks are on the broker. Objects are small (``--size``),
which flatters the copy path (its cost grows with bytes; registering does not read them).

    python bench/ingest.py                      # 5,000 objects e2e, 100,000 at scale, Redis + Postgres
    python bench/ingest.py --objects 2000 --scale 20000 --embedded
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

from _common import (  # noqa: E402 (puts the checkout first on sys.path)
    install_sigterm, load, machine, postgres_available, redis_available, s3_server, temp_dir,
    worker_services,
)

GOAL = 5000  # images/s registered in place on a 2-core machine (issue 11)


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
    ap.add_argument("--objects", type=int, default=5_000,
                    help="objects put in the S3 server and registered from it end to end")
    ap.add_argument("--scale", type=int, default=100_000,
                    help="objects registered from a listing of that many (the server's listing "
                         "replayed under distinct keys): verge's own cost at scale")
    ap.add_argument("--copy-objects", type=int, default=1_000, help="objects sent the copy way")
    ap.add_argument("--size", type=int, default=2_000, help="bytes per object")
    ap.add_argument("--embedded", action="store_true", help="SQLite + filesystem broker instead of "
                                                            "Postgres + Redis")
    args = ap.parse_args()
    if not args.embedded and not (postgres_available() and redis_available()):
        raise SystemExit("Postgres and Redis are needed (or pass --embedded)")

    import boto3

    data = temp_dir("verge-ingest-")
    os.environ.update(s3_server(data / "moto.log").env)
    env, url, _node, where = worker_services(data / "var", "ingest", args.embedded, {})
    from store.s3 import Listed, list_objects
    from verge.settings import Settings
    from workers.inplace import GROUP as GROUP_IN_PLACE
    from workers.inplace import register_pages, register_prefix
    from workers.submission import submit_items

    settings = Settings.from_env({k: str(v) for k, v in env.items() if k.startswith("VERGE_")})
    client = boto3.client("s3")
    bucket = "verge-bench-ingest"
    client.create_bucket(Bucket=bucket)
    print(f"machine: {machine()}; {where}; load {load()}")
    took = fill(client, bucket, "all/", args.objects, args.size)
    print(f"filled s3://{bucket}/all/ with {args.objects:,} objects of {args.size:,} B in {took:.1f} s "
          f"({args.objects / took:,.0f} PUT/s)")
    fill(client, bucket, "copy/", args.copy_objects, args.size)

    started = time.perf_counter()
    listed = list(list_objects(bucket, "all/"))
    list_s = time.perf_counter() - started

    # 1. the copy path: every object fetched by the submitter, hashed, written to the blob store
    def fetch(key):
        return lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read()

    keys = [o.key for o in list_objects(bucket, "copy/")]
    started = time.perf_counter()
    copied = submit_items(settings, ((f"s3://{bucket}/{k}", fetch(k)) for k in keys), "bench-copy")
    copy_s = time.perf_counter() - started
    copy_rate = copied.submitted / copy_s

    # 2. end to end from the server: `verge submit s3://bucket/all/` (listing overlaps registering)
    started = time.perf_counter()
    reg = register_prefix(settings, f"s3://{bucket}/all/", "bench-in-place")
    reg_s = time.perf_counter() - started
    assert reg.submitted == reg.new == args.objects and reg.chunks, reg.as_dict()

    # 3. verge's side at scale: the same registration code fed the server's listing, replayed
    # under distinct keys up to --scale objects, in the pages register_prefix uses
    def replayed():
        page, n, rnd = [], 0, 0
        while n < args.scale:
            for o in listed:
                if n == args.scale:
                    break
                page.append(Listed(f"r{rnd}/{o.key}", o.size, o.etag))
                n += 1
                if len(page) == GROUP_IN_PLACE:
                    yield page
                    page = []
            rnd += 1
        if page:
            yield page

    started = time.perf_counter()
    scaled = register_pages(settings, bucket, replayed(), "bench-in-place-scale")
    scale_s = time.perf_counter() - started
    assert scaled.submitted == scaled.new == args.scale

    print(f"listing alone  : {len(listed):>8,} objects in {list_s:6.1f} s = {len(listed) / list_s:8,.0f} obj/s "
          f"(the S3 server's pace; moto_server here)")
    print(f"copy path      : {copied.submitted:>8,} objects in {copy_s:6.1f} s = {copy_rate:8,.0f} img/s "
          f"(fetched, hashed, stored, registered, {copied.chunks} tasks)")
    print(f"in place, e2e  : {reg.submitted:>8,} objects in {reg_s:6.1f} s = {reg.submitted / reg_s:8,.0f} img/s "
          f"(listed + registered + {reg.chunks} tasks; no byte read)")
    print(f"in place, verge: {scaled.submitted:>8,} objects in {scale_s:6.1f} s = {scaled.submitted / scale_s:8,.0f} img/s "
          f"(registered + {scaled.chunks} tasks from a listing)")
    print(f"ratio in place / copy: end to end {reg.submitted / reg_s / copy_rate:.1f}x, "
          f"verge's side {scaled.submitted / scale_s / copy_rate:.1f}x; goal {GOAL:,} img/s registered: "
          f"{'met' if scaled.submitted / scale_s >= GOAL else 'NOT met'} (verge's side), "
          f"{'met' if reg.submitted / reg_s >= GOAL else 'NOT met'} (end to end against this server)")


if __name__ == "__main__":
    main()
