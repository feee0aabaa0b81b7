"""One pooled Postgres connection per request (webui/context.py): the transactions of a request
share it, each still commits on its own, a nested ``db()`` takes its own connection, and the
connection goes back to the pool when the request ends."""
from __future__ import annotations

import pytest
from sqlalchemy import event, select, text

from store.db import get_engine, session_scope
from store.schema import Label, ReviewTask

from .conftest import Seeder, make_app
from .test_api import _token

pytestmark = pytest.mark.services


def _pid(s) -> int:
    return s.execute(text("SELECT pg_backend_pid()")).scalar()


def test_a_request_shares_one_connection_and_each_db_block_still_commits(pg_settings):
    from webui.context import db

    url = pg_settings.resolved_database_url
    seed = Seeder(pg_settings)
    seed.user("ann")
    seed.user("bob")
    app = make_app(pg_settings)
    pool = get_engine(url).pool
    before = pool.checkedout()
    with app.test_request_context("/"):
        with db() as s:
            first = _pid(s)
            s.execute(text("UPDATE user_account SET role = 'admin' WHERE name = 'ann'"))
        with session_scope(url) as other:  # committed: another connection sees it at once
            assert other.execute(text("SELECT role FROM user_account WHERE name = 'ann'")).scalar() == "admin"
        with pytest.raises(RuntimeError):
            with db() as s:
                assert _pid(s) == first  # the same connection, a new transaction
                s.execute(text("UPDATE user_account SET role = 'reviewer' WHERE name = 'ann'"))
                with db() as inner:  # nested: a connection of its own, committed on its own
                    assert _pid(inner) != first
                    inner.execute(text("UPDATE user_account SET role = 'admin' WHERE name = 'bob'"))
                raise RuntimeError("the outer block fails")
        with db() as s:
            assert _pid(s) == first
            roles = dict(s.execute(text("SELECT name, role FROM user_account")).all())
        assert roles == {"ann": "admin", "bob": "admin"}  # the outer rolled back, the nested stayed
        assert pool.checkedout() == before + 1
    assert pool.checkedout() == before  # handed back when the request ended


def test_an_api_claim_and_label_check_out_one_connection_each(pg_settings):
    url = pg_settings.resolved_database_url
    seed = Seeder(pg_settings)
    seed.user("ann")
    _, tid = seed.routed(0.9)
    app = make_app(pg_settings)
    client = app.test_client()
    auth = _token(seed, "ann")
    checkouts = []
    engine = get_engine(url)
    listener = lambda *_: checkouts.append(1)  # noqa: E731
    event.listen(engine, "checkout", listener)
    try:
        got = client.post("/api/v1/tasks/next", headers=auth).json["task"]
        assert got["task_id"] == tid and len(checkouts) == 1
        r = client.post("/api/v1/labels", headers=auth, json={"task_id": tid, "class": "road"})
        assert r.status_code == 201 and len(checkouts) == 2
    finally:
        event.remove(engine, "checkout", listener)
    assert engine.pool.checkedout() == 0
    with session_scope(url) as s:
        assert s.scalar(select(ReviewTask.state).where(ReviewTask.id == tid)) == "done"
        assert s.scalar(select(Label.cls).where(Label.task_id == tid)) == "road"


def test_a_refused_overlap_label_keeps_nothing(pg_settings, monkeypatch):
    """The label request's one transaction rolls back whole when the label is refused."""
    monkeypatch.setenv("VERGE_REVIEWS_PER_TASK", "2")
    import dataclasses

    settings = dataclasses.replace(pg_settings, reviews_per_task=2)
    seed = Seeder(settings)
    seed.user("ann")
    seed.user("bob")
    _, tid = seed.routed(0.9)
    client = make_app(settings).test_client()
    ann, bob = _token(seed, "ann"), _token(seed, "bob")
    assert client.post("/api/v1/tasks/next", headers=ann).json["task"]["task_id"] == tid
    with session_scope(settings.resolved_database_url) as s:
        stamp = s.scalar(select(ReviewTask.updated_at).where(ReviewTask.id == tid))
    r = client.post("/api/v1/labels", headers=bob, json={"task_id": tid, "class": "road"})
    assert r.status_code == 409 and "claimed by another reviewer" in r.json["error"]
    with session_scope(settings.resolved_database_url) as s:
        assert s.scalar(select(ReviewTask.updated_at).where(ReviewTask.id == tid)) == stamp
        assert s.scalar(select(Label.id).where(Label.task_id == tid)) is None
