"""The server side of the review UI for a team, through the Flask test client: logout releases
claims, admins release anybody's, corrections, taking back a skip, the waiting counter, user
accounts (password reset, disable), guidelines, rollback offered only when possible, the
dashboard after a promotion, batch progress and the charts' count axes."""
from __future__ import annotations

import re

from sqlalchemy import select

from store.db import session_scope
from store.labels import consensus
from store.schema import Label, ModelVersion, ReviewSkip, ReviewTask

from .conftest import PASSWORD, csrf_token, login


def held(seed, owner: str) -> list[int]:
    with session_scope(seed.url) as s:
        return sorted(s.scalars(select(ReviewTask.id).where(ReviewTask.state == "claimed",
                                                            ReviewTask.lease_owner == owner)))


def form(browser, path: str, **data):
    return browser.client.post(path, data={"csrf_token": browser.token, **data})


# --------------------------------------------------------------------------- leases
def test_logout_releases_every_claim_of_that_reviewer_on_the_server(as_user, seed):
    tasks = [seed.routed(p)[1] for p in (0.9, 0.8, 0.7)]
    rob, sam = as_user("rob"), as_user("sam")
    a = rob.post("/review/api/claim", json={}).get_json()["task"]["task_id"]
    b = rob.post("/review/api/claim", json={"exclude": [a]}).get_json()["task"]["task_id"]
    c = sam.post("/review/api/claim", json={}).get_json()["task"]["task_id"]
    assert held(seed, "rob") == sorted([a, b]) and c == tasks[2]
    resp = form(rob, "/logout")     # no hand-back from a page first: the server does it
    assert resp.status_code == 302 and held(seed, "rob") == []
    assert held(seed, "sam") == [c]  # somebody else's claim is left alone
    assert rob.post("/review/api/claim", json={}).status_code == 401


def test_admins_release_a_reviewers_claims_from_the_queue_page(as_user, seed):
    for p in (0.9, 0.8):
        seed.routed(p)
    rob, ada = as_user("rob"), as_user("ada", "admin")
    a = rob.post("/review/api/claim", json={}).get_json()["task"]["task_id"]
    rob.post("/review/api/claim", json={"exclude": [a]})
    page = ada.get("/queue").get_data(as_text=True)
    assert 'name="reviewer" value="rob"' in page and "Release 2" in page
    assert "Release" not in rob.get("/queue").get_data(as_text=True)  # admins only
    assert form(rob, "/queue/release", reviewer="rob").status_code == 403
    assert form(ada, "/queue/release").status_code == 400
    resp = form(ada, "/queue/release", reviewer="rob")
    assert resp.status_code == 302 and held(seed, "rob") == []
    assert "Released 2 images held by rob" in ada.get("/queue").get_data(as_text=True)


def test_the_waiting_counter_follows_the_queue(as_user, seed):
    for p in (0.9, 0.8, 0.7):
        seed.routed(p)
    rob, sam = as_user("rob"), as_user("sam")
    assert rob.get("/review/api/waiting").get_json() == {"waiting": 3}
    got = sam.post("/review/api/claim", json={}).get_json()
    assert got["waiting"] == 2          # what nobody is looking at
    sam.post("/review/api/label", json={"task_id": got["task"]["task_id"], "class": "road"})
    assert rob.get("/review/api/waiting").get_json() == {"waiting": 2}
    seed.routed(0.6)                    # a worker routed another image
    assert rob.post("/review/api/claim", json={}).get_json()["waiting"] == 2
    assert 'data-waiting="3"' not in rob.get("/review").get_data(as_text=True)


# --------------------------------------------------------------------------- corrections
def test_relabel_keeps_the_old_label_and_the_new_one_counts(as_user, seed):
    iid, tid = seed.routed(0.9)
    other, _ = seed.routed(0.8)
    rob, sam = as_user("rob"), as_user("sam")
    rob.post("/review/api/claim", json={})
    rob.post("/review/api/label", json={"task_id": tid, "class": "road"})
    resp = rob.post(f"/browse/{iid}/label", json={"class": "field"})
    assert resp.status_code == 200 and resp.get_json() == {
        "image_id": iid, "previous": "road", "label": "field", "changed": True}
    again = rob.post(f"/browse/{iid}/label", json={"class": "field"}).get_json()
    assert again["changed"] is False
    with session_scope(seed.url) as s:
        rows = [(lab.cls, lab.source, lab.task_id) for lab in
                s.scalars(select(Label).where(Label.image_id == iid).order_by(Label.id))]
        assert rows == [("road", "review", tid), ("field", "correction", None)]
        assert consensus(s).labels[iid] == "field"
    # a reviewer corrects only their own label; bad input is refused clearly
    assert sam.post(f"/browse/{iid}/label", json={"class": "road"}).status_code == 409
    assert rob.post(f"/browse/{other}/label", json={"class": "road"}).status_code == 409
    assert rob.post(f"/browse/{iid}/label", json={"class": "sky"}).status_code == 400
    assert rob.post("/browse/99999/label", json={"class": "road"}).status_code == 404
    page = rob.get(f"/browse/{iid}").get_data(as_text=True)
    assert 'id="your-label"' in page and "correction" in page
    assert 'id="your-label"' not in sam.get(f"/browse/{iid}").get_data(as_text=True)


