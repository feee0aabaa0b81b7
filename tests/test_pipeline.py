"""End to end through real processes: `verge submit` -> broker -> `verge worker` -> database.

The embedded default (SQLite + kombu's filesystem broker) always runs; the Redis + Postgres run
needs the machine's services (and CI requires them)."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from store.blobs import sha256_hex
from store.db import session_scope
from store.schema import Embedding, Image, Prediction, ReviewTask
from tests.conftest import verge
from tests.corpus import bad_corpus, good_corpus, jpeg_bytes
from tests.test_images import EXPECTED_REASON


def counts(url):
    with session_scope(url) as s:
        return {name: s.scalar(select(func.count()).select_from(t)) for name, t in
                [("images", Image), ("predictions", Prediction), ("embeddings", Embedding),
                 ("tasks", ReviewTask)]}


def write_files(folder, files: dict) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(str(folder / name))
    return paths


def test_embedded_default_scores_good_files_and_records_bad_ones(tmp_path, tiny_env, settings, start_worker):
    plain = {f"photo-{i}.jpg": jpeg_bytes(i, (320 + i, 240)) for i in range(6)}
    good, bad = {**plain, **good_corpus()}, bad_corpus()
    paths = write_files(tmp_path / "in", {**good, **bad})
    start_worker(tiny_env)
    out = verge(tiny_env, "submit", *paths, "--batch", "mixed", "--wait", "--timeout", "240", "--json")
    result = json.loads(out.stdout)
    st = result["status"]
    assert (st["total"], st["scored"], st["failed"], st["queued"]) == (len(good) + len(bad), len(good), len(bad), 0)
    reasons = {f["name"].rsplit("/", 1)[-1]: f["reason"] for f in st["failures"]}
    assert set(reasons) == set(bad)
    for name, reason in reasons.items():
        assert EXPECTED_REASON[name] in reason and "\n" not in reason

    url = settings.resolved_database_url
    before = counts(url)
    assert before["predictions"] == before["embeddings"] == len(good)
    with session_scope(url) as s:
        preds = s.scalars(select(Prediction)).all()
        assert all(p.model_version_id is None and p.p_road is None for p in preds)  # no head yet
        assert all(abs(sum(p.zs_probs.values()) - 1) < 1e-4 for p in preds)
        routed = {p.image_id for p in preds if p.routed}
        assert {t.image_id for t in s.scalars(select(ReviewTask))} == routed
        assert all(t.reasons for t in s.scalars(select(ReviewTask)))
        rotated = s.scalar(select(Image).where(Image.source_name.like("%exif-rotated.jpg")))
        assert (rotated.width, rotated.height) == (60, 120)
        ids = [i.id for i in s.scalars(select(Image))]
    assert st["routed"] == len(routed)

    # Re-running the chunk (a redelivery) changes nothing.
    from workers.scoring import Scorer

    report = Scorer(settings).score_chunk(ids)
    assert report.scored == 0 and report.skipped == len(good)
    assert counts(url) == before

    again = json.loads(verge(tiny_env, "submit", *paths, "--batch", "again", "--json").stdout)
    assert again["new"] == 0 and again["enqueued"] == 0 and again["duplicates"] == len(paths)
    assert counts(url) == before


@pytest.mark.services
def test_redis_postgres_the_shared_photos_and_a_live_head_switch(tmp_path, tiny_env, pg_url, redis_url,
                                                                   photos, start_worker):
    env = {**tiny_env, "VERGE_DATABASE_URL": pg_url, "VERGE_BROKER_URL": redis_url,
           "VERGE_QUEUE": f"verge-test-{uuid.uuid4().hex[:8]}", "VERGE_CHUNK_SIZE": "16"}
    verge(env, "db", "upgrade")
    start_worker(env)
    first = json.loads(verge(env, "submit", str(photos), "--batch", "photos", "--wait",
                             "--timeout", "400", "--json").stdout)
    st = first["status"]
    assert first["new"] == 153 and first["chunks"] == 10
    assert (st["total"], st["scored"], st["failed"], st["queued"]) == (153, 153, 0, 0)
    assert any("README.md" in s["path"] for s in first["skipped"])  # folders take images only

    status = json.loads(verge(env, "status", "--json").stdout)
    assert status["head"] is None
    assert "no head is active" in verge(env, "status").stdout
    b = status["batches"][0]
    assert b["queued"] + b["scored"] + b["failed"] == b["total"] == 153
    assert status["totals"]["open_review_tasks"] == b["routed"] == st["routed"]
    assert counts(pg_url)["predictions"] == 153

    again = json.loads(verge(env, "submit", str(photos), "--batch", "photos-again", "--json").stdout)
    assert again["new"] == 0 and again["enqueued"] == 0 and again["duplicates"] == 153
    assert counts(pg_url)["images"] == 153

    # A batch with a truncated JPEG and a text file: those two fail, the rest are scored.
    road = sorted((photos / "roads").iterdir())[0].read_bytes()
    mixed = write_files(tmp_path / "mixed", {
        "truncated.jpg": road[: len(road) // 3], "notes.txt": b"not an image\n",
        **{f"new-{i}.jpg": jpeg_bytes(100 + i) for i in range(4)}})
    out = json.loads(verge(env, "submit", *mixed, "--batch", "mixed", "--wait", "--timeout", "200",
                           "--json").stdout)["status"]
    assert (out["total"], out["scored"], out["failed"]) == (6, 4, 2)
    assert {f["name"].rsplit("/", 1)[-1] for f in out["failures"]} == {"truncated.jpg", "notes.txt"}

    # Train the seed's head: every embedding is reused (CLIP is not recomputed) ...
    trained = verge(env, "train", "binary", str(photos)).stdout
    assert "epoch 7:" in trained and "153 embeddings reused, 0 computed" in trained
    status = json.loads(verge(env, "status", "--json").stdout)
    assert status["head"]["kind"] == "binary"
    # ... and the running worker scores the next batch with it, without a restart.
    fresh = write_files(tmp_path / "fresh", {f"fresh-{i}.jpg": jpeg_bytes(200 + i) for i in range(5)})
    verge(env, "submit", *fresh, "--batch", "fresh", "--wait", "--timeout", "200")
    with session_scope(pg_url) as s:
        preds = s.scalars(select(Prediction).join(Image).where(Image.source_name.like("%fresh-%"))).all()
    assert len(preds) == 5
    assert all(p.model_version_id == status["head"]["id"] and 0 <= p.p_road <= 1 for p in preds)


def test_an_image_whose_deliveries_keep_dying_ends_failed_instead_of_looping(settings, tiny_encoder):
    """Each delivery counts an attempt before it starts; a delivery that finishes records a
    prediction. An image with VERGE_MAX_ATTEMPTS unfinished deliveries behind it has killed its
    worker that often: the next delivery records it as failed and scores the rest."""
    import migrations
    from sqlalchemy import update

    from store.blobs import BlobStore
    from store.images import register_images
    from workers.scoring import Scorer

    url = settings.resolved_database_url
    migrations.upgrade(url)
    blobs = BlobStore(settings.resolved_blob_dir)
    files = [(f"p{i}.jpg", blobs.put(jpeg_bytes(300 + i)), 1) for i in range(3)]
    with session_scope(url) as s:
        ids = register_images(s, None, files).image_ids
        s.execute(update(Image).where(Image.id == ids[0]).values(attempts=settings.max_attempts))
        s.execute(update(Image).where(Image.id == ids[1]).values(attempts=settings.max_attempts - 1))
    report = Scorer(settings, encoder=tiny_encoder).score_chunk(ids)
    assert (report.scored, report.failed) == (2, 1)
    with session_scope(url) as s:
        poison = s.get(Image, ids[0])
        assert poison.status == "failed"
        assert f"interrupted {settings.max_attempts} times" in poison.error and "VERGE_MAX_ATTEMPTS" in poison.error
        assert s.get(Image, ids[1]).status == "scored"


def test_the_malformed_corpus_through_the_command_line(tmp_path, tiny_env, settings, start_worker):
    """The same ≥ 30-file corpus the web upload and API tests use, submitted with `verge submit`
    (names that cannot be file names on disk -- with '/' -- are left to those tests)."""
    from tests.corpus import upload_corpus

    corpus = [(n, d, e) for n, d, e in upload_corpus(variant=7) if "/" not in n and n not in (".", "..")]
    assert len(corpus) >= 30
    folder = tmp_path / "corpus"
    folder.mkdir()
    paths = []
    for name, data, _ in corpus:
        (folder / name).write_bytes(data)
        paths.append(str(folder / name))
    start_worker(tiny_env)
    st = json.loads(verge(tiny_env, "submit", *paths, "--batch", "corpus", "--wait", "--timeout", "300",
                          "--json").stdout)["status"]
    assert st["queued"] == 0 and st["scored"] + st["failed"] == st["total"]
    reasons = {Path(f["name"]).name: f["reason"] for f in st["failures"]}
    # identical bytes are one image, recorded in the batch under the first name they came with
    first = {}
    for name, data, _ in corpus:
        first.setdefault(sha256_hex(data), name)
    for name, data, expected in corpus:
        recorded = first[sha256_hex(data)]
        if expected == "scored":
            assert recorded not in reasons, f"{name} failed: {reasons.get(recorded)}"
        else:
            word = expected.split(":", 1)[1]
            assert word in reasons[recorded], f"{name}: {reasons[recorded]!r} lacks {word!r}"
    assert all("\n" not in r for r in reasons.values())
