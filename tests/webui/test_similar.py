"""Similar images (FAISS over stored embeddings of real verge-tiny forward passes) and labeling
several at once: shown-only, source=bulk, undoable, counted apart in agreement."""
from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from store import neighbours
from store.db import session_scope
from store.schema import Label, ReviewTask

from .conftest import jpeg, login, make_app

COLORS = [(200, 30, 30), (205, 35, 28), (198, 28, 35), (30, 200, 30), (35, 205, 32),
          (28, 198, 30), (30, 30, 200), (32, 28, 205), (120, 120, 120), (250, 250, 0),
          (0, 250, 250), (250, 0, 250)]


@pytest.fixture
def embedded(seed, tiny_encoder):
    """Routed images whose embeddings the tiny encoder computed, as a worker would store them."""
    from PIL import Image
    import io

    from store.embeddings import save_embeddings

    made = []
    for c in COLORS:
        data = jpeg(c)
        iid, tid = seed.routed(0.5, data=data)
        made.append((iid, tid, data))
    vecs = tiny_encoder.encode_images([Image.open(io.BytesIO(d)).convert("RGB") for *_, d in made])
    with session_scope(seed.url) as s:
        save_embeddings(s, tiny_encoder.key, {iid: v for (iid, _, _), v in zip(made, vecs)})
    return {"ids": [m[0] for m in made], "tasks": [m[1] for m in made], "vecs": vecs,
            "key": tiny_encoder.key}


def _similar(b, task_id, k=5):
    r = b.get(f"/review/api/similar?task_id={task_id}&k={k}")
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.json


def test_neighbours_are_the_exact_nearest_with_scores(as_user, embedded):
    ann = as_user("ann")
    got = _similar(ann, embedded["tasks"][0], k=5)
    vecs, ids = embedded["vecs"], embedded["ids"]
    sims = vecs @ vecs[0]
    order = [ids[i] for i in np.argsort(-sims) if ids[i] != ids[0]][:5]
    assert [im["image_id"] for im in got["images"]] == order
    for im in got["images"]:
        assert im["similarity"] == pytest.approx(float(sims[ids.index(im["image_id"])]), abs=1e-3)
        assert im["head_p_road"] == 0.5 and im["zs_p_road"] == 0.3
        assert im["thumb_url"] == f"/images/{im['image_id']}/thumb"
    assert got["token"]


def test_the_index_keeps_up_with_new_embeddings(as_user, embedded, seed, tiny_encoder,
                                                monkeypatch):
    from PIL import Image
    import io

    from store.embeddings import save_embeddings

    monkeypatch.setattr(neighbours, "REFRESH_S", 0.0)
    ann = as_user("ann")
    _similar(ann, embedded["tasks"][0])  # builds the index
    data = jpeg((201, 31, 30), size=(64, 49))  # a near twin of the first image
    iid, _ = seed.routed(0.5, data=data)  # its prediction id is newer than the index's mark
    vec = tiny_encoder.encode_images([Image.open(io.BytesIO(data)).convert("RGB")])[0]
    with session_scope(seed.url) as s:
        save_embeddings(s, embedded["key"], {iid: vec})
    got = _similar(ann, embedded["tasks"][0], k=3)
    assert iid in [im["image_id"] for im in got["images"]]


