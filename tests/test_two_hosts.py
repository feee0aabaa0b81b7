"""Several machines, no shared disk: every process has its own, empty data dir; images live in an
S3 server (moto_server, over HTTP), state in Postgres, work in Redis or RabbitMQ.

Two workers score a prefix registered in place; one is SIGKILLed whole (parent and children, no
goodbye) while it holds a chunk, and that chunk is scored by the other within the bound, with the
DEFAULT visibility timeout. A head trained on the submitter's host is used by the surviving worker;
a reviewer labels through the web server; no data dir ever holds a submitted image."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from store.db import dispose_engines, session_scope
from store.schema import Batch, BatchImage, Image, Prediction
from tests.conftest import TINY, Worker, port_open, verge
from tests.corpus import jpeg_bytes
from tests.services import Service, free_port
from tests.test_object_storage import hashes_under

BOUND_S = 120  # the promise: a dead worker host costs at most 2 minutes
RECEIVED = re.compile(r"Task verge\.score_chunk\[([0-9a-f-]+)\] received")


def _received(log: Path) -> list[str]:
    return RECEIVED.findall(log.read_text())


def _finished(log: Path) -> set[str]:
    return set(re.findall(r"Task verge\.score_chunk\[([0-9a-f-]+)\] (?:succeeded|failed|retry)",
                          log.read_text()))


def _upload(s3, bucket: str, objects: dict[str, bytes]) -> None:
    client = s3.client()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), objects.items()))


def _status(pg_url: str, batch: str) -> dict:
    with session_scope(pg_url) as s:
        rows = s.execute(select(Image.status, func.count()).join(BatchImage, BatchImage.image_id == Image.id)
                         .join_from(BatchImage, Batch).where(Batch.name == batch)
                         .group_by(Image.status)).all()
    return dict(rows)


def _delete_amqp_queue(url: str, name: str) -> None:
    from kombu import Connection

    with Connection(url) as conn:
        channel = conn.default_channel
        channel.queue_delete(name)
        channel.exchange_delete(name)


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_two_hosts_share_nothing_but_the_services(broker, request, tmp_path, pg_url, s3):
    broker_url = request.getfixturevalue("redis_url" if broker == "redis" else "amqp_url")
    queue = f"verge-hosts-{uuid.uuid4().hex[:8]}"
    if broker == "rabbitmq":
        request.addfinalizer(lambda: _delete_amqp_queue(broker_url, queue))
    bucket = s3.bucket()
    common = {**TINY, **s3.env, "VERGE_DATABASE_URL": pg_url, "VERGE_BROKER_URL": broker_url,
              "VERGE_QUEUE": queue, "VERGE_BLOB_URL": f"s3://{bucket}/blobs", "VERGE_CHUNK_SIZE": "10",
              "VERGE_SECRET_KEY": "one-key-for-every-web-server",  # default VERGE_VISIBILITY_TIMEOUT
              "PYTHONUNBUFFERED": "1"}  # the logs say which chunk a worker holds, as it happens
    hosts = {name: tmp_path / f"host-{name}" for name in ("a", "b", "web", "submitter")}
    env = {name: {**common, "VERGE_DATA_DIR": str(path)} for name, path in hosts.items()}
    # host A holds each chunk a few seconds before scoring it, so the kill below lands while it
    # holds one (tiny chunks on a quiet machine were otherwise finished between look and kill)
    env["a"]["VERGE_TEST_PAUSE_SCORE_CHUNK"] = "3"
    verge(env["submitter"], "db", "upgrade")

    first = {f"in/one/{'é' if i % 7 == 0 else 'p'} {i:03d}.jpg": jpeg_bytes(5000 + i, (64, 48))
             for i in range(320)}
    later = {f"in/two/q{i:02d}.jpg": jpeg_bytes(6000 + i, (64, 48)) for i in range(30)}
    _upload(s3, bucket, {**first, **later})
    with ThreadPoolExecutor(2) as pool:  # two hosts booting at once, each with its own log
        worker_a, worker_b = pool.map(lambda h: Worker(env[h], tmp_path / f"worker-{h}.log"), ["a", "b"])
    request.addfinalizer(worker_a.stop)
    request.addfinalizer(worker_b.stop)

    out = json.loads(verge(env["submitter"], "submit", f"s3://{bucket}/in/one/", "--batch", "one",
                           "--json").stdout)
    assert out["submitted"] == out["new"] == 320

    def held_by_a_only() -> list[str]:
        """Chunks A took and has not finished, which B has not been handed (a chunk that outlived
        the visibility timeout on a crowded machine is already B's as well)."""
        taken_by_b = set(_received(worker_b.log))
        return [t for t in _received(worker_a.log) if t not in _finished(worker_a.log) | taken_by_b]

    # kill host A whole (parent and children, no goodbye) while it holds a chunk
    deadline = time.monotonic() + 180
    while not held_by_a_only():
        assert time.monotonic() < deadline, f"worker A never held a chunk:\n{worker_a.log.read_text()}"
        time.sleep(0.05)
    os.killpg(worker_a.proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    worker_a.proc.wait()
    held = held_by_a_only()
    assert held, "A finished its chunk as it was killed: nothing left to redeliver"

    redelivered_after = None
    while True:
        if redelivered_after is None and set(held) <= set(_received(worker_b.log)):
            redelivered_after = time.monotonic() - killed_at
        st = _status(pg_url, "one")
        if st.get("scored", 0) + st.get("failed", 0) == 320 and redelivered_after is not None:
            break
        assert time.monotonic() - killed_at < BOUND_S, (
            f"{broker}: {st} {BOUND_S} s after the kill; chunks held by A: {held}\n"
            f"{worker_b.log.read_text()[-3000:]}")
        time.sleep(0.5)
    print(f"\n{broker}: chunk held by the killed worker redelivered after {redelivered_after:.1f} s; "
          f"batch done {time.monotonic() - killed_at:.1f} s after the kill")
    assert st == {"scored": 320}
    with session_scope(pg_url) as s:
        dupes = s.execute(select(Prediction.image_id).group_by(Prediction.image_id, Prediction.model_version_id)
                          .having(func.count() > 1)).all()
        assert dupes == []
        assert s.scalar(select(func.count()).select_from(Image).where(Image.sha256.is_(None))) == 0

    # a head trained on the submitter's host ...
    train = tmp_path / "training"
    for cls, base in (("fields", 7000), ("roads", 8000)):
        (train / cls).mkdir(parents=True)
        for i in range(6):
            (train / cls / f"{cls}-{i}.jpg").write_bytes(jpeg_bytes(base + i, (64, 48)))
    trained = verge(env["submitter"], "train", "binary", str(train), "--epochs", "2")
    version = int(re.search(r"model version (\d+)", trained.stdout).group(1))
    # ... scores the next batch on the other host, whose data dir never saw it
    out = json.loads(verge(env["submitter"], "submit", f"s3://{bucket}/in/two/", "--batch", "two",
                           "--wait", "--timeout", "120", "--json").stdout)
    assert out["status"]["scored"] == 30, out
    with session_scope(pg_url) as s:
        versions = set(s.scalars(select(Prediction.model_version_id).join(
            BatchImage, BatchImage.image_id == Prediction.image_id)
            .join_from(BatchImage, Batch).where(Batch.name == "two")))
    assert versions == {version}
    assert "switched to head version" in worker_b.log.read_text()

    # a reviewer labels through the web server (its own data dir; images proxied from the bucket)
    port = free_port()
    verge(env["web"], "users", "add", "ann", "--role", "reviewer", "--password-stdin",
          input="a long enough password\n")
    token = verge(env["web"], "users", "token", "ann").stdout.strip().split()[-1]
    web = Service([sys.executable, "-m", "verge", "web", "--port", str(port)], tmp_path / "web.log",
                  {**os.environ, **env["web"]})
    try:
        web.wait_ready(lambda: port_open("127.0.0.1", port), 60)
        base, auth = f"http://127.0.0.1:{port}/api/v1", {"Authorization": f"Bearer {token}"}
        task = requests.post(f"{base}/tasks/next", json={}, headers=auth, timeout=30).json()["task"]
        assert task is not None, "nothing was routed to review"
        image = requests.get(f"{base}/images/{task['image_id']}", headers=auth, timeout=30)
        with session_scope(pg_url) as s:
            location, image_sha = s.execute(select(Image.storage_key, Image.sha256)
                                            .where(Image.id == task["image_id"])).one()
        assert image.status_code == 200 and hashlib.sha256(image.content).hexdigest() == image_sha
        assert location.startswith(f"s3://{bucket}/in/")
        r = requests.post(f"{base}/labels", json={"task_id": task["task_id"], "class": "road"},
                          headers=auth, timeout=30)
        assert r.status_code in (200, 201), r.text
    finally:
        web.stop()
    dispose_engines()

    # no host's data dir holds any submitted image (they were read from the bucket, never copied)
    submitted = {hashlib.sha256(d).hexdigest() for d in {**first, **later}.values()}
    submitted |= {hashlib.sha256(p.read_bytes()).hexdigest() for p in train.rglob("*.jpg")}
    assert not hashes_under(*hosts.values()) & submitted
