"""Fault injection against the real services: workers killed mid-chunk, and the rules that make
at-least-once delivery safe (nothing lost, nothing scored twice)."""
from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import uuid

import psutil
import pytest
from sqlalchemy import func, select, text

from store.db import session_scope
from store.schema import Embedding, Image, Prediction, ReviewTask
from tests.conftest import verge
from tests.corpus import varied_photo_copies


def busy_child(worker_pid: int) -> psutil.Process | None:
    """The prefork child that is currently scoring (it holds the model and burns CPU)."""
    try:
        kids = psutil.Process(worker_pid).children()
    except psutil.NoSuchProcess:
        return None
    return kids[0] if kids else None


@pytest.mark.services
@pytest.mark.slow
def test_killing_workers_mid_chunk_loses_nothing_and_scores_nothing_twice(
        tmp_path, tiny_env, pg_url, redis_url, start_worker):
    kills_wanted, per_batch, batches_max = 20, 500, 24
    env = {**tiny_env, "VERGE_DATABASE_URL": pg_url, "VERGE_BROKER_URL": redis_url,
           "VERGE_QUEUE": f"verge-kill-{uuid.uuid4().hex[:8]}", "VERGE_CHUNK_SIZE": "20",
           "VERGE_VISIBILITY_TIMEOUT": "30", "VERGE_MAX_ATTEMPTS": "5"}
    # Work is fed in batches until 20 kills have landed: however fast this machine scores, the
    # queue never runs dry first (each kill costs ~1.5 s: a CPU sample, then the fresh child).
    files = varied_photo_copies(tmp_path / "copies", per_batch * batches_max)
    folders = []
    for b in range(batches_max):
        folder = tmp_path / f"batch-{b:02d}"
        folder.mkdir()
        for f in files[b * per_batch:(b + 1) * per_batch]:
            f.rename(folder / f.name)
        folders.append(folder)
    verge(env, "db", "upgrade")
    worker = start_worker(env)

    def count(status):
        with session_scope(pg_url) as s:
            return s.scalar(select(func.count()).select_from(Image).where(Image.status == status))

    def submit_next():
        folder = folders.pop(0)
        out = json.loads(verge(env, "submit", str(folder), "--batch", f"kills-{folder.name}",
                               "--json").stdout)
        assert out["new"] == per_batch
        return per_batch

    n = submit_next()
    kills = 0
    deadline = time.monotonic() + 600
    while kills < kills_wanted and time.monotonic() < deadline:
        queued = count("queued")
        if queued < 4 * per_batch // 10 and folders:
            n += submit_next()
        elif queued == 0:
            break
        child = busy_child(worker.proc.pid)
        try:
            if child is not None and child.cpu_percent(interval=0.2) > 20:  # mid-chunk
                time.sleep(random.uniform(0.0, 0.3))
                child.send_signal(signal.SIGKILL)
                kills += 1
                time.sleep(1.0)  # the parent requeues the chunk and forks a fresh child
        except psutil.NoSuchProcess:
            pass  # it was replaced meanwhile
    # one more: the whole worker dies (parent and child); its unacked chunk comes back from
    # Redis after the visibility timeout, to a new worker
    for p in [worker.proc.pid] + [c.pid for c in psutil.Process(worker.proc.pid).children()]:
        os.kill(p, signal.SIGKILL)
    worker.proc.wait()
    start_worker(env)
    deadline = time.monotonic() + 600
    while count("queued") and time.monotonic() < deadline:
        time.sleep(2)
    status = {k: count(k) for k in ("queued", "scored", "failed")}

    assert kills >= kills_wanted, f"only {kills} kills landed mid-chunk over {n} images"
    assert status["queued"] == 0, status
    assert status["scored"] + status["failed"] == n
    with session_scope(pg_url) as s:
        dup_preds = s.execute(text("SELECT count(*) FROM (SELECT image_id, model_version_id FROM prediction "
                                   "GROUP BY 1, 2 HAVING count(*) > 1) d")).scalar()
        dup_tasks = s.execute(text("SELECT count(*) FROM (SELECT image_id FROM review_task WHERE state IN "
                                   "('open','claimed') GROUP BY 1 HAVING count(*) > 1) d")).scalar()
        preds = s.scalar(select(func.count()).select_from(Prediction))
        embs = s.scalar(select(func.count()).select_from(Embedding))
        failed = s.scalars(select(Image.error).where(Image.status == "failed")).all()
    assert dup_preds == 0 and dup_tasks == 0
    assert preds == embs == status["scored"]
    # only a chunk that kept killing its worker may end failed, and it says so
    assert all("interrupted" in e for e in failed)
    print(f"\nkills survived: {kills} children + 1 whole worker; images: {n}; scored: {status['scored']}; "
          f"failed after repeated kills: {len(failed)}; lost: 0; duplicate predictions: {dup_preds}")


