"""Gold images: handed out unannounced, answered only by their reviewer, measured, and a
reviewer below the bar is flagged and kept out of training until an admin clears them."""
from __future__ import annotations

from sqlalchemy import select

from store import gold as store_gold
from store.db import session_scope
from store.labels import consensus
from store.schema import GoldTask, ReviewTask

from .conftest import login, make_app


def _gold(seed, cls="road", p_road=0.9, n=1) -> list[int]:
    ids = []
    for _ in range(n):
        iid = seed.image(batch="gold")
        seed.predict(iid, p_road, 0.8, reasons="")
        with session_scope(seed.url) as s:
            store_gold.mark(s, [(iid, cls)], "folder:test", None)
        ids.append(iid)
    return ids


def test_a_gold_task_looks_like_any_other_and_only_its_reviewer_may_answer(web_settings, seed):
    gold_iid, = _gold(seed)
    _, normal = seed.routed(0.9)
    app = make_app(web_settings, gold_fraction=1.0)
    seed.user("ann")
    seed.user("bob")
    ann, bob = login(app, "ann"), login(app, "bob")
    t = ann.post("/review/api/claim", json={}).json["task"]
    assert t["image_id"] == gold_iid
    with session_scope(seed.url) as s:
        assert s.get(GoldTask, t["task_id"]).user_id == seed.users["ann"]
    # bob's claim: the ordinary task (he never gets ann's gold task, not even after it expires)
    other = bob.post("/review/api/claim", json={}).json["task"]
    assert other["task_id"] == normal
    assert set(t) == set(other)  # the same fields; nothing says gold
    assert t["reasons"] == ["audit"] and 0 <= t["priority"] <= 1
    assert t["state"] == "claimed" and t["lease_owner"] == "ann"
    r = bob.post("/review/api/label", json={"task_id": t["task_id"], "class": "road"})
    assert r.status_code == 409 and r.json["error"] == f"task {t['task_id']} was not handed to you"
    r = ann.post("/review/api/label", json={"task_id": t["task_id"], "class": "field"})
    assert r.status_code == 201 and r.json["label"]["closed"]
    acc = store_gold.accuracy
    with session_scope(seed.url) as s:
        assert acc(s)[seed.users["ann"]] == {"answers": 1, "right": 0, "accuracy": 0.0}
        assert consensus(s).labels[gold_iid] == "road"  # the known class trains, not ann's answer
    # ann answered that gold image: she is not given it again (and bob holds the other task)
    assert ann.post("/review/api/claim", json={}).json["task"] is None


def test_no_gold_images_means_ordinary_claims_at_the_default_fraction(app, seed, as_user):
    _, tid = seed.routed(0.9)
    assert app.config["VERGE_SETTINGS"].gold_fraction == 0.05
    assert as_user("ann").post("/review/api/claim", json={}).json["task"]["task_id"] == tid


def test_a_released_gold_task_is_retired_not_passed_on(web_settings, seed):
    _gold(seed, n=1)
    app = make_app(web_settings, gold_fraction=1.0)
    seed.user("ann")
    seed.user("bob")
    ann, bob = login(app, "ann"), login(app, "bob")
    t = ann.post("/review/api/claim", json={}).json["task"]
    assert ann.post("/review/api/release", json={"task_ids": [t["task_id"]]}).json["released"] == 1
    got = bob.post("/review/api/claim", json={}).json["task"]
    assert got is not None and got["task_id"] != t["task_id"]  # a fresh gold task for bob
    with session_scope(seed.url) as s:
        assert s.get(ReviewTask, t["task_id"]).state == "skipped"


