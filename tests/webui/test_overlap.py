"""Several reviewers per task (VERGE_REVIEWS_PER_TASK = 2): blind, never the same task twice,
agreement is final, a disagreement is a conflict an admin settles, and training takes the final
labels. The default (1 per task) is the rest of tests/webui/test_review.py."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from store.db import session_scope
from store.labels import consensus
from store.schema import Label, ReviewTask

from .conftest import login, make_app


@pytest.fixture
def app2(web_settings):
    return make_app(web_settings, reviews_per_task=2)


@pytest.fixture
def people(app2, seed):
    def make(*names, role="reviewer"):
        out = []
        for n in names:
            seed.user(n, role)
            out.append(login(app2, n))
        return out
    return make


def _task(seed, task_id) -> ReviewTask:
    with session_scope(seed.url) as s:
        return s.get(ReviewTask, task_id)


def _claim(b):
    r = b.post("/review/api/claim", json={})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.json["task"]


def _label(b, task_id, cls):
    return b.post("/review/api/label", json={"task_id": task_id, "class": cls})


def test_a_task_waits_for_two_reviewers_who_agree_and_then_is_final(people, seed):
    iid, tid = seed.routed(0.9)
    ann, bob, cyd = people("ann", "bob", "cyd")
    assert _claim(ann)["task_id"] == tid
    r = _label(ann, tid, "road")
    assert r.status_code == 201 and r.json["label"]["closed"] is False
    t = _task(seed, tid)
    assert t.state == "open" and t.lease_owner is None and t.final_cls is None
    # back in the queue, but never for ann again
    assert _claim(ann) is None
    task = _claim(bob)
    assert task["task_id"] == tid
    assert "road" not in str({k: v for k, v in task.items() if k != "prediction"})  # blind
    assert not any(k in task for k in ("labels", "reviews", "human_labels"))
    r = _label(bob, tid, "road")
    assert r.status_code == 201 and r.json["label"]["closed"] is True
    t = _task(seed, tid)
    assert (t.state, t.final_cls) == ("done", "road")
    assert _claim(cyd) is None  # two reviews are enough: nobody gets it a third time
    r = _label(cyd, tid, "field")
    assert r.status_code == 409 and "done" in r.json["error"]
    with session_scope(seed.url) as s:
        assert len(list(s.scalars(select(Label).where(Label.task_id == tid)))) == 2
        assert consensus(s).labels[iid] == "road"


def test_a_disagreement_is_a_conflict_that_an_admin_decides(people, seed, app2):
    iid, tid = seed.routed(0.9, p_road=0.47, zs_p_road=0.62)
    ann, bob, cyd = people("ann", "bob", "cyd")
    boss, = people("boss", role="admin")
    _claim(ann)
    assert _label(ann, tid, "road").status_code == 201
    _claim(bob)
    assert _label(bob, tid, "field").json["label"]["closed"] is True
    assert _task(seed, tid).state == "conflict"
    assert _claim(cyd) is None
    r = _label(cyd, tid, "road")  # a reviewer cannot decide a conflict
    assert r.status_code == 409 and "conflict" in r.json["error"] and "admin" in r.json["error"]
    with session_scope(seed.url) as s:
        c = consensus(s)
        assert iid not in c.labels and c.ties[iid] == {"road": 1, "field": 1}  # out of training
    # reviewers cannot see the adjudication pages
    assert ann.get(f"/adjudicate/{tid}").status_code == 403
    listing = boss.get("/adjudicate").get_data(as_text=True)
    assert f"/adjudicate/{tid}" in listing and "ann" in listing and "bob" in listing
    page = boss.get(f"/adjudicate/{tid}").get_data(as_text=True)
    assert f"/images/{iid}" in page                      # the image
    assert "0.470" in page and "0.620" in page            # both judges' scores
    assert "ann" in page and "bob" in page                # each reviewer's class
    r = boss.post(f"/adjudicate/{tid}", data={"class": "road_and_field",
                                             "csrf_token": boss.token})
    assert r.status_code == 302
    t = _task(seed, tid)
    assert (t.state, t.final_cls, t.adjudicated_by) == ("done", "road_and_field",
                                                        seed.users["boss"])
    with session_scope(seed.url) as s:
        c = consensus(s)
        assert c.labels[iid] == "road_and_field" and iid in c.human and iid not in c.ties
    # a second decision (another admin who came late) changes nothing
    boss.post(f"/adjudicate/{tid}", data={"class": "field", "csrf_token": boss.token})
    assert _task(seed, tid).final_cls == "road_and_field"
    assert boss.post(f"/adjudicate/{tid}", data={"class": "sky", "csrf_token": boss.token}
                     ).status_code == 400
    assert boss.post("/adjudicate/999999", data={"class": "road", "csrf_token": boss.token}
                     ).status_code == 404


def test_a_label_on_a_task_another_reviewer_holds_is_refused(people, seed):
    _, tid = seed.routed(0.9)
    ann, bob = people("ann", "bob")
    assert _claim(ann)["task_id"] == tid
    r = _label(bob, tid, "road")
    assert r.status_code == 409 and "claimed by another reviewer" in r.json["error"]
    assert _label(ann, tid, "road").status_code == 201
    assert _label(ann, tid, "road").status_code == 200         # a double post is stored once
    assert _label(ann, tid, "field").status_code == 409        # another class: undo first


def test_undo_of_the_second_label_brings_the_task_back_to_its_reviewer(people, seed):
    iid, tid = seed.routed(0.9)
    ann, bob = people("ann", "bob")
    _claim(ann)
    _label(ann, tid, "road")
    _claim(bob)
    _label(bob, tid, "field")
    assert _task(seed, tid).state == "conflict"
    r = bob.post("/review/api/undo", json={})
    assert r.status_code == 200 and r.json["task"]["task_id"] == tid
    t = _task(seed, tid)
    assert (t.state, t.lease_owner, t.final_cls) == ("claimed", "bob", None)
    assert _label(bob, tid, "road").json["label"]["closed"] is True
    assert _task(seed, tid).final_cls == "road"


def test_agreement_needs_two_reviewers_and_then_shows_kappa(people, seed, app2):
    tids = [seed.routed(0.9 - i / 100)[1] for i in range(4)]
    ann, bob = people("ann", "bob")
    boss, = people("boss", role="admin")
    for tid, cls in zip(tids, ["road", "field", "road", "field"]):
        assert _claim(ann)["task_id"] == tid
        _label(ann, tid, cls)
    page = boss.get("/dashboard").get_data(as_text=True)
    assert "Not enough reviewers" in page
    from store import users as store_users
    from webui.security import new_token
    token, digest = new_token()
    with session_scope(seed.url) as s:
        store_users.set_token_hash(s, seed.users["boss"], digest)
    api = app2.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    body = api.get("/api/v1/agreement", headers=auth).json
    assert body["enough_reviewers"] is False and "not enough reviewers" in body["message"]
    assert body["fleiss_kappa"] is None and body["reviewers"][0]["labels"] == 4
    for tid, cls in zip(tids, ["road", "field", "field", "field"]):
        assert _claim(bob)["task_id"] == tid
        _label(bob, tid, cls)
    body = api.get("/api/v1/agreement", headers=auth).json
    # ann r f r f, bob r f f f: p_o = 3/4; ann 2/2, bob 1/3 -> p_e = (2*1 + 2*3)/16 = 1/2
    assert body["enough_reviewers"] is True
    (pair,) = body["pairs"]
    assert pair["reviewers"] == ["ann", "bob"] and pair["items"] == 4
    assert pair["cohen_kappa"] == pytest.approx(0.5)
    assert body["fleiss_kappa"] is not None
    assert body["confusion"]["road"]["field"] == 1 and body["confusion"]["field"]["road"] == 1
    assert body["confusion"]["field"]["field"] == 4  # 2 agreeing items, counted both ways
    by = {r["name"]: r for r in body["reviewers"]}
    assert by["ann"]["agreement_with_final"] == pytest.approx(1.0)  # 3 agreed tasks' finals
    assert by["ann"]["labels_with_final"] == 3
    page = boss.get("/dashboard").get_data(as_text=True)
    assert "Fleiss" in page and "0.500" in page and "ann · bob" in page


def test_with_overlap_a_reviewer_still_labels_only_a_task_they_claimed(people, seed):
    _, tid = seed.routed(0.9)
    ann, bob = people("ann", "bob")
    r = _label(bob, tid, "road")  # never claimed: refused, nothing stored
    assert r.status_code == 409 and "never claimed" in r.json["error"]
    with session_scope(seed.url) as s:
        assert s.scalars(select(Label).where(Label.task_id == tid)).all() == []
    assert _claim(ann)["task_id"] == tid
    assert _label(ann, tid, "road").status_code == 201
    # ann's claim ended with her label; the task is open for a second reviewer, not for bob unclaimed
    assert _label(bob, tid, "road").status_code == 409
    assert _claim(bob)["task_id"] == tid and _label(bob, tid, "road").status_code == 201
    assert _task(seed, tid).state == "done"