@pytest.mark.services
@pytest.mark.slow
def test_an_image_that_kills_its_worker_fails_alone_and_the_rest_of_its_chunk_is_scored(
        tmp_path, tiny_env, redis_url, start_worker):
    """Attempts count per image, not per chunk: one image whose decode kills the worker process
    (a decoder crash, an OOM kill: the process dies, the chunk is redelivered) ends ``failed``
    after VERGE_MAX_ATTEMPTS deliveries, and every other image of its chunk is scored."""
    import hashlib

    from tests.corpus import jpeg_bytes
    from verge.settings import Settings

    n, max_attempts = 7, 3
    env = {**tiny_env, "VERGE_BROKER_URL": redis_url, "VERGE_QUEUE": f"verge-poison-{uuid.uuid4().hex[:8]}",
           "VERGE_CHUNK_SIZE": str(n), "VERGE_MAX_ATTEMPTS": str(max_attempts),
           "VERGE_DECODE_THREADS": "1", "VERGE_BATCH_SIZE": "2"}
    pics = tmp_path / "pics"
    pics.mkdir()
    data = [jpeg_bytes(700 + i) for i in range(n)]
    for i, d in enumerate(data):
        (pics / f"{i}.jpg").write_bytes(d)
    verge(env, "db", "upgrade")
    out = json.loads(verge(env, "submit", str(pics), "--batch", "poison", "--json").stdout)
    assert out["chunks"] == 1 and out["new"] == n
    url = Settings.from_env(env).resolved_database_url
    with session_scope(url) as s:  # the poison sits in the middle of its chunk, images either side
        ids = s.scalars(select(Image.id).order_by(Image.id)).all()
        poison_id = ids[n // 2]
        poison = s.get(Image, poison_id).sha256
    assert poison in {hashlib.sha256(d).hexdigest() for d in data}
    worker = start_worker({**env, "VERGE_TEST_CRASH_ON": poison})
    deadline = time.monotonic() + 180
    while True:
        with session_scope(url) as s:
            queued = s.scalar(select(func.count()).select_from(Image).where(Image.status == "queued"))
        if not queued:
            break
        assert time.monotonic() < deadline, f"{queued} images still queued\n{worker.log.read_text()[-3000:]}"
        time.sleep(0.5)
    with session_scope(url) as s:
        images = {im.id: (im.status, im.error, im.attempts) for im in s.scalars(select(Image))}
        preds = s.scalar(select(func.count()).select_from(Prediction))
    status, error, attempts = images.pop(poison_id)
    assert status == "failed", (status, error)
    assert f"interrupted {max_attempts} times" in error and "VERGE_MAX_ATTEMPTS" in error, error
    assert {iid: st for iid, (st, _, _) in images.items()} == {iid: "scored" for iid in images}
    assert preds == n - 1
    assert attempts == max_attempts  # the worker really died that often on it, and on no other
    # the process really died mid-chunk (no goodbye): the pool reported its child lost
    assert worker.log.read_text().count("WorkerLostError") >= max_attempts, worker.log.read_text()[-3000:]
