"""Admins download the export (CSV or JSON lines, all images or one batch) from the web UI: the
same rows as `verge export`, streamed as an attachment."""
from __future__ import annotations

import csv
import io
import json

from sqlalchemy import select

from store.db import session_scope
from store.schema import BatchImage, Image, Label, Prediction

from .conftest import jpeg


def _seed_two_batches(seed):
    """Batch "june": two routed images (one labeled twice), one failed; batch "july": one image
    that is also in june (a duplicate upload), one scored and not routed."""
    seed.user("rev")
    seed.user("rev2")
    a, ta = seed.routed(0.9, p_road=0.55, zs_p_road=0.2, batch="june", name="a, with comma.jpg")
    b, tb = seed.routed(0.8, p_road=0.45, zs_p_road=0.7, reasons="near_threshold,disagreement",
                        batch="june", name='quote "b".jpg')
    bad = seed.image(data=b"not an image", batch="june", name="broken.jpg", status="failed")
    shared = jpeg((1, 2, 3))
    c = seed.image(data=shared, batch="july", name="ünïcødé c.jpg")
    seed.predict(c, 0.95, 0.9)
    seed.image(data=shared, batch="june", name="c-again.jpg")  # same bytes: linked to june too
    with session_scope(seed.url) as s:
        s.get(Image, bad).error = "text file, not an image"
        s.add_all([Label(image_id=a, user_id=seed.users["rev"], task_id=ta, source="review", cls="road"),
                   Label(image_id=a, user_id=seed.users["rev2"], task_id=None, source="api", cls="road"),
                   Label(image_id=b, user_id=seed.users["rev"], task_id=tb, source="review",
                         cls="road_and_field")])
    return {"a": a, "b": b, "bad": bad, "c": c}


def _db_rows(url, batch_name=None):
    """What the database says, independently of the export code."""
    with session_scope(url) as s:
        stmt = select(Image).order_by(Image.id)
        if batch_name:
            from store.schema import Batch

            stmt = (stmt.join(BatchImage, BatchImage.image_id == Image.id)
                    .join(Batch, Batch.id == BatchImage.batch_id).where(Batch.name == batch_name))
        out = {}
        for im in s.scalars(stmt):
            pred = s.scalar(select(Prediction).where(Prediction.image_id == im.id)
                            .order_by(Prediction.id.desc()).limit(1))
            labels = sorted(s.scalars(select(Label.cls).where(Label.image_id == im.id,
                                                               Label.user_id.is_not(None))))
            out[im.id] = {"sha256": im.sha256, "source_name": im.source_name, "status": im.status,
                          "error": im.error, "p_road": pred.p_road if pred else None,
                          "predicted": pred.predicted_class if pred else None,
                          "reasons": pred.reasons if pred else None, "labels": labels}
        return out


def test_jsonl_and_csv_round_trip_matches_the_database(as_user, seed):
    ids = _seed_two_batches(seed)
    ada = as_user("ada", "admin")
    expected = _db_rows(seed.url)
    assert len(expected) == 4

    r = ada.get("/admin/export?format=jsonl")
    assert r.status_code == 200 and r.is_streamed
    assert r.mimetype == "application/x-ndjson"
    assert r.headers["Content-Disposition"] == 'attachment; filename="verge-export.jsonl"'
    rows = [json.loads(line) for line in r.get_data(as_text=True).splitlines()]
    assert [row["image_id"] for row in rows] == sorted(expected)
    for row in rows:
        want = expected[row["image_id"]]
        assert (row["sha256"], row["source_name"], row["status"], row["error"]) == (
            want["sha256"], want["source_name"], want["status"], want["error"])
        assert row["head_p_road"] == want["p_road"] and row["predicted_class"] == want["predicted"]
        assert row["reasons"] == want["reasons"]
        assert sorted(h["class"] for h in row["human_labels"]) == want["labels"]
    by_id = {row["image_id"]: row for row in rows}
    assert by_id[ids["a"]]["final_label"] == "road" and by_id[ids["a"]]["final_label_source"] == "human"
    assert by_id[ids["b"]]["final_label"] == "road_and_field"
    assert by_id[ids["c"]]["final_label_source"] == "model" and by_id[ids["c"]]["batches"] == ["july", "june"]
    assert by_id[ids["bad"]]["predicted_class"] is None

    r = ada.get("/admin/export?format=csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert r.headers["Content-Disposition"] == 'attachment; filename="verge-export.csv"'
    table = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert [int(t["image_id"]) for t in table] == sorted(expected)
    for t in table:
        want = expected[int(t["image_id"])]
        assert (t["sha256"], t["source_name"], t["status"]) == (want["sha256"], want["source_name"],
                                                                want["status"])
        assert (float(t["head_p_road"]) if t["head_p_road"] else None) == want["p_road"]
        labels = sorted(x.split("=")[1] for x in t["human_labels"].split(";") if x)
        assert labels == want["labels"]
    # the CSV says the same as the JSON lines
    assert [t["final_label"] or None for t in table] == [row["final_label"] for row in rows]


def test_one_batch_by_id_or_name(as_user, seed):
    ids = _seed_two_batches(seed)
    ada = as_user("ada", "admin")
    from store.images import find_batch

    with session_scope(seed.url) as s:
        july = find_batch(s, "july").id
    r = ada.get(f"/admin/export?format=jsonl&batch={july}")
    assert r.headers["Content-Disposition"] == f'attachment; filename="verge-export-batch-{july}.jsonl"'
    assert [json.loads(x)["image_id"] for x in r.get_data(as_text=True).splitlines()] == [ids["c"]]
    june = [int(t["image_id"]) for t in csv.DictReader(io.StringIO(
        ada.get("/admin/export?format=csv&batch=june").get_data(as_text=True)))]
    assert june == sorted(_db_rows(seed.url, "june")) == sorted([ids["a"], ids["b"], ids["bad"], ids["c"]])


def test_bad_requests_and_reviewers_are_refused(as_user, seed):
    _seed_two_batches(seed)
    ada = as_user("ada", "admin")
    r = ada.get("/admin/export?format=xml")
    assert r.status_code == 400 and "csv or jsonl" in r.get_data(as_text=True)
    r = ada.get("/admin/export?format=csv&batch=nope")
    assert r.status_code == 404 and "no batch named or numbered" in r.get_data(as_text=True)
    r = ada.get("/admin/export?format=csv&batch=../../etc/passwd")
    assert r.status_code == 404 and "root:" not in r.get_data(as_text=True)
    assert as_user("rob").get("/admin/export?format=csv").status_code == 403
    # the download is linked from the models page and from a batch's page
    assert "/admin/export?format=csv" in ada.get("/admin/models").get_data(as_text=True)
    assert "/admin/export?" in ada.get("/batches/1").get_data(as_text=True)


def test_the_export_of_an_empty_database_is_a_header_or_nothing(as_user):
    ada = as_user("ada", "admin")
    text = ada.get("/admin/export").get_data(as_text=True)  # csv by default
    assert text.strip().split(",")[:3] == ["image_id", "sha256", "source_name"]
    assert ada.get("/admin/export?format=jsonl").get_data(as_text=True) == ""
