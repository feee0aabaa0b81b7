"""The JSON API under /api/v1: bearer tokens, the review rules, batches and labels."""
from __future__ import annotations

from sqlalchemy import func, select

from store.db import session_scope
from store.schema import BatchImage, Image, Label

from .conftest import jpeg, login, png


def _token(seed, name: str) -> dict:
    from store import users
    from webui.security import new_token

    token, digest = new_token()
    with session_scope(seed.url) as s:
        users.set_token_hash(s, seed.users[name], digest)
    return {"Authorization": f"Bearer {token}"}


def test_tokens_are_required_and_stored_hashed(client, seed):
    seed.user("ann")
    auth = _token(seed, "ann")
    assert client.get("/api/v1/labels").status_code == 401
    assert client.get("/api/v1/labels", headers={"Authorization": "Bearer vrg_wrong"}).status_code == 401
    assert client.get("/api/v1/labels", headers={"Authorization": "Basic YW5uOng="}).status_code == 401
    assert client.get("/api/v1/labels", headers=auth).status_code == 200
    from store import users

    with session_scope(seed.url) as s:
        stored = users.user_by_name(s, "ann").token_hash
    assert stored and auth["Authorization"].split()[1] not in stored and len(stored) == 64


def test_a_browser_session_does_not_open_the_api(app, seed):
    seed.user("ann", "admin")
    browser = login(app, "ann")
    assert browser.get("/api/v1/labels").status_code == 401
    assert browser.post("/api/v1/tasks/next", json={}).status_code == 401


def test_a_new_token_replaces_the_old(client, seed):
    seed.user("ann")
    old = _token(seed, "ann")
    new = _token(seed, "ann")
    assert client.get("/api/v1/labels", headers=old).status_code == 401
    assert client.get("/api/v1/labels", headers=new).status_code == 200


def test_next_task_label_and_list_labels(client, seed):
    seed.user("ann")
    auth = _token(seed, "ann")
    iid, tid = seed.routed(0.9, batch="june")
    t = client.post("/api/v1/tasks/next", headers=auth).json["task"]
    assert t["task_id"] == tid and t["image_url"] == f"/api/v1/images/{iid}"
    img = client.get(t["image_url"], headers=auth)
    assert img.status_code == 200 and img.mimetype == "image/jpeg"
    r = client.post("/api/v1/labels", headers=auth,
                    json={"task_id": tid, "class": "field", "time_on_item_ms": 1200})
    assert r.status_code == 201 and r.json["label"]["closed"] is True and r.json["label"]["source"] == "api"
    again = client.post("/api/v1/labels", headers=auth, json={"task_id": tid, "class": "field"})
    assert again.status_code == 200 and again.json["label"]["duplicate"] is True
    assert client.post("/api/v1/labels", headers=auth, json={"task_id": tid, "class": "road"}).status_code == 409
    assert client.post("/api/v1/tasks/next", headers=auth).json["task"] is None
    listed = client.get("/api/v1/labels", headers=auth).json
    assert [(lab["task_id"], lab["class"], lab["user"], lab["source"]) for lab in listed["labels"]] == \
        [(tid, "field", "ann", "api")]
    assert listed["next_after"] is None
    bid = client.get("/api/v1/batches/june", headers=auth).json["batch_id"]
    assert len(client.get(f"/api/v1/labels?batch={bid}", headers=auth).json["labels"]) == 1
    assert client.get(f"/api/v1/labels?batch={bid + 100}", headers=auth).json["labels"] == []
    assert client.get("/api/v1/labels?user=nobody", headers=auth).status_code == 404


def test_list_labels_pages_by_id(client, seed):
    seed.user("ann")
    auth = _token(seed, "ann")
    for p in (0.9, 0.8, 0.7):
        _, tid = seed.routed(p)
        assert client.post("/api/v1/tasks/next", headers=auth).json["task"]["task_id"] == tid
        client.post("/api/v1/labels", headers=auth, json={"task_id": tid, "class": "road"})
    page1 = client.get("/api/v1/labels?limit=2", headers=auth).json
    assert len(page1["labels"]) == 2 and page1["next_after"] == page1["labels"][-1]["label_id"]
    page2 = client.get(f"/api/v1/labels?limit=2&after={page1['next_after']}", headers=auth).json
    assert len(page2["labels"]) == 1


def test_skip_through_the_api(client, seed):
    seed.user("ann")
    auth = _token(seed, "ann")
    _, tid = seed.routed(0.9)
    client.post("/api/v1/tasks/next", headers=auth)
    assert client.post(f"/api/v1/tasks/{tid}/skip", headers=auth).json == {"skipped": tid}
    assert client.post("/api/v1/tasks/next", headers=auth).json["task"] is None


def test_submit_a_batch_and_read_its_status(client, seed, web_settings):
    seed.user("ada", "admin")
    seed.user("rob")
    auth = _token(seed, "ada")
    files = [(_io(jpeg((1, 2, 3))), "a.jpg"), (_io(png()), "b.png"), (_io(jpeg((1, 2, 3))), "again.jpg")]
    r = client.post("/api/v1/batches", headers=auth, data={"batch": "api-june", "files": files},
                    content_type="multipart/form-data")
    assert r.status_code == 201, r.json
    out = r.json
    assert out["batch"] == "api-june" and out["submitted"] == 3 and out["new"] == 2 and out["duplicates"] == 1
    assert out["enqueued"] == 2 and out["skipped"] == []
    st = client.get("/api/v1/batches/api-june", headers=auth).json
    assert st["total"] == 2 and st["queued"] == 2 and st["source"] == "api"
    assert client.get(f"/api/v1/batches/{st['batch_id']}", headers=auth).json["batch"] == "api-june"
    assert client.get("/api/v1/batches/nope", headers=auth).status_code == 404
    with session_scope(seed.url) as s:
        assert s.scalar(select(func.count()).select_from(Image)) == 2
        assert s.scalar(select(func.count()).select_from(BatchImage)) == 2
    # the chunks went to the (filesystem) broker for the workers
    assert any(web_settings.broker_dir.rglob("*.msg"))
    # reviewers may not submit
    rob = _token(seed, "rob")
    assert client.post("/api/v1/batches", headers=rob, data={"files": [(_io(jpeg()), "c.jpg")]},
                       content_type="multipart/form-data").status_code == 403
    # no files: a clear 400
    r = client.post("/api/v1/batches", headers=auth, data={}, content_type="multipart/form-data")
    assert r.status_code == 400 and "no files" in r.json["error"]


def test_labels_from_the_api_and_the_page_follow_one_rule(app, client, seed):
    seed.user("ann")
    auth = _token(seed, "ann")
    _, tid = seed.routed(0.9)
    client.post("/api/v1/tasks/next", headers=auth)
    client.post("/api/v1/labels", headers=auth, json={"task_id": tid, "class": "road"})
    page = login(app, "ann")
    r = page.post("/review/api/label", json={"task_id": tid, "class": "road"})
    assert r.status_code == 200 and r.json["label"]["duplicate"] is True
    with session_scope(seed.url) as s:
        assert s.scalar(select(func.count()).select_from(Label)) == 1


def _io(data: bytes):
    import io

    return io.BytesIO(data)
