"""Uploading a batch from the browser goes through submit_items, with its dedup and limits."""
from __future__ import annotations

import io

from sqlalchemy import select

from store.db import session_scope
from store.schema import Batch, BatchImage, Image

from .conftest import jpeg, login, make_app, png


def _files(*pairs):
    return [(io.BytesIO(data), name) for data, name in pairs]


def test_an_admin_uploads_files_and_a_folder(as_user, seed, web_settings):
    ada = as_user("ada", "admin")
    data = {"batch": "june <survey>", "csrf_token": ada.token,
            "files": _files((jpeg((10, 20, 30)), "one.jpg"), (png(), "two.png"),
                            (jpeg((10, 20, 30)), "one-again.jpg")),
            "folder": _files((jpeg((99, 1, 1)), "trip/north/three.jpg"), (b"notes", "trip/notes.txt"),
                             (b"junk", "trip/.DS_Store"))}
    r = ada.client.post("/batches/upload", data=data, content_type="multipart/form-data")
    assert r.status_code == 302, r.get_data(as_text=True)
    page = ada.get(r.headers["Location"]).get_data(as_text=True)
    assert "june &lt;survey&gt;" in page and "<survey>" not in page
    assert "4 files, 3 new, 1 already known, 3 sent for scoring" in page
    assert "Skipped trip/notes.txt: not an image file name" in page
    assert "Skipped trip/.DS_Store: hidden file" in page
    with session_scope(seed.url) as s:
        batch = s.scalar(select(Batch).where(Batch.name == "june <survey>"))
        assert batch.source == "web"
        names = sorted(s.scalars(select(BatchImage.source_name).where(BatchImage.batch_id == batch.id)))
        assert names == ["one.jpg", "trip/north/three.jpg", "two.png"]
        assert set(s.scalars(select(Image.status))) == {"queued"}
    assert any(web_settings.broker_dir.rglob("*.msg"))


def test_a_file_over_the_per_file_limit_gets_a_clear_413_and_nothing_is_stored(web_settings, seed):
    from store import users
    from webui.security import new_token

    seed.user("ada", "admin")
    app = make_app(web_settings, max_file_bytes=2000)
    ada = login(app, "ada")
    big = jpeg((5, 5, 5), size=(400, 400)) + b"\0" * 5000
    r = ada.client.post("/batches/upload", data={"csrf_token": ada.token, "batch": "limits", "files": _files(
        (big, "big <b>.jpg"), (jpeg(), "small.jpg"))}, content_type="multipart/form-data")
    assert r.status_code == 413
    text = r.get_data(as_text=True)
    assert "a file is larger than the per-file limit of 2.0 KB (VERGE_MAX_FILE_BYTES)" in text
    assert "big &lt;b&gt;.jpg" in text and "<b>" not in text  # the name, escaped
    assert "nothing was submitted" in text
    # the API answers the same in JSON, naming every file (a few) over the limit
    token, digest = new_token()
    with session_scope(seed.url) as s:
        users.set_token_hash(s, seed.users["ada"], digest)
    r = app.test_client().post("/api/v1/batches", headers={"Authorization": f"Bearer {token}"},
                               data={"batch": "limits", "files": _files(
                                   (big, "one.jpg"), (big + b"1", "two.jpg"), (jpeg(), "ok.jpg"))},
                               content_type="multipart/form-data")
    assert r.status_code == 413
    assert r.json["error"].startswith("2 files are larger than the per-file limit of 2.0 KB")
    assert "one.jpg (" in r.json["error"] and "two.jpg (" in r.json["error"]
    with session_scope(seed.url) as s:
        assert s.scalar(select(Image)) is None and s.scalar(select(Batch)) is None
    blobs = web_settings.resolved_blob_dir
    assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*"))
    # at the limit is fine
    exact = jpeg((7, 7, 7))
    app2 = make_app(web_settings, max_file_bytes=len(exact))
    ada2 = login(app2, "ada")
    r = ada2.client.post("/batches/upload", data={"csrf_token": ada2.token, "files": _files((exact, "exact.jpg"))},
                         content_type="multipart/form-data")
    assert r.status_code == 302


def test_an_upload_over_the_request_limit_gets_a_clear_413(web_settings, seed):
    seed.user("ada", "admin")
    app = make_app(web_settings, max_upload_bytes=10_000)
    ada = login(app, "ada")
    r = ada.client.post("/batches/upload", data={"csrf_token": ada.token, "files": _files(
        (b"\xff\xd8\xff" + b"\0" * 20_000, "huge.jpg"))}, content_type="multipart/form-data")
    assert r.status_code == 413
    text = r.get_data(as_text=True)
    assert "larger than the limit of 10.0 KB" in text and "VERGE_MAX_UPLOAD_BYTES" in text
    with session_scope(seed.url) as s:
        assert s.scalar(select(Image)) is None
    # the API says the same in JSON
    from store import users
    from webui.security import new_token

    token, digest = new_token()
    with session_scope(seed.url) as s:
        users.set_token_hash(s, seed.users["ada"], digest)
    r = app.test_client().post("/api/v1/batches", headers={"Authorization": f"Bearer {token}"},
                               data={"files": _files((b"\0" * 20_000, "huge.jpg"))},
                               content_type="multipart/form-data")
    assert r.status_code == 413 and "VERGE_MAX_UPLOAD_BYTES" in r.json["error"]


def test_an_empty_upload_is_a_clear_400(as_user):
    ada = as_user("ada", "admin")
    r = ada.client.post("/batches/upload", data={"csrf_token": ada.token, "batch": "x"},
                        content_type="multipart/form-data")
    assert r.status_code == 400 and "no files were uploaded" in r.get_data(as_text=True)
    r = ada.client.post("/batches/upload", data={"csrf_token": ada.token, "batch": "x" * 201,
                                                 "files": _files((jpeg(), "a.jpg"))},
                        content_type="multipart/form-data")
    assert r.status_code == 400 and "at most 200 characters" in r.get_data(as_text=True)


def test_a_broker_that_is_down_fails_in_one_sentence(web_settings, seed):
    seed.user("ada", "admin")
    app = make_app(web_settings, broker_url="redis://127.0.0.1:1/0")
    ada = login(app, "ada")
    r = ada.client.post("/batches/upload", data={"csrf_token": ada.token, "files": _files((jpeg(), "a.jpg"))},
                        content_type="multipart/form-data")
    assert r.status_code == 503
    assert "cannot reach the broker" in r.get_data(as_text=True)
    with session_scope(seed.url) as s:
        assert s.scalar(select(Image)) is None
