"""Reviewers hammering the queue at once on Postgres never hold the same task.

Two levels: many threads calling the store directly (the SKIP LOCKED claim under real
contention), and reviewers going through the web app's own endpoints."""
from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import func, select

from store.db import session_scope
from store.schema import Label, ReviewTask

from .conftest import Seeder, login, make_app
from .reviewers import seed_tasks, side_by_side, web_reviewer

pytestmark = pytest.mark.services


def test_concurrent_claims_in_the_store_never_collide(pg_settings):
    from store import review

    seed = Seeder(pg_settings)
    uids = {f"r{i}": seed.user(f"r{i}", password="x" * 8) for i in range(8)}
    ids = seed_tasks(seed, 240)
    claimed: dict[str, list[int]] = {name: [] for name in uids}

    def reviewer(name: str, uid: int):
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

    side_by_side([lambda n=n, u=u: reviewer(n, u) for n, u in uids.items()])
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
    ids = seed_tasks(seed, 80)
    app = make_app(pg_settings)
    shown: dict[str, list[int]] = {n: [] for n in names}
    side_by_side([web_reviewer(login(app, n), {"class": "field", "time_on_item_ms": 10},
                               closed=True, shown=shown[n]) for n in names])
    every = [t for got in shown.values() for t in got]
    assert len(every) == len(set(every)) == len(ids)
    with session_scope(pg_settings.resolved_database_url) as s:
        assert s.scalar(select(func.count()).select_from(Label)) == len(ids)
        assert set(s.scalars(select(ReviewTask.state))) == {"done"}
