"""Bad input through the web upload and the JSON API, scored by a real worker process.

Two variants of a corpus of 37 files (tests/corpus.py: truncated, empty, random, HTML and PDF
named as images, a 20000x20000 decompression bomb, HEIC, 16-bit, CMYK, palette, animated, WebP,
a 4 MB EXIF block, EXIF rotation, names with unicode, spaces, quotes, ``../`` and HTML) go in
through both doors. Afterwards every file is scored or failed with a one-line reason, the worker
never restarted, names were stored but never used as paths, and pages show them escaped. The
worker's own Prometheus exporter (multiprocess mode) counted the same images."""
from __future__ import annotations

import io
import re
import socket
import time
import urllib.request

import pytest
from sqlalchemy import func, select

from store.db import session_scope
from store.images import find_batch
from store.schema import Batch, BatchImage, Image
from tests.conftest import TINY
from tests.corpus import upload_corpus

from .conftest import login, make_app

pytestmark = pytest.mark.slow
WEB_BATCH = 'web <b onmouseover="x()">corpus</b>'
API_BATCH = "api-corpus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker_metrics(port: int) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if not s.labels or set(s.labels) == {"le"} and s.labels["le"] == "+Inf"}


def _expected_by_name(corpus):
    # the web and the API both turn a backslash into a slash before storing the name
    return {name.replace("\\", "/"): expected for name, _, expected in corpus}


