"""What a worker host that dies whole costs, per broker, with default settings.

Two real ``verge worker`` processes (own data dirs) on a throwaway Postgres database and the
broker under test; a batch is submitted; worker A is SIGKILLed -- its process group, parent and
pool children, no goodbye -- at a moment it holds a chunk that worker B has not been handed.
Measured: seconds from the kill until B receives that chunk, and until the batch is done.
Redis hands it over once VERGE_VISIBILITY_TIMEOUT has passed (default 60 s; it was 3600 s);
RabbitMQ as soon as A's connection drops.

    python bench/redelivery.py                     # redis and rabbitmq, 200 images, chunks of 10
    python bench/redelivery.py --brokers rabbitmq
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import time
import uuid

from _common import (  # noqa: E402 (puts the checkout first on sys.path)
    Worker, batch_done, bench_env, install_sigterm, load, machine, on_exit, port_open,
    postgres_available, private_queue, redis_url, temp_dir, throwaway_database, verge,
)

AMQP = os.environ.get("VERGE_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
OLD_TIMEOUT = 3600
RECEIVED = re.compile(r"Task verge\.score_chunk\[([0-9a-f-]+)\] received")
FINISHED = re.compile(r"Task verge\.score_chunk\[([0-9a-f-]+)\] (?:succeeded|failed|retry)")


def images(folder, n: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(11)
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
        (folder / f"img-{i:04d}.jpg").write_bytes(buf.getvalue())


def amqp_queue(tag: str) -> str:
    from kombu import Connection

    queue = f"verge-bench-{tag}-{uuid.uuid4().hex[:8]}"

    def delete_queue():
        with Connection(AMQP) as conn:
            conn.default_channel.queue_delete(queue)
            conn.default_channel.exchange_delete(queue)

    on_exit(delete_queue)
    return queue


def run(broker: str, n: int, chunk: int) -> dict:
    data = temp_dir(f"verge-redelivery-{broker}-")
    url = throwaway_database(f"redeliver_{broker}")
    if broker == "redis":
        broker_url = redis_url()
        queue, _ = private_queue(broker_url, "redeliver")
    else:
        broker_url, queue = AMQP, amqp_queue("redeliver")
    common = {"VERGE_DATABASE_URL": url, "VERGE_BROKER_URL": broker_url, "VERGE_QUEUE": queue,
              "VERGE_ENCODER": "verge-tiny", "VERGE_PRETRAINED": "none", "VERGE_CHUNK_SIZE": chunk,
              "VERGE_BLOB_URL": data / "blobs", "PYTHONUNBUFFERED": 1}
    env = {host: bench_env({**common, "VERGE_DATA_DIR": data / host}) for host in ("a", "b", "submit")}
    verge(env["submit"], "db", "upgrade")
    images(data / "in", n)
    a = Worker(env["a"], data / "a.log", f"bench-a-{uuid.uuid4().hex[:6]}@host-a")
    b = Worker(env["b"], data / "b.log", f"bench-b-{uuid.uuid4().hex[:6]}@host-b")
    batch = f"redeliver-{broker}"
    json.loads(verge(env["submit"], "submit", str(data / "in"), "--batch", batch, "--json").stdout)

    def held_by_a_only():
        text_a, text_b = a.log.read_text(errors="replace"), b.log.read_text(errors="replace")
        done = set(FINISHED.findall(text_a)) | set(RECEIVED.findall(text_b))
        return [t for t in RECEIVED.findall(text_a) if t not in done]

    deadline = time.monotonic() + 300
    while not held_by_a_only():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: worker A never held a chunk alone:\n{a.tail()}")
        time.sleep(0.02)
    os.killpg(a.proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    a.proc.wait()
    held = held_by_a_only()
    redelivered = done_after = None
    while redelivered is None or done_after is None:
        if redelivered is None and set(held) <= set(RECEIVED.findall(b.log.read_text(errors="replace"))):
            redelivered = time.monotonic() - killed
        finished, total = batch_done(url, batch)
        if done_after is None and finished == total:
            done_after = time.monotonic() - killed
        if time.monotonic() - killed > 900:
            raise SystemExit(f"bench: {broker}: not done 900 s after the kill:\n{b.tail()}")
        time.sleep(0.1)
    b.stop()
    return {"broker": broker, "held": len(held), "redelivered_s": redelivered, "done_s": done_after}


def main() -> None:
    install_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brokers", default="redis,rabbitmq")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--chunk", type=int, default=10)
    args = ap.parse_args()
    if not postgres_available():
        raise SystemExit("Postgres is needed")
    brokers = args.brokers.split(",")
    if "rabbitmq" in brokers and not port_open("127.0.0.1", 5672):
        raise SystemExit("RabbitMQ is needed at 127.0.0.1:5672 (or --brokers redis)")
    from verge.settings import Settings

    vt = Settings().visibility_timeout
    print(f"machine: {machine()}; load {load()}; {args.images} images in chunks of {args.chunk}; "
          f"default settings (VERGE_VISIBILITY_TIMEOUT={vt})")
    for broker in brokers:
        r = run(broker, args.images, args.chunk)
        bound = f"{vt} s visibility timeout" if broker == "redis" else "the connection dropping"
        print(f"{broker:8}: chunk(s) held by the killed worker ({r['held']}) redelivered after "
              f"{r['redelivered_s']:6.1f} s, batch done {r['done_s']:6.1f} s after the kill "
              f"(bound: {bound}; {OLD_TIMEOUT / max(r['redelivered_s'], 0.1):,.0f}x sooner than the "
              f"old {OLD_TIMEOUT} s timeout)")


if __name__ == "__main__":
    main()
