"""The embedded broker loses nothing when a whole worker dies, and the sweeper never re-sends an
image that is only waiting its turn."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time

import pytest
from sqlalchemy import func, select, update

from store.db import session_scope
from store.schema import Image
from tests.conftest import verge
from tests.corpus import jpeg_bytes


def _settings(env):
    from verge.settings import Settings

    return Settings.from_env(env)


def _messages(settings) -> list:
    return sorted((settings.broker_dir / "queue").glob(f"*{settings.queue}*"))


def test_sweeper_leaves_waiting_images_alone_and_resends_lost_ones(tiny_env, tmp_path):
    from workers.app import requeue_stalled
    from workers.submission import submit_paths

    env = {**tiny_env, "VERGE_CHUNK_SIZE": "1", "VERGE_REQUEUE_AFTER": "60"}
    settings = _settings(env)
    verge(env, "db", "upgrade")
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(jpeg_bytes(i))
    submit_paths(settings, [tmp_path / f"{i}.jpg" for i in range(3)], "b")
    url = settings.resolved_database_url
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3)
    with session_scope(url) as s:  # a backlog longer than VERGE_REQUEUE_AFTER, and no worker
        s.execute(update(Image).values(queued_at=long_ago))
    assert len(_messages(settings)) == 3
    for _ in range(3):  # sweep after sweep: they are waiting, not lost
        assert requeue_stalled(settings) == 0
    assert len(_messages(settings)) == 3
    for m in _messages(settings):  # now the messages are lost (a broker wiped clean)
        m.unlink()
    assert requeue_stalled(settings) == 3
    assert len(_messages(settings)) == 3
    with session_scope(url) as s:  # sent again: the clock restarted
        assert s.scalar(select(func.min(Image.queued_at))).replace(tzinfo=dt.timezone.utc) > long_ago


def test_a_started_chunk_restarts_the_sweepers_clock(tiny_env, tmp_path):
    from store.images import count_attempt, register_images

    settings = _settings(tiny_env)
    verge(tiny_env, "db", "upgrade")
    url = settings.resolved_database_url
    with session_scope(url) as s:
        reg = register_images(s, None, [("a.jpg", "a" * 64, 1)])
        s.execute(update(Image).values(queued_at=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)))
    with session_scope(url) as s:
        count_attempt(s, reg.image_ids)
    with session_scope(url) as s:
        im = s.get(Image, reg.image_ids[0])
        assert im.attempts == 1
        assert im.queued_at.replace(tzinfo=dt.timezone.utc) > dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)


@pytest.mark.slow
def test_a_fresh_worker_scores_the_chunk_a_killed_embedded_worker_held(tiny_env, tmp_path,
                                                                       start_worker):
    n = 120
    env = {**tiny_env, "VERGE_CHUNK_SIZE": str(n), "VERGE_DECODE_THREADS": "1",
           "VERGE_BATCH_SIZE": "4"}
    settings = _settings(env)
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(n):  # big enough that the one chunk takes seconds to score
        (pics / f"{i:03d}.jpg").write_bytes(jpeg_bytes(i, size=(1600, 1200)))
    out = json.loads(verge(env, "submit", str(pics), "--batch", "k", "--json").stdout)
    assert out["chunks"] == 1
    url = settings.resolved_database_url

    def count(*where):
        with session_scope(url) as s:
            return s.scalar(select(func.count()).select_from(Image).where(*where))

    worker = start_worker(env)
    deadline = time.monotonic() + 120
    while count(Image.attempts > 0) == 0:  # the pool process has begun the chunk
        assert time.monotonic() < deadline, "the worker never started the chunk"
        time.sleep(0.05)
    os.killpg(worker.proc.pid, signal.SIGKILL)  # parent and pool, mid-chunk
    worker.proc.wait()
    assert count(Image.status == "queued") == n, "the chunk finished before the kill; make it bigger"
    assert not _messages(settings), "the filesystem broker kept no message: this is what is lost"
    start_worker(env)
    deadline = time.monotonic() + 60
    while count(Image.status == "scored") < n:
        assert time.monotonic() < deadline, f"{count(Image.status == 'queued')} images still queued after 60 s"
        time.sleep(0.5)


def test_beat_jobs_and_rescore_have_their_own_queue_and_a_worker_for_it(tiny_env):
    from pathlib import Path

    import yaml

    from workers.app import beat_schedule

    settings = _settings({**tiny_env, "VERGE_RETRAIN_AFTER_LABELS": "5"})
    jobs = settings.resolved_jobs_queue
    assert jobs == f"{settings.queue}-jobs"
    schedule = beat_schedule(settings)
    assert {"requeue-stalled", "retrain-cron", "retrain-on-labels"} <= set(schedule)
    assert {e["options"]["queue"] for e in schedule.values()} == {jobs}
    compose = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker-compose.yml").read_text())
    assert compose["services"]["worker"]["command"][:3] == ["worker", "--queues", "scoring"]
    assert compose["services"]["jobs"]["command"][:3] == ["worker", "--queues", "jobs"]


def _skew_host_clock(monkeypatch, hours: float) -> None:
    """This process's clock as a host whose clock is ``hours`` off would read it: every module's
    ``utcnow`` (the Python-side clock verge stamps and compares with) returns the skewed time.
    The database's clock (Postgres' now(), SQLite's 'now') is untouched, as on a real skewed host."""
    import sys

    from store import schema

    real = schema.utcnow

    def skewed() -> dt.datetime:
        return real() + dt.timedelta(hours=hours)

    for module in list(sys.modules.values()):
        if getattr(module, "utcnow", None) is real:
            monkeypatch.setattr(module, "utcnow", skewed)
    assert schema.utcnow is skewed


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_the_sweeper_counts_on_the_databases_clock_not_the_hosts(database, tiny_env, request, monkeypatch):
    """Several hosts, no shared clock: the sweeper's decision (which queued images were started
    longer than VERGE_REQUEUE_AFTER ago) is the same whether its host's clock is hours ahead,
    hours behind or right, and whatever the clocks of the hosts that stamped the images."""
    from store.images import count_attempt, register_images
    from workers.app import enqueue, requeue

    env = {**tiny_env, "VERGE_REQUEUE_AFTER": "600", "VERGE_CHUNK_SIZE": "1"}
    if database == "postgres":
        env["VERGE_DATABASE_URL"] = request.getfixturevalue("pg_url")
    settings = _settings(env)
    verge(env, "db", "upgrade")
    url = settings.resolved_database_url
    with session_scope(url) as s:
        fresh, started, stale = register_images(s, None, [(f"{c}.jpg", c * 64, 1) for c in "abc"]).image_ids
    enqueue(settings, [fresh, stale])  # sent just now by a host whose clock is right
    with monkeypatch.context() as m:  # a worker on a host 3 hours behind starts a chunk just now
        _skew_host_clock(m, -3)
        with session_scope(url) as s:
            count_attempt(s, [started])

    def stale_since_two_hours():
        with session_scope(url) as s:
            s.execute(update(Image).where(Image.id == stale).values(
                queued_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)))

    for hours in (3, -3, 0, 0.5, -0.5):
        stale_since_two_hours()
        with monkeypatch.context() as m:
            _skew_host_clock(m, hours)
            resent = requeue(settings, older_than_s=settings.requeue_after)
        assert resent == 1, f"a sweeper {hours:+} h off re-sent {resent} images, not just the stale one"
        with session_scope(url) as s:  # and the one re-sent was stamped on the database's clock
            q = {im.id: im.queued_at.replace(tzinfo=dt.timezone.utc) for im in s.scalars(select(Image))}
        now = dt.datetime.now(dt.timezone.utc)
        assert all(abs(q[i] - now) < dt.timedelta(minutes=5) for i in (fresh, started, stale)), (hours, q)