def test_bad_input_through_the_web_and_the_api_ends_scored_or_failed(web_settings, seed, start_worker,
                                                                     tmp_path):
    from store import users
    from webui.security import new_token

    seed.user("ada", "admin")
    token, digest = new_token()
    with session_scope(seed.url) as s:
        users.set_token_hash(s, seed.users["ada"], digest)
    app = make_app(web_settings)
    ada = login(app, "ada")
    web, api = upload_corpus(0), upload_corpus(1)
    assert len(web) >= 30

    r = ada.client.post("/batches/upload", content_type="multipart/form-data", data={
        "csrf_token": ada.token, "batch": WEB_BATCH,
        "files": [(io.BytesIO(data), name) for name, data, _ in web]})
    assert r.status_code == 302, r.get_data(as_text=True)[:2000]
    page = ada.get(r.headers["Location"]).get_data(as_text=True)
    flashes = re.findall(r'class="flash [a-z]+">([^<]*)', page)
    assert f"{len(web)} files, {len(web)} new" in page and "Skipped" not in page, flashes
    r = app.test_client().post("/api/v1/batches", headers={"Authorization": f"Bearer {token}"},
                               content_type="multipart/form-data", data={
                                   "batch": API_BATCH,
                                   "files": [(io.BytesIO(data), name) for name, data, _ in api]})
    assert r.status_code == 201, r.get_data(as_text=True)
    assert r.json["submitted"] == len(api) and r.json["skipped"] == []
    assert r.json["duplicates"] == 1  # the empty file: one hash, whoever sends it

    port = _free_port()
    worker = start_worker({**TINY, "VERGE_DATA_DIR": str(web_settings.data_dir),
                           "VERGE_WORKER_METRICS_PORT": str(port)})
    deadline = time.monotonic() + 240
    while True:
        with session_scope(seed.url) as s:
            waiting = s.scalar(select(func.count()).select_from(Image).where(
                Image.status.in_(("queued", "registered"))))
        if not waiting:
            break
        assert worker.proc.poll() is None, worker.log.read_text()[-3000:]
        assert time.monotonic() < deadline, \
            f"{waiting} images still queued:\n{worker.log.read_text()[-3000:]}"
        time.sleep(0.5)

    # every file of both batches: scored, or failed with a one-line reason that says why
    with session_scope(seed.url) as s:
        for batch, corpus in ((WEB_BATCH, web), (API_BATCH, api)):
            b = find_batch(s, batch)
            rows = s.execute(select(BatchImage.source_name, Image)
                             .join(Image, Image.id == BatchImage.image_id)
                             .where(BatchImage.batch_id == b.id)).all()
            expected = _expected_by_name(corpus)
            assert sorted(name for name, _ in rows) == sorted(expected), batch
            for name, im in rows:
                want = expected[name]
                if want == "scored":
                    assert im.status == "scored", (batch, name, im.status, im.error)
                    assert im.error is None and im.width and im.height
                else:
                    assert im.status == "failed", (batch, name, im.status)
                    assert im.error and "\n" not in im.error and len(im.error) <= 300, (name, im.error)
                    assert want.split(":", 1)[1] in im.error, (name, im.error)
                # the name is data; the bytes live under their hash
                assert im.storage_key == im.sha256
        sizes = dict(s.execute(select(BatchImage.source_name, Image.width * 1000 + Image.height)
                               .join(Image, Image.id == BatchImage.image_id)).all())
    assert sizes["exif-rotated.jpg"] == 60 * 1000 + 120   # EXIF orientation applied
    assert sizes["exif-4mb.png"] == 48 * 1000 + 64        # 4 MB of EXIF read, rotation too

    # no worker process died on any of it, and the chunk log lines carry task id and id range
    log = worker.log.read_text()
    assert worker.proc.poll() is None
    assert "WorkerLostError" not in log and "exited with" not in log
    chunk_lines = re.findall(
        r"chunk of \d+: scored=\d+ failed=\d+ .* \(task [0-9a-f-]{36}, batch \d+, images \d+-\d+\)", log)
    assert len(chunk_lines) >= 2, log[-3000:]

    # names were never used as paths: nothing was written under any of them
    names = {n.replace("\\", "/").rsplit("/", 1)[-1] for n, _, _ in web + api}
    for p in tmp_path.rglob("*"):
        assert p.name not in names, p
    assert not (tmp_path / "etc").exists() and not (web_settings.data_dir.parent / "etc").exists()
    blobs = [p for p in web_settings.resolved_blob_dir.rglob("*") if p.is_file()]
    assert blobs and all(re.fullmatch(r"[0-9a-f]{64}", p.name) for p in blobs)

    # pages show the names escaped: the batch page's failures table and the browse grid
    with session_scope(seed.url) as s:
        web_id = s.scalar(select(Batch.id).where(Batch.name == WEB_BATCH))
    html = ada.get(f"/batches/{web_id}").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in html and "<script>alert" not in html
    assert "HEIC/AVIF image, unsupported here" in html
    assert "&lt;b onmouseover" in html and '<b onmouseover' not in html
    for path in (f"/browse?batch={web_id}", f"/browse?batch={web_id}&status=failed"):
        html = ada.get(path).get_data(as_text=True)
        assert "<img src=x" not in html and "<script>alert" not in html and "<b onmouseover" not in html
    browse = ada.get(f"/browse?batch={web_id}").get_data(as_text=True)
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in browse
    status = app.test_client().get(f"/api/v1/batches/{API_BATCH}",
                                   headers={"Authorization": f"Bearer {token}"}).json
    assert status["queued"] == 0 and status["scored"] + status["failed"] == status["total"] == len(api)
    assert {f["name"] for f in status["failures"]} == {n for n, _, e in api if e != "scored"}

    # the worker's exporter summed its pool processes' samples (multiprocess mode)
    with session_scope(seed.url) as s:
        scored = s.scalar(select(func.count()).select_from(Image).where(Image.status == "scored"))
        failed = s.scalar(select(func.count()).select_from(Image).where(Image.status == "failed"))
    deadline = time.monotonic() + 15
    while True:
        m = _worker_metrics(port)
        if m.get("verge_images_scored_total") == scored or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert m["verge_images_scored_total"] == scored
    assert m["verge_images_failed_total"] == failed
    assert m["verge_chunk_seconds_count"] >= 2 and m["verge_chunk_seconds_sum"] > 0