def test_a_correction_changes_the_majority(as_user, seed):
    iid, tid = seed.routed(0.9)
    ann, bob = as_user("ann"), as_user("bob", "admin")
    ann.post("/review/api/claim", json={})
    ann.post("/review/api/label", json={"task_id": tid, "class": "road"})
    # an extra label on the closed task (an admin's override: reviewers label only their claims)
    assert bob.post("/review/api/label", json={"task_id": tid, "class": "field"}).status_code == 201
    with session_scope(seed.url) as s:
        assert iid in consensus(s).ties
    bob.post(f"/browse/{iid}/label", json={"class": "road"})
    with session_scope(seed.url) as s:
        c = consensus(s)
        assert c.labels[iid] == "road" and iid not in c.ties  # bob counts once, with his newest


def test_undo_takes_back_a_skip(as_user, seed):
    _, t1 = seed.routed(0.9)
    _, t2 = seed.routed(0.8)
    rob, sam = as_user("rob"), as_user("sam")
    assert rob.post("/review/api/claim", json={}).get_json()["task"]["task_id"] == t1
    rob.post("/review/api/skip", json={"task_id": t1})
    got = rob.post("/review/api/undo", json={"skip_task_id": t1}).get_json()
    assert got["unskipped"] == t1 and got["task"]["task_id"] == t1
    assert held(seed, "rob") == [t1]
    with session_scope(seed.url) as s:
        assert s.scalars(select(ReviewSkip)).all() == []
    # skipped again, and somebody else took it meanwhile: the skip goes, the task stays theirs
    rob.post("/review/api/skip", json={"task_id": t1})
    assert sam.post("/review/api/claim", json={}).get_json()["task"]["task_id"] == t1
    got = rob.post("/review/api/undo", json={"skip_task_id": t1}).get_json()
    assert got["task"] is None and held(seed, "sam") == [t1]
    assert rob.post("/review/api/undo", json={"skip_task_id": t2}).status_code == 404
    assert rob.post("/review/api/undo", json={"skip_task_id": "x"}).status_code == 400


# --------------------------------------------------------------------------- accounts
def test_admin_resets_a_password_and_the_old_session_ends(app, as_user, seed):
    rob, ada = as_user("rob"), as_user("ada", "admin")
    uid = seed.users["rob"]
    assert form(ada, f"/admin/users/{uid}/password", password="short").status_code == 400
    assert form(rob, f"/admin/users/{uid}/password", password="a new secret").status_code == 403
    assert form(ada, f"/admin/users/{uid}/password", password="a new secret").status_code == 302
    assert rob.get("/review").status_code == 302           # signed out
    assert login(app, "rob", "a new secret")
    c = app.test_client()
    resp = c.post("/login", data={"name": "rob", "password": PASSWORD, "csrf_token": csrf_token(c)})
    assert resp.status_code == 401


