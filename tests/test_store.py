"""The schema, its migration on both databases, blob storage, and registration."""
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select

import migrations
from store.blobs import BlobNotFound, BlobStore, sha256_hex
from store.db import get_engine, session_scope
from store.embeddings import embedding_matrix, save_embeddings, stored_embeddings
from store.images import get_or_create_batch, hashes_by_id, register_images
from store.model_versions import activate_model, active_model
from store.predictions import apply_rescore, point_to_latest, record_predictions
from store.schema import Base, BatchImage, Image, ModelVersion, Prediction


def assert_migrated_matches_schema(url):
    migrations.upgrade(url)
    assert migrations.current_revision(url) == migrations.head_revision()
    with get_engine(url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        tables = set(inspect(conn).get_table_names())
    assert diff == [], f"migrations and store/schema.py disagree: {diff}"
    assert {"batch", "image", "batch_image", "embedding", "prediction", "review_task",
            "model_version", "user_account", "label"} <= tables


def test_migration_on_sqlite_matches_the_schema(tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    assert_migrated_matches_schema(url)
    with get_engine(url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    migrations.downgrade(url, "base")
    with get_engine(url).connect() as conn:
        assert "image" not in inspect(conn).get_table_names()


@pytest.mark.services
def test_migration_on_postgres_matches_the_schema(pg_url):
    assert_migrated_matches_schema(pg_url)


def test_blob_store_is_content_addressed_and_refuses_odd_keys(tmp_path):
    blobs = BlobStore(tmp_path)
    key = blobs.put(b"hello")
    assert key == sha256_hex(b"hello")
    assert (tmp_path / key[:2] / key).read_bytes() == b"hello"
    assert blobs.put(b"hello") == key and blobs.get(key) == b"hello"
    for bad in ("../../etc/passwd", "ab/../cd", key.upper(), "", key[:-1]):
        with pytest.raises(BlobNotFound):
            blobs.get(bad)
    with pytest.raises(BlobNotFound):
        blobs.get("0" * 64)


def _db(tmp_path):
    url = f"sqlite:///{tmp_path}/r.db"
    migrations.upgrade(url)
    return url


def test_registering_the_same_bytes_twice_links_instead_of_duplicating(tmp_path):
    url = _db(tmp_path)
    files = [("a.jpg", "a" * 64, 10), ("b.jpg", "b" * 64, 20), ("copy-of-a.jpg", "a" * 64, 10)]
    with session_scope(url) as s:
        b1 = get_or_create_batch(s, "one", "cli")
        r1 = register_images(s, b1, files)
    assert len(r1.new_ids) == 2 and r1.to_score == r1.new_ids
    assert r1.image_ids[0] == r1.image_ids[2]
    with session_scope(url) as s:
        b2 = get_or_create_batch(s, "two", "cli")
        r2 = register_images(s, b2, files[:1])
        assert r2.new_ids == [] and r2.to_score == []  # already queued: not sent twice
        assert s.scalar(select(func.count()).select_from(Image)) == 2
        assert s.scalar(select(func.count()).select_from(BatchImage).where(BatchImage.batch_id == b2)) == 1
        assert get_or_create_batch(s, "one", "cli") == b1


def test_registered_training_images_are_queued_when_submitted(tmp_path):
    url = _db(tmp_path)
    with session_scope(url) as s:
        r = register_images(s, None, [("t.jpg", "c" * 64, 5)], queue=False)
        assert s.get(Image, r.image_ids[0]).status == "registered"
        b = get_or_create_batch(s, "later", "cli")
        r2 = register_images(s, b, [("t.jpg", "c" * 64, 5)])
        assert r2.to_score == r.image_ids and s.get(Image, r.image_ids[0]).status == "queued"


def test_one_prediction_per_image_and_version_and_one_active_head(tmp_path):
    from sqlalchemy.exc import IntegrityError

    url = _db(tmp_path)
    with session_scope(url) as s:
        iid = register_images(s, None, [("x.jpg", "d" * 64, 1)]).image_ids[0]
        mk = dict(image_id=iid, encoder="e", zs_probs={}, zs_p_road=0.5, predicted_class="road",
                  zs_class="road", routed=False, reasons="")
        s.add(Prediction(model_version_id=None, **mk))
    with pytest.raises(IntegrityError):
        with session_scope(url) as s:
            s.add(Prediction(model_version_id=None, **mk))
    with session_scope(url) as s:
        a = ModelVersion(kind="binary", classes=["field", "road"], encoder="e", path="p", metrics={})
        b = ModelVersion(kind="binary", classes=["field", "road"], encoder="e", path="p", metrics={})
        s.add_all([a, b])
        s.flush()
        activate_model(s, a.id)
        activate_model(s, b.id)
        assert active_model(s).id == b.id
        assert s.get(ModelVersion, a.id).state == "retired"


def _assert_latest_prediction_is_kept_and_browsed(url):
    """image.latest_prediction_id follows record_predictions and apply_rescore (and only moves
    forward), and browse filters on that newest prediction and on each listed reason."""
    from types import SimpleNamespace

    from store.browse import BrowseFilter, browse_images

    migrations.upgrade(url)
    with session_scope(url) as s:
        ids = register_images(s, None, [(f"{i}.jpg", f"{i:064x}", 1) for i in range(3)]).image_ids
        mv = ModelVersion(kind="binary", classes=["field", "road"], encoder="e", path="p",
                          metrics={}, state="active")
        s.add(mv)
        s.flush()
        mv_id = mv.id

    def pred(iid, p_road, version, reasons=""):
        p = 0.55 if p_road is None else p_road
        return dict(image_id=iid, model_version_id=version, encoder="e",
                    head_probs=None if p_road is None else {"field": 1 - p, "road": p},
                    p_road=p_road, zs_probs={"field": 0.45, "road": 0.55}, zs_p_road=0.55,
                    predicted_class="road" if p >= 0.5 else "field", zs_class="road",
                    routed=bool(reasons), reasons=reasons, priority=0.5)

    with session_scope(url) as s:
        record_predictions(s, [pred(ids[0], None, None, "near_threshold,disagreement"),
                                 pred(ids[1], None, None, "audit")], {})
    with session_scope(url) as s:  # the new head re-scores the open tasks' images
        apply_rescore(s, [pred(ids[0], 0.2, mv_id, "disagreement")], mv_id)
    with session_scope(url) as s:
        newest = dict(s.execute(select(Prediction.image_id, func.max(Prediction.id))
                                .group_by(Prediction.image_id)).all())
        first = s.scalar(select(func.min(Prediction.id)).where(Prediction.image_id == ids[0]))
        point_to_latest(s, [SimpleNamespace(image_id=ids[0], id=first)])  # an older row: no-op
    with session_scope(url) as s:
        assert {i: s.get(Image, i).latest_prediction_id for i in ids} == {
            ids[0]: newest[ids[0]], ids[1]: newest[ids[1]], ids[2]: None}

        def browsed(**kw):
            return [(im.id, p.p_road if p else "-") for im, p, _ in browse_images(s, BrowseFilter(**kw))]

        assert browsed() == [(ids[2], "-"), (ids[1], None), (ids[0], 0.2)]
        assert browsed(predicted_class="field") == [(ids[0], 0.2)]
        assert browsed(predicted_class="road") == [(ids[1], None)]
        assert browsed(score_max=0.3) == [(ids[0], 0.2)]
        assert browsed(score_min=0.5) == [(ids[1], None)]  # the head's p(road), else zero-shot's
        assert browsed(reason="disagreement") == [(ids[0], 0.2)]   # the task's refreshed reasons
        assert browsed(reason="near_threshold") == []
        assert browsed(reason="audit", labeled=False) == [(ids[1], None)]
        assert browsed(reason="audi") == [] and browsed(reason="a%") == []


def test_latest_prediction_is_kept_and_browsed_on_sqlite(tmp_path):
    _assert_latest_prediction_is_kept_and_browsed(f"sqlite:///{tmp_path}/p.db")


@pytest.mark.services
def test_latest_prediction_is_kept_and_browsed_on_postgres(pg_url):
    _assert_latest_prediction_is_kept_and_browsed(pg_url)


def _assert_embeddings_and_hashes_read_back_by_id(url):
    """More ids than one IN list may hold (SQLite's parameter limit; one array on Postgres)."""
    import numpy as np

    migrations.upgrade(url)
    n = 2000
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    with session_scope(url) as s:
        ids = register_images(s, None, [(f"{i}.jpg", sha256_hex(str(i).encode()), 1) for i in range(n)],
                                queue=False).image_ids
        save_embeddings(s, "enc/a", dict(zip(ids, vectors)))
        save_embeddings(s, "enc/b", {ids[0]: vectors[1]})  # another encoder's vector is not read
    with session_scope(url) as s:
        wanted = ids[::2] + [10 ** 9]  # an id that does not exist is simply absent
        got = stored_embeddings(s, wanted, "enc/a")
        hashes = hashes_by_id(s, wanted)
        assert stored_embeddings(s, [], "enc/a") == {} and hashes_by_id(s, []) == {}
    assert sorted(got) == sorted(ids[::2])
    assert all(np.array_equal(got[iid], vectors[ids.index(iid)]) for iid in got)
    assert hashes == {iid: sha256_hex(str(ids.index(iid)).encode()) for iid in ids[::2]}
    # retrain's read: one float32 matrix in id order, page by page (a binary COPY per page on Postgres)
    from store import embedding_copy

    pages = []
    with session_scope(url) as s:
        found, X, shas = embedding_matrix(s, wanted, "enc/a", page=300, on_page=lambda: pages.append(1))
        if url.startswith("postgresql"):
            copied = embedding_copy.read_page(s, ids[:5], "enc/a")
            assert copied is not None and copied[0].tolist() == ids[:5]  # the COPY path, not the fallback
            sparse = embedding_copy.read_page(s, ids[::7][:50], "enc/a")  # one id in 7: probed by list
            dense = embedding_copy.read_page(s, [i for i in ids[:60] if i % 5], "enc/a")  # a range scan
            assert sparse[0].tolist() == ids[::7][:50] and dense[0].tolist() == [i for i in ids[:60] if i % 5]
            assert np.array_equal(dense[1], vectors[[ids.index(i) for i in dense[0].tolist()]])
    assert found.tolist() == sorted(ids[::2]) and len(pages) == -(-len(wanted) // 300)
    assert X.dtype == np.float32 and np.array_equal(X, vectors[[ids.index(i) for i in found.tolist()]])
    assert shas == [sha256_hex(str(ids.index(i)).encode()) for i in found.tolist()]


def test_embeddings_and_hashes_read_back_by_id_on_sqlite(tmp_path):
    _assert_embeddings_and_hashes_read_back_by_id(f"sqlite:///{tmp_path}/e.db")


@pytest.mark.services
def test_embeddings_and_hashes_read_back_by_id_on_postgres(pg_url):
    _assert_embeddings_and_hashes_read_back_by_id(pg_url)


def test_a_reason_matches_only_itself_in_a_task_s_reasons(tmp_path):
    """Re-score paging and the browse filter match a task's comma-separated reasons one way
    (store/review.py ``has_reason``): 'audit' is listed in 'near_threshold,audit', not in
    'audit_x' or 'x_audit' (a LIKE '%audit%' would have taken those too)."""
    from store.browse import BrowseFilter, browse_images
    from store.review import open_review_tasks, rescore_page, split_reasons

    url = f"sqlite:///{tmp_path}/reasons.db"
    migrations.upgrade(url)
    reasons = ["near_threshold", "audit", "near_threshold,audit", "audit_x", "x_audit,disagreement",
               "disagreement,audit,near_threshold"]
    with session_scope(url) as s:
        ids = register_images(s, None, [(f"{i}.jpg", f"{i:064x}", 1) for i in range(len(reasons))]).image_ids
        assert open_review_tasks(s, {iid: (r, 0.5) for iid, r in zip(ids, reasons)}) == len(reasons)
    with session_scope(url) as s:
        assert sorted(item.id for item in rescore_page(s, ["audit"], 0, 100)) == [ids[0], ids[3], ids[4]]
        assert sorted(im.id for im, _, _ in browse_images(s, BrowseFilter(reason="audit"))) == \
            [ids[1], ids[2], ids[5]]
    assert split_reasons("near_threshold,audit") == ["near_threshold", "audit"]
    assert split_reasons("") == split_reasons(None) == []
