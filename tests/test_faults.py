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
    n, kills_wanted = 2500, 20
    # One decode thread keeps the tiny model's worker slow enough that 20 kills (each followed by
    # a second for the parent to fork a fresh child) land before the queue runs dry.
    env = {**tiny_env, "VERGE_DATABASE_URL": pg_url, "VERGE_BROKER_URL": redis_url,
           "VERGE_QUEUE": f"verge-kill-{uuid.uuid4().hex[:8]}", "VERGE_CHUNK_SIZE": "20",
           "VERGE_VISIBILITY_TIMEOUT": "30", "VERGE_MAX_ATTEMPTS": "5", "VERGE_DECODE_THREADS": "1"}
    files = varied_photo_copies(tmp_path / "copies", n)
    verge(env, "db", "upgrade")
    worker = start_worker(env)
    submitted = json.loads(verge(env, "submit", str(tmp_path / "copies"), "--batch", "kills",
                                 "--json").stdout)
    assert submitted["new"] == n

    kills = 0
    deadline = time.monotonic() + 600
    while kills < kills_wanted and time.monotonic() < deadline:
        with session_scope(pg_url) as s:
            queued = s.scalar(select(func.count()).select_from(Image).where(Image.status == "queued"))
        if queued == 0:
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
    status = json.loads(verge(env, "status", "kills", "--json").stdout)
    deadline = time.monotonic() + 600
    while status["queued"] and time.monotonic() < deadline:
        time.sleep(2)
        status = json.loads(verge(env, "status", "kills", "--json").stdout)

    assert kills >= kills_wanted, f"only {kills} kills landed mid-chunk"
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