def test_admin_disables_and_enables_an_account(app, as_user, seed):
    seed.routed(0.9)
    rob, ada = as_user("rob"), as_user("ada", "admin")
    uid = seed.users["rob"]
    token = re.search(r"vrg_[\w-]+", form(ada, f"/admin/users/{uid}/token").get_data(as_text=True)).group(0)
    rob.post("/review/api/claim", json={})
    assert held(seed, "rob")
    assert form(ada, f"/admin/users/{uid}/disable").status_code == 302
    assert held(seed, "rob") == []                          # their images are back in the queue
    assert rob.get("/review").status_code == 302            # signed out
    api = app.test_client().get("/api/v1/labels", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 401                           # token revoked
    c = app.test_client()
    resp = c.post("/login", data={"name": "rob", "password": PASSWORD, "csrf_token": csrf_token(c)})
    assert resp.status_code == 401                          # and no password opens it
    assert "disabled" in ada.get("/admin/users").get_data(as_text=True)
    assert form(ada, f"/admin/users/{seed.users['ada']}/disable").status_code == 409  # not yourself
    assert form(ada, f"/admin/users/{uid}/enable").status_code == 302
    assert login(app, "rob")                                # the old password works again
    assert form(ada, "/admin/users/9999/disable").status_code == 404


def test_role_change_and_token_replacement_ask_first(as_user, seed):
    seed.user("rob")
    ada = as_user("ada", "admin")
    form(ada, f"/admin/users/{seed.users['rob']}/token")
    page = ada.get("/admin/users").get_data(as_text=True)
    assert 'data-confirm="Make rob {choice}?"' in page
    assert "data-confirm=\"Replace rob's API token?" in page
    assert 'aria-label="Role of rob"' in page


# --------------------------------------------------------------------------- guidelines
def test_guidelines_are_markdown_rendered_safely_and_only_admins_edit(as_user, seed):
    rob, ada = as_user("rob"), as_user("ada", "admin")
    assert "No guidelines have been written yet" in rob.get("/review/guidelines").get_data(as_text=True)
    assert form(rob, "/admin/guidelines", guidelines="# mine").status_code == 403
    assert form(ada, "/admin/guidelines").status_code == 400
    assert form(ada, "/admin/guidelines", guidelines="x" * 50_001).status_code == 400
    source = ("# Roads\n\n* a **track** is a road\n\n<img src=x onerror=alert(1)>\n\n"
              "[bad](javascript:alert(1)) [good](https://example.org/guide)\n\n"
              "| class | when |\n|---|---|\n| road | asphalt |\n")
    assert form(ada, "/admin/guidelines", guidelines=source).status_code == 302
    # kept in the database, where every web server reads it, not in this server's data dir
    from store import guidelines as store_guidelines

    with session_scope(seed.url) as s:
        assert store_guidelines.text(s) == source
    assert not list(seed.settings.data_dir.rglob("guidelines*"))
    for page in (rob.get("/review/guidelines"), rob.get("/review")):
        html = page.get_data(as_text=True)
        assert "<h2>Roads</h2>" in html and "<strong>track</strong>" in html and "<td>asphalt</td>" in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img src=x" not in html  # text
        assert 'href="javascript' not in html
        assert '<a href="https://example.org/guide" rel="noopener noreferrer">good</a>' in html


# --------------------------------------------------------------------------- models, dashboard
def test_rollback_is_offered_only_when_there_is_something_to_roll_back_to(as_user, seed):
    ada = as_user("ada", "admin")
    only = seed.model()
    for path in ("/admin/models", f"/admin/models/{only}"):
        assert "Roll back" not in ada.get(path).get_data(as_text=True)
    with session_scope(seed.url) as s:
        import datetime as dt

        s.get(ModelVersion, only).activated_at = dt.datetime.now(dt.timezone.utc)
        s.get(ModelVersion, only).state = "retired"
    newer = seed.model()
    for path in ("/admin/models", f"/admin/models/{newer}"):
        html = ada.get(path).get_data(as_text=True)
        assert f"Roll back to v{only}" in html and 'data-confirm="Roll back to' in html
    assert 'href="/admin/models#export"' in html  # Export is in the admin menu


def test_the_dashboard_explains_a_new_head_with_no_predictions_yet(as_user, seed):
    import datetime as dt

    old = seed.model(state="retired")
    with session_scope(seed.url) as s:
        s.get(ModelVersion, old).activated_at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    for _ in range(3):
        seed.predict(seed.image(), 0.6, 0.4, "", model_version_id=old)
    new = seed.model()
    html = as_user("rob").get("/dashboard").get_data(as_text=True)
    assert f"v{new} has not scored any image yet" in html
    assert f'href="/dashboard?model={old}"' in html and "3 predictions" in html


def test_batch_pages_refresh_themselves_while_work_is_left(as_user, seed):
    seed.routed(0.9, batch="june")
    rob = as_user("rob")
    html = rob.get("/batches/1").get_data(as_text=True)
    assert 'data-refresh="5"' in html and "0 of 1 routed images labeled" in html
    assert 'data-refresh="10"' in rob.get("/batches").get_data(as_text=True)
    assert 'data-refresh="10"' in rob.get("/queue").get_data(as_text=True)
    assert 'data-refresh="30"' in rob.get("/dashboard").get_data(as_text=True)
    seed.image(batch="broken", status="failed")
    html = rob.get("/batches/2").get_data(as_text=True)
    assert 'data-refresh="0"' in html and 'aria-label="0 of 1 scored, 1 failed"' in html


def test_count_axes_have_whole_number_ticks_and_titles():
    from webui import charts

    svg = str(charts.histogram([0, 1, 0, 1] + [0] * 16))
    ticks = re.findall(r'text-anchor="end">([^<]+)</text>', svg)
    assert ticks == ["0", "1"]                                  # never 0 / 0.5 / 1
    assert ">images</text>" in svg and ">p(road)</text>" in svg  # axis titles
    assert charts._int_ticks(7) == (8, [0, 2, 4, 6, 8])
    assert charts._int_ticks(0) == (1, [0, 1])
    days = str(charts.daily_bars([("2026-06-01", 3), ("2026-06-02", 12)]))
    assert re.findall(r'text-anchor="end">([^<]+)</text>', days) == ["0", "5", "10", "15"]
    assert ">labels</text>" in days
