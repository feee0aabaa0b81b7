"""Reviewers hammering the queue at once on Postgres never hold the same task.

Two levels: many threads calling the store directly (the SKIP LOCKED claim under real
contention), and reviewers going through the web app's own endpoints."""
from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import func, select

from store.db import session_scope
from store.schema import Label, ReviewTask

from .conftest import Seeder, login, make_app

pytestmark = pytest.mark.services


def _seed_tasks(seed: Seeder, n: int) -> list[int]:
    """n routed images in few transactions (blobs are irrelevant to claiming)."""
    from store.schema import Image

    with session_scope(seed.url) as s:
        images = [Image(sha256=f"{i:064x}", storage_key=f"{i:064x}", source_name=f"img-{i}.jpg",
                        size_bytes=1, status="scored") for i in range(n)]
        s.add_all(images)
        s.flush()
        tasks = [ReviewTask(image_id=im.id, state="open", reasons="near_threshold",
                            priority=(i % 7) / 7) for i, im in enumerate(images)]
        s.add_all(tasks)
        s.flush()
        return [t.id for t in tasks]


def _run(threads):
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a claimer hung"


def test_concurrent_claims_in_the_store_never_collide(pg_settings):
    from store import review

    seed = Seeder(pg_settings)
    uids = {f"r{i}": seed.user(f"r{i}", password="x" * 8) for i in range(8)}
    ids = _seed_tasks(seed, 240)
    claimed: dict[str, list[int]] = {name: [] for name in uids}
    errors = []
    start = threading.Barrier(len(uids))

    def reviewer(name: str, uid: int):
        try:
            start.wait()
            held: list[int] = []
            while True:
                with session_scope(pg_settings.resolved_database_url) as s:
                    tid = review.claim_next(s, uid, name, 600, exclude=held)
                if tid is None:
                    return
                claimed[name].append(tid)
                held.append(tid)
                if len(held) == 2:  # like the page: label the older one, keep the prefetched one
                    with session_scope(pg_settings.resolved_database_url) as s:
                        review.post_label(s, held.pop(0), uid, name, "road", "review")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    _run([threading.Thread(target=reviewer, args=(n, u)) for n, u in uids.items()])
    assert not errors, errors
    every = [t for got in claimed.values() for t in got]
    dupes = [t for t, n in Counter(every).items() if n > 1]
    assert not dupes, f"claimed twice: {dupes[:10]}"
    assert sorted(every) == sorted(ids)
    assert sum(1 for got in claimed.values() if got) >= 2  # they really did work side by side


def test_reviewers_hammering_the_web_app_never_get_the_same_task(pg_settings):
    seed = Seeder(pg_settings)
    names = ["ann", "bob", "cyd", "dan"]
    for n in names:
        seed.user(n)
    ids = _seed_tasks(seed, 80)
    app = make_app(pg_settings)
    browsers = {n: login(app, n) for n in names}
    shown: dict[str, list[int]] = {n: [] for n in names}
    errors = []
    start = threading.Barrier(len(names))

    def reviewer(name: str):
        b = browsers[name]
        try:
            start.wait()
            while True:
                r = b.post("/review/api/claim", json={})
                assert r.status_code == 200, r.get_data(as_text=True)
                task = r.json["task"]
                if task is None:
                    return
                shown[name].append(task["task_id"])
                r = b.post("/review/api/label", json={"task_id": task["task_id"], "class": "field",
                                                      "time_on_item_ms": 10})
                assert r.status_code == 201 and r.json["label"]["closed"], r.get_data(as_text=True)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    _run([threading.Thread(target=reviewer, args=(n,)) for n in names])
    assert not errors, errors
    every = [t for got in shown.values() for t in got]
    assert len(every) == len(set(every)) == len(ids)
    with session_scope(pg_settings.resolved_database_url) as s:
        assert s.scalar(select(func.count()).select_from(Label)) == len(ids)
        assert set(s.scalars(select(ReviewTask.state))) == {"done"}