def test_bulk_labels_only_what_was_shown_and_undoes(app, as_user, embedded, seed):
    ann, bob = as_user("ann"), as_user("bob")
    shown = _similar(ann, embedded["tasks"][0], k=5)
    ids = [im["image_id"] for im in shown["images"]]
    never = next(i for i in embedded["ids"] if i not in ids and i != embedded["ids"][0])
    # an image the page never showed: refused, and nothing of the request is stored
    r = ann.post("/review/api/bulk", json={"token": shown["token"], "image_ids": ids[:2] + [never],
                                           "class": "road"})
    assert r.status_code == 400 and f"image {never} was not shown to you" in r.json["error"]
    r = bob.post("/review/api/bulk", json={"token": shown["token"], "image_ids": ids[:2],
                                           "class": "road"})
    assert r.status_code == 400 and "another reviewer" in r.json["error"]
    for bad in ({"token": "forged", "image_ids": ids[:1], "class": "road"},
                {"token": shown["token"], "image_ids": [], "class": "road"},
                {"token": shown["token"], "image_ids": ["x"], "class": "road"},
                {"token": shown["token"], "image_ids": ids[:1], "class": "sky"},
                {"image_ids": ids[:1], "class": "road"}):
        r = ann.post("/review/api/bulk", json=bad)
        assert r.status_code == 400 and r.json["error"], bad
    with session_scope(seed.url) as s:
        assert list(s.scalars(select(Label))) == []
    # bob holds one of them on screen: passed over, the rest labeled
    held = bob.post("/review/api/claim", json={"exclude": []}).json["task"]
    r = ann.post("/review/api/bulk", json={"token": shown["token"], "image_ids": ids,
                                           "class": "road"})
    assert r.status_code == 201
    labeled = {x["image_id"] for x in r.json["labeled"]}
    skipped = {x["image_id"]: x["reason"] for x in r.json["skipped"]}
    if held["image_id"] in ids:
        assert skipped == {held["image_id"]: "another reviewer has it on screen"}
    assert labeled | set(skipped) == set(ids)
    with session_scope(seed.url) as s:
        rows = list(s.scalars(select(Label).where(Label.user_id == seed.users["ann"])))
        assert {lab.image_id for lab in rows} == labeled
        assert {lab.source for lab in rows} == {"bulk"} and {lab.cls for lab in rows} == {"road"}
        states = {t.image_id: t.state for t in s.scalars(select(ReviewTask))}
        assert all(states[i] == "done" for i in labeled)
    # a second bulk of the same images: each is "already labeled", nothing doubles
    r = ann.post("/review/api/bulk", json={"token": shown["token"], "image_ids": sorted(labeled),
                                           "class": "field"})
    assert r.json["labeled"] == [] and {x["reason"] for x in r.json["skipped"]} == {
        "you already labeled it"}
    # agreement counts bulk apart
    from store.agreement import summary
    with session_scope(seed.url) as s:
        me = next(x for x in summary(s)["reviewers"] if x["name"] == "ann")
        assert me["bulk_labels"] == len(labeled) and me["labels"] == 0
    # undo the action: labels gone, tasks back in the queue
    label_ids = [x["label_id"] for x in ann.post("/review/api/bulk", json={
        "token": shown["token"], "image_ids": ids, "class": "road"}).json["labeled"]] or []
    assert label_ids == []
    all_ids = [lab.id for lab in rows]
    assert bob.post("/review/api/bulk/undo", json={"label_ids": all_ids}).status_code == 404
    r = ann.post("/review/api/bulk/undo", json={"label_ids": all_ids})
    assert r.status_code == 200 and r.json["undone"] == len(labeled)
    with session_scope(seed.url) as s:
        assert list(s.scalars(select(Label))) == []
        states = {t.image_id: t.state for t in s.scalars(select(ReviewTask))}
        assert all(states[i] == "open" for i in labeled)
    assert ann.post("/review/api/bulk/undo", json={"label_ids": "x"}).status_code == 400


def test_bulk_counts_as_one_of_n_reviews(web_settings, seed, embedded):
    app = make_app(web_settings, reviews_per_task=2)
    seed.user("ann")
    seed.user("bob")
    ann, bob = login(app, "ann"), login(app, "bob")
    shown = _similar(ann, embedded["tasks"][0], k=3)
    ids = [im["image_id"] for im in shown["images"]]
    r = ann.post("/review/api/bulk", json={"token": shown["token"], "image_ids": ids,
                                           "class": "road"})
    assert len(r.json["labeled"]) == 3
    with session_scope(seed.url) as s:
        assert {t.state for t in s.scalars(select(ReviewTask).where(
            ReviewTask.image_id.in_(ids)))} == {"open"}  # one of two reviews
    shown = _similar(bob, embedded["tasks"][0], k=3)
    r = bob.post("/review/api/bulk", json={"token": shown["token"], "image_ids": ids,
                                           "class": "road"})
    assert len(r.json["labeled"]) == 3
    with session_scope(seed.url) as s:
        tasks = list(s.scalars(select(ReviewTask).where(ReviewTask.image_id.in_(ids))))
        assert {(t.state, t.final_cls) for t in tasks} == {("done", "road")}


def test_similar_rejects_bad_input(as_user, embedded):
    ann = as_user("ann")
    assert ann.get("/review/api/similar?task_id=abc").status_code == 400
    assert ann.get("/review/api/similar").status_code == 400
    assert ann.get("/review/api/similar?task_id=999999").status_code == 404
