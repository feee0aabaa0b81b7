"""Claim, label, skip, undo, leases: the review page's JSON calls and the rules behind them."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from store.db import session_scope
from store.schema import Label, ReviewTask, utcnow


def _task(seed, task_id) -> ReviewTask:
    with session_scope(seed.url) as s:
        return s.get(ReviewTask, task_id)


def _labels(seed, **where) -> list[Label]:
    with session_scope(seed.url) as s:
        q = select(Label).order_by(Label.id)
        for k, v in where.items():
            q = q.where(getattr(Label, k) == v)
        return list(s.scalars(q))


def _expire(seed, task_id):
    with session_scope(seed.url) as s:
        s.execute(update(ReviewTask).where(ReviewTask.id == task_id)
                  .values(lease_expires_at=utcnow() - dt.timedelta(seconds=1)))


def test_the_review_page_shows_keys_and_the_queue(as_user, seed):
    seed.routed(0.9)
    html = as_user("ann").get("/review").get_data(as_text=True)
    for text in ("<kbd>1</kbd>", "Field", "<kbd>2</kbd>", "Road", "<kbd>3</kbd>", "Road &amp; field",
                 "<kbd>S</kbd>", "<kbd>U</kbd>", "review.js"):
        assert text in html
    assert 'data-waiting="1"' in html


def test_claim_gives_the_most_uncertain_first_with_scores_and_reasons(as_user, seed):
    _, low = seed.routed(0.2)
    iid, high = seed.routed(0.95, p_road=0.52, zs_p_road=0.31, reasons="near_threshold,disagreement",
                            name="fields/north.jpg", batch="june")
    ann = as_user("ann")
    body = ann.post("/review/api/claim", json={}).json
    t = body["task"]
    assert t["task_id"] == high and t["image_id"] == iid and body["lease_s"] == 600
    assert t["reasons"] == ["near_threshold", "disagreement"]
    assert t["prediction"]["head_p_road"] == 0.52 and t["prediction"]["zs_p_road"] == 0.31
    assert t["source_name"] == "fields/north.jpg" and t["batches"] == ["june"]
    assert t["image_url"] == f"/images/{iid}"
    task = _task(seed, high)
    assert task.state == "claimed" and task.lease_owner == "ann"
    # asking again (a reload) gives the same claim back, not a second one
    assert ann.post("/review/api/claim", json={}).json["task"]["task_id"] == high
    # the prefetch asks for another one, excluding what is on screen
    assert ann.post("/review/api/claim", json={"exclude": [high]}).json["task"]["task_id"] == low
    assert ann.post("/review/api/claim", json={"exclude": [high, low]}).json["task"] is None


def test_two_reviewers_never_get_the_same_task(as_user, seed):
    ids = {seed.routed(p)[1] for p in (0.9, 0.8, 0.7)}
    ann, bob = as_user("ann"), as_user("bob")
    a = ann.post("/review/api/claim", json={}).json["task"]["task_id"]
    b = bob.post("/review/api/claim", json={}).json["task"]["task_id"]
    a2 = ann.post("/review/api/claim", json={"exclude": [a]}).json["task"]["task_id"]
    assert len({a, b, a2}) == 3 and {a, b, a2} == ids
    assert bob.post("/review/api/claim", json={"exclude": [b]}).json["task"] is None


def test_labeling_stores_who_what_how_long_and_closes_the_task(as_user, seed):
    iid, tid = seed.routed(0.9)
    ann = as_user("ann")
    ann.post("/review/api/claim", json={})
    r = ann.post("/review/api/label", json={"task_id": tid, "class": "road_and_field", "time_on_item_ms": 2345})
    assert r.status_code == 201
    assert r.json["label"]["closed"] is True and r.json["label"]["duplicate"] is False
    [lab] = _labels(seed)
    assert (lab.image_id, lab.user_id, lab.task_id, lab.source, lab.cls, lab.time_on_item_ms) == \
        (iid, seed.users["ann"], tid, "review", "road_and_field", 2345)
    assert _task(seed, tid).state == "done"


def test_a_double_posted_label_is_stored_once_and_a_changed_one_conflicts(as_user, seed):
    _, tid = seed.routed(0.9)
    ann = as_user("ann")
    ann.post("/review/api/claim", json={})
    first = ann.post("/review/api/label", json={"task_id": tid, "class": "road", "time_on_item_ms": 900})
    again = ann.post("/review/api/label", json={"task_id": tid, "class": "road", "time_on_item_ms": 950})
    assert first.status_code == 201 and again.status_code == 200
    assert again.json["label"]["duplicate"] is True
    assert again.json["label"]["label_id"] == first.json["label"]["label_id"]
    other = ann.post("/review/api/label", json={"task_id": tid, "class": "field"})
    assert other.status_code == 409 and "undo" in other.json["error"]
    assert [lab.cls for lab in _labels(seed)] == ["road"]


def test_bad_label_requests_are_refused_clearly(as_user, seed):
    _, tid = seed.routed(0.9)
    ann = as_user("ann")
    assert ann.post("/review/api/label", json={"task_id": tid, "class": "Road"}).status_code == 400
    assert ann.post("/review/api/label", json={"task_id": "x", "class": "road"}).status_code == 400
    assert ann.post("/review/api/label", json={"class": "road"}).status_code == 400
    r = ann.post("/review/api/label", json={"task_id": 999, "class": "road"})
    assert r.status_code == 404 and "999" in r.json["error"]
    assert ann.post("/review/api/label", data="[1]", content_type="application/json").status_code == 400
    assert _labels(seed) == []


def test_an_expired_lease_returns_the_task_to_the_queue(as_user, seed):
    _, tid = seed.routed(0.9)
    ann, bob = as_user("ann"), as_user("bob")
    assert ann.post("/review/api/claim", json={}).json["task"]["task_id"] == tid
    assert bob.post("/review/api/claim", json={}).json["task"] is None
    _expire(seed, tid)
    assert bob.post("/review/api/claim", json={}).json["task"]["task_id"] == tid
    assert _task(seed, tid).lease_owner == "bob"


def test_a_late_label_after_someone_else_reclaimed_is_kept_as_an_extra_label(as_user, seed):
    iid, tid = seed.routed(0.9)
    ann, bob = as_user("ann"), as_user("bob")
    ann.post("/review/api/claim", json={})
    _expire(seed, tid)
    bob.post("/review/api/claim", json={})
    late = ann.post("/review/api/label", json={"task_id": tid, "class": "field"})
    assert late.status_code == 201 and late.json["label"]["closed"] is False
    task = _task(seed, tid)
    assert task.state == "claimed" and task.lease_owner == "bob"  # bob's claim untouched
    r = bob.post("/review/api/label", json={"task_id": tid, "class": "road"})
    assert r.json["label"]["closed"] is True
    assert [(lab.user_id, lab.cls) for lab in _labels(seed, image_id=iid)] == \
        [(seed.users["ann"], "field"), (seed.users["bob"], "road")]
    assert _task(seed, tid).state == "done"


def test_a_late_label_nobody_reclaimed_still_closes_the_task(as_user, seed):
    _, tid = seed.routed(0.9)
    ann = as_user("ann")
    ann.post("/review/api/claim", json={})
    _expire(seed, tid)
    r = ann.post("/review/api/label", json={"task_id": tid, "class": "field"})
    assert r.json["label"]["closed"] is True and _task(seed, tid).state == "done"


def test_a_label_on_a_task_never_claimed_is_refused_unless_an_admin_overrides(as_user, seed):
    iid, tid = seed.routed(0.9)
    _, open_tid = seed.routed(0.5)
    ann, bob, ada = as_user("ann"), as_user("bob"), as_user("ada", "admin")
    ann.post("/review/api/claim", json={})
    ann.post("/review/api/label", json={"task_id": tid, "class": "road"})
    # bob never claimed either task: not the done one, not the open one
    for task in (tid, open_tid):
        r = bob.post("/review/api/label", json={"task_id": task, "class": "road_and_field"})
        assert r.status_code == 409 and "never claimed by you" in r.json["error"], r.json
    assert _task(seed, open_tid).state == "open"
    # an admin may, and the label says so
    r = ada.post("/review/api/label", json={"task_id": tid, "class": "road_and_field"})
    assert r.status_code == 201 and r.json["label"]["closed"] is False
    assert r.json["label"]["admin_override"] is True
    assert sorted((lab.cls, lab.admin_override) for lab in _labels(seed, image_id=iid)) == \
        [("road", False), ("road_and_field", True)]
    # ann's own label, claimed: no override; ann correcting it is the usual conflict (undo first)
    again = ann.post("/review/api/label", json={"task_id": tid, "class": "field"})
    assert again.status_code == 409 and "undo that label first" in again.json["error"]


def test_skip_hands_the_task_to_others_but_not_back_to_the_skipper(as_user, seed):
    _, first = seed.routed(0.9)
    _, second = seed.routed(0.5)
    ann, bob = as_user("ann"), as_user("bob")
    assert ann.post("/review/api/claim", json={}).json["task"]["task_id"] == first
    assert ann.post("/review/api/skip", json={"task_id": first}).json == {"skipped": first}
    assert _task(seed, first).state == "open"
    assert ann.post("/review/api/claim", json={}).json["task"]["task_id"] == second
    assert bob.post("/review/api/claim", json={}).json["task"]["task_id"] == first
    assert ann.post("/review/api/skip", json={"task_id": 424242}).status_code == 404


def test_undo_removes_the_label_and_gives_the_task_back(as_user, seed):
    iid, tid = seed.routed(0.9)
    _, other = seed.routed(0.5)
    ann = as_user("ann")
    ann.post("/review/api/claim", json={})
    lab = ann.post("/review/api/label", json={"task_id": tid, "class": "road"}).json["label"]
    ann.post("/review/api/claim", json={})  # the next one is on screen now
    r = ann.post("/review/api/undo", json={"label_id": lab["label_id"]})
    assert r.status_code == 200
    assert r.json["undone"] == {"label_id": lab["label_id"], "task_id": tid, "image_id": iid, "class": "road"}
    assert r.json["task"]["task_id"] == tid
    assert _labels(seed) == []
    task = _task(seed, tid)
    assert task.state == "claimed" and task.lease_owner == "ann"
    # label it again, differently this time
    again = ann.post("/review/api/label", json={"task_id": tid, "class": "field"})
    assert again.status_code == 201 and again.json["label"]["closed"] is True
    # without a label id, undo takes the newest label; then nothing is left to undo
    assert ann.post("/review/api/undo", json={}).json["undone"]["class"] == "field"
    assert ann.post("/review/api/undo", json={}).status_code == 404


def test_undo_touches_only_your_own_labels(as_user, seed):
    _, tid = seed.routed(0.9)
    ann, bob = as_user("ann"), as_user("bob")
    ann.post("/review/api/claim", json={})
    lab = ann.post("/review/api/label", json={"task_id": tid, "class": "road"}).json["label"]
    assert bob.post("/review/api/undo", json={"label_id": lab["label_id"]}).status_code == 404
    assert len(_labels(seed)) == 1


def test_undoing_an_extra_label_leaves_the_task_alone(as_user, seed):
    _, tid = seed.routed(0.9)
    ann, bob = as_user("ann"), as_user("bob", "admin")  # bob's extra label is an admin's override
    ann.post("/review/api/claim", json={})
    ann.post("/review/api/label", json={"task_id": tid, "class": "road"})
    bob.post("/review/api/label", json={"task_id": tid, "class": "field"})
    r = bob.post("/review/api/undo", json={})
    assert r.status_code == 200 and r.json["task"] is None
    assert _task(seed, tid).state == "done"
    assert [lab.cls for lab in _labels(seed)] == ["road"]


def test_renew_and_release(as_user, seed):
    _, tid = seed.routed(0.9)
    ann, bob = as_user("ann"), as_user("bob")
    ann.post("/review/api/claim", json={})
    before = _task(seed, tid).lease_expires_at
    assert ann.post("/review/api/renew", json={"task_ids": [tid]}).json["held"] == [tid]
    assert _task(seed, tid).lease_expires_at >= before
    assert bob.post("/review/api/renew", json={"task_ids": [tid]}).json["held"] == []
    assert bob.post("/review/api/release", json={"task_ids": [tid]}).json["released"] == 0
    # the page's pagehide beacon posts a form, not JSON
    r = ann.client.post("/review/api/release", data={"csrf_token": ann.token, "task_ids": str(tid)})
    assert r.json["released"] == 1 and _task(seed, tid).state == "open"


def test_release_with_leases_ends_only_the_lease_the_page_saw(as_user, seed):
    """A reloaded page re-claims its tasks (a later lease); the old page's beacon, naming the
    lease it saw, then releases nothing. Naming the current lease releases as before."""
    import datetime as dt
    import json

    _, tid = seed.routed(0.9)
    ann = as_user("ann")
    old = ann.post("/review/api/claim", json={}).json["task"]["lease_expires_at"]
    again = ann.post("/review/api/claim", json={}).json["task"]  # the reload: own claim, renewed
    at = dt.datetime.fromisoformat
    assert again["task_id"] == tid and at(again["lease_expires_at"]) > at(old)
    beacon = {"csrf_token": ann.token, "task_ids": str(tid), "leases": json.dumps({str(tid): old})}
    assert ann.client.post("/review/api/release", data=beacon).json["released"] == 0
    assert _task(seed, tid).state == "claimed"
    renewed = ann.post("/review/api/renew", json={"task_ids": [tid]}).json["leases"][str(tid)]
    assert at(renewed) >= at(again["lease_expires_at"])
    beacon["leases"] = json.dumps({str(tid): renewed})
    assert ann.client.post("/review/api/release", data=beacon).json["released"] == 1
    assert _task(seed, tid).state == "open"
    for bad in ("not json", json.dumps([tid]), json.dumps({str(tid): "yesterday"}),
                json.dumps({"x": old})):
        r = ann.client.post("/review/api/release", data={**beacon, "leases": bad})
        assert r.status_code == 400 and "'leases'" in r.json["error"]