def test_a_careless_reviewer_is_flagged_kept_out_of_training_and_cleared(web_settings, seed):
    golds = _gold(seed, "road", n=3)
    iid, tid = seed.routed(0.9)
    app = make_app(web_settings, gold_fraction=1.0, gold_min_items=3, gold_min_accuracy=0.5)
    seed.user("ann")
    seed.user("boss", "admin")
    ann, boss = login(app, "ann"), login(app, "boss")
    for _ in range(3):
        t = ann.post("/review/api/claim", json={}).json["task"]
        assert t["image_id"] in golds
        assert ann.post("/review/api/label", json={"task_id": t["task_id"], "class": "field"}
                        ).status_code == 201
    # gold exhausted for ann: the ordinary task, which she labels too
    t = ann.post("/review/api/claim", json={}).json["task"]
    assert t["task_id"] == tid
    ann.post("/review/api/label", json={"task_id": tid, "class": "field"})
    with session_scope(seed.url) as s:
        assert store_gold.flagged(s) == {seed.users["ann"]}
        assert iid not in consensus(s).labels  # her only label stays out of training
    page = boss.get("/admin/users").get_data(as_text=True)
    assert "flagged" in page and "labels kept out of training" in page and "0 %" in page
    assert ann.get("/admin/users").status_code == 403
    r = boss.post(f"/admin/gold/clear/{seed.users['ann']}", data={"csrf_token": boss.token})
    assert r.status_code == 302
    with session_scope(seed.url) as s:
        assert store_gold.flagged(s) == set()
        assert consensus(s).labels[iid] == "field"
        assert store_gold.accuracy(s) == {}  # her count restarts
    assert boss.post("/admin/gold/clear/99999", data={"csrf_token": boss.token}).status_code == 404


def test_an_adjudicated_task_becomes_gold(web_settings, seed):
    iid, tid = seed.routed(0.9)
    app = make_app(web_settings, reviews_per_task=2, gold_fraction=0.0)
    for n in ("ann", "bob"):
        seed.user(n)
    seed.user("boss", "admin")
    ann, bob, boss = login(app, "ann"), login(app, "bob"), login(app, "boss")
    for b, cls in ((ann, "road"), (bob, "field")):
        b.post("/review/api/claim", json={})
        b.post("/review/api/label", json={"task_id": tid, "class": cls})
    # not adjudicated yet: refused
    boss.post(f"/admin/gold/from-task/{tid}", data={"csrf_token": boss.token})
    with session_scope(seed.url) as s:
        assert store_gold.count(s) == 0
    boss.post(f"/adjudicate/{tid}", data={"class": "road", "csrf_token": boss.token})
    assert "Use as a gold image" in boss.get(f"/adjudicate/{tid}").get_data(as_text=True)
    boss.post(f"/admin/gold/from-task/{tid}", data={"csrf_token": boss.token})
    with session_scope(seed.url) as s:
        from store.schema import GoldImage
        g = s.get(GoldImage, iid)
        assert (g.cls, g.source) == ("road", f"adjudicated:{tid}")


def test_verge_gold_add_marks_a_folders_images_with_its_classes(tmp_path, tiny_env):
    from tests.conftest import verge

    from .conftest import jpeg
    from store.db import dispose_engines
    from verge.settings import Settings

    for cls, colors in (("road", [(10, 10, 10), (20, 20, 20)]), ("fields", [(0, 200, 0)])):
        (tmp_path / "g" / cls).mkdir(parents=True)
        for i, c in enumerate(colors):
            (tmp_path / "g" / cls / f"{i}.jpg").write_bytes(jpeg(c))
    out = verge(tiny_env, "gold", "add", str(tmp_path / "g")).stdout
    assert "3 gold images" in out
    url = Settings.from_env(tiny_env).resolved_database_url
    with session_scope(url) as s:
        from store.schema import GoldImage
        assert sorted(g.cls for g in s.scalars(select(GoldImage))) == ["field", "road", "road"]
    dispose_engines()
    bad = verge(tiny_env, "gold", "add", str(tmp_path / "nowhere"), check=False)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        f"verge: error: {tmp_path / 'nowhere'} is not a folder"]
    (tmp_path / "empty").mkdir()
    bad = verge(tiny_env, "gold", "add", str(tmp_path / "empty"), check=False)
    assert bad.returncode != 0 and "has no class folders" in bad.stderr
