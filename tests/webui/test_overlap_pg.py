"""Several reviewers per task on Postgres under real contention: with N = 2 and three reviewers
no task gets two labels from one reviewer and none gets more than N."""
from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from store.db import session_scope
from store.schema import Label, ReviewTask

from .conftest import Seeder, login, make_app
from .reviewers import run, seed_tasks, side_by_side, web_reviewer

pytestmark = pytest.mark.services
N = 2


def _check(url, ids):
    with session_scope(url) as s:
        per_task = Counter(s.scalars(select(Label.task_id)))
        pairs = Counter(s.execute(select(Label.task_id, Label.user_id)).all())
        states = Counter(s.scalars(select(ReviewTask.state)))
    assert max(pairs.values()) == 1, "a reviewer labeled a task twice"
    assert max(per_task.values()) <= N, f"more than {N} labels: {per_task.most_common(3)}"
    return per_task, states


def _still_wanted(url: str, uid: int):
    """Whether a task not settled yet still lacks this reviewer's label: with N = 2 an empty
    claim may only mean another reviewer holds that task right now (their label reopens it)."""
    def wanted() -> bool:
        with session_scope(url) as s:
            return s.scalar(select(func.count()).select_from(ReviewTask).where(
                ReviewTask.state.in_(("open", "claimed")),
                ~select(Label.id).where(Label.task_id == ReviewTask.id,
                                        Label.user_id == uid).exists())) > 0
    return wanted


def test_three_reviewers_in_the_store_never_exceed_n_labels(pg_settings):
    from store import overlap, review

    url = pg_settings.resolved_database_url
    seed = Seeder(pg_settings)
    uids = {f"r{i}": seed.user(f"r{i}", password="x" * 8) for i in range(3)}
    ids = seed_tasks(seed, 90)
    refused = Counter()

    def reviewer(name: str, uid: int):
        wanted = _still_wanted(url, uid)
        while True:
            with session_scope(url) as s:
                tid = review.claim_next(s, uid, name, 600, overlap=True)
            if tid is None:
                if wanted():
                    time.sleep(0.05)
                    continue
                return
            cls = ("road", "field")[(tid + uid) % 2 if uid == 3 else 0]
            try:
                with session_scope(url) as s:
                    overlap.post_label(s, tid, uid, name, cls, "review", N)
            except overlap.LabelRefused:
                refused[name] += 1

    side_by_side([lambda n=n, u=u: reviewer(n, u) for n, u in uids.items()])
    per_task, states = _check(url, ids)
    assert sorted(per_task) == sorted(ids) and set(per_task.values()) == {N}
    assert set(states) <= {"done", "conflict"} and states["done"] > 0
    assert not refused  # claim-then-label never collides


def test_labels_racing_for_one_task_stop_at_n(pg_settings):
    """Three reviewers post a label for the same open task at the same instant (none holds a
    claim): the task's row lock lets exactly two in, the third is told the task is done."""
    from store import overlap

    url = pg_settings.resolved_database_url
    seed = Seeder(pg_settings)
    uids = [seed.user(f"q{i}", password="x" * 8) for i in range(3)]
    ids = seed_tasks(seed, 20)
    for tid in ids:
        barrier = threading.Barrier(3)
        outcomes = []

        def post(uid, tid=tid, barrier=barrier, outcomes=outcomes):
            with session_scope(url) as s:
                barrier.wait()
                try:
                    outcomes.append(overlap.post_label(s, tid, uid, f"u{uid}", "road", "api", N)
                                    .created)
                except overlap.LabelRefused as exc:
                    outcomes.append(str(exc))

        run([threading.Thread(target=post, args=(u,)) for u in uids])
        assert outcomes.count(True) == N, outcomes
        assert [o for o in outcomes if o is not True] == [f"task {tid} is done; it takes no more labels"]
    _check(url, ids)


def test_reviewers_through_the_web_app_at_n_2(pg_settings):
    seed = Seeder(pg_settings)
    names = ["ann", "bob", "cyd"]
    for n in names:
        seed.user(n)
    ids = seed_tasks(seed, 40)
    app = make_app(pg_settings, reviews_per_task=N)

    side_by_side([web_reviewer(login(app, n), {"class": "field"},
                               still_wanted=_still_wanted(pg_settings.resolved_database_url, seed.users[n]))
                  for n in names])
    per_task, states = _check(pg_settings.resolved_database_url, ids)
    assert set(per_task.values()) == {N} and len(per_task) == len(ids)
    assert states == Counter(done=len(ids))
    with session_scope(pg_settings.resolved_database_url) as s:
        assert s.scalar(select(func.count()).select_from(ReviewTask)
                        .where(ReviewTask.final_cls == "field")) == len(ids)
