"""Migrations on a database with rows in every table keep every row, on SQLite and Postgres,
down and up again; the 0005 backfill runs in batches that never hold the image table locked."""
from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

import migrations
from store.db import get_engine, session_scope
from store.locks import acquire
from store.predictions import point_to_latest
from store.schema import (
    Batch, BatchImage, Embedding, Image, Label, ModelVersion, Prediction, ReviewSkip, ReviewTask, User,
)
from tests.races import interleave

TABLES = ("batch", "image", "batch_image", "embedding", "model_version", "prediction", "review_task",
          "review_skip", "user_account", "label", "job_lock")


def seed_every_table(url: str) -> None:
    with session_scope(url) as s:
        b = Batch(name="b1", source="cli")
        u1, u2 = User(name="alice", password_hash="x"), User(name="bob", password_hash="x")
        mv = ModelVersion(kind="binary", classes=["field", "road"], encoder="e", path="/x.pt", metrics={},
                          state="active")
        s.add_all([b, u1, u2, mv])
        s.flush()
        images = [Image(sha256=f"{i:064x}", storage_key=f"{i:064x}", source_name=f"i{i}.jpg",
                        size_bytes=1, status="scored") for i in range(6)]
        s.add_all(images)
        s.flush()
        for im in images:
            s.add(BatchImage(batch_id=b.id, image_id=im.id, source_name=im.source_name))
            s.add(Embedding(image_id=im.id, encoder="e", dim=1, vector=b"\0\0\0\0"))
            p0 = Prediction(image_id=im.id, model_version_id=None, encoder="e", zs_probs={}, zs_p_road=0.5,
                            predicted_class="road", zs_class="road", routed=True, reasons="near_threshold")
            p1 = Prediction(image_id=im.id, model_version_id=mv.id, encoder="e", zs_probs={}, zs_p_road=0.5,
                            predicted_class="road", zs_class="road", routed=True, reasons="near_threshold")
            s.add_all([p0, p1])
            s.flush()
            point_to_latest(s, [p0, p1])
            done = ReviewTask(image_id=im.id, prediction_id=p1.id, state="done", reasons="x", priority=0.5)
            s.add(done)
            s.flush()
            s.add_all([Label(image_id=im.id, user_id=u1.id, task_id=done.id, source="review", cls="road"),
                       Label(image_id=im.id, user_id=None, source="training:/d", cls="road"),
                       ReviewSkip(task_id=done.id, user_id=u2.id),
                       ReviewTask(image_id=im.id, prediction_id=p1.id, state="open", reasons="x",
                                  priority=0.4, resolved_by_version_id=None)])
    acquire(url, "retrain", ttl_s=600)


def counts(url: str) -> dict[str, int]:
    with get_engine(url).connect() as conn:
        present = set(inspect(conn).get_table_names())
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in TABLES if t in present}


def fk_violations(url: str) -> list:
    if not url.startswith("sqlite"):
        return []
    with get_engine(url).connect() as conn:
        return list(conn.exec_driver_sql("PRAGMA foreign_key_check"))


def latest_is_newest(url: str) -> bool:
    with get_engine(url).connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM image WHERE latest_prediction_id IS DISTINCT FROM "
            "(SELECT max(id) FROM prediction p WHERE p.image_id = image.id)"
            if not url.startswith("sqlite") else
            "SELECT count(*) FROM image WHERE latest_prediction_id IS NOT "
            "(SELECT max(id) FROM prediction p WHERE p.image_id = image.id)")).scalar() == 0


def round_trip(url: str) -> None:
    migrations.upgrade(url)
    seed_every_table(url)
    before = counts(url)
    assert all(before[t] > 0 for t in TABLES), before
    for down in ("0004", "0002"):
        migrations.downgrade(url, down)
        after = counts(url)
        assert after == {t: n for t, n in before.items() if t in after}, f"downgrade to {down} lost rows"
        assert fk_violations(url) == []
    migrations.upgrade(url)
    assert counts(url) == {**before, "job_lock": 0}  # the lock table was dropped and re-made
    assert fk_violations(url) == [] and latest_is_newest(url)
    with get_engine(url).connect() as conn:  # ordinary connections still enforce foreign keys
        if url.startswith("sqlite"):
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_sqlite_migrations_keep_every_row_down_and_up(tmp_path):
    round_trip(f"sqlite:///{tmp_path}/m.db")


@pytest.mark.services
def test_postgres_migrations_keep_every_row_down_and_up(pg_url):
    round_trip(pg_url)


def test_a_failed_sqlite_migration_changes_nothing(tmp_path):
    """A migration that fails part-way leaves the database as it was: the next start can run it
    again (embedded installs migrate themselves)."""
    url = f"sqlite:///{tmp_path}/f.db"
    migrations.upgrade(url, "0002")
    with get_engine(url).connect() as conn:  # a row the foreign key check after 0003 refuses
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.exec_driver_sql("INSERT INTO label (image_id, source, cls, created_at) "
                             "VALUES (999, 'x', 'road', '2026-01-01')")
        conn.commit()
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
    with pytest.raises(Exception, match="foreign key"):
        migrations.upgrade(url)
    assert migrations.current_revision(url) == "0002"
    with get_engine(url).connect() as conn:
        assert "job_lock" not in inspect(conn).get_table_names()


@pytest.mark.services
def test_the_0005_backfill_never_holds_the_image_table(pg_url):
    """Batches commit one by one: while the backfill is paused between two of them, another
    session reads and writes image rows without waiting."""
    migrations.upgrade(pg_url, "0004")
    with get_engine(pg_url).begin() as conn:
        conn.execute(text(
            "INSERT INTO image (sha256, storage_key, source_name, size_bytes, status, attempts, created_at) "
            "SELECT md5(g::text) || md5(g::text), md5(g::text), 'i' || g, 1, 'scored', 0, now() "
            "FROM generate_series(1, 25000) g"))
        conn.execute(text(
            "INSERT INTO prediction (image_id, encoder, zs_probs, zs_p_road, predicted_class, zs_class, "
            "routed, reasons, created_at) SELECT id, 'e', '{}', 0.5, 'road', 'road', false, '', now() "
            "FROM image"))
    probe = {}

    def read_and_write_an_image():
        with get_engine(pg_url).connect() as conn:
            conn.execute(text("SET lock_timeout = '3s'"))
            probe["read"] = conn.execute(text("SELECT id FROM image ORDER BY id DESC LIMIT 1")).scalar()
            conn.execute(text("UPDATE image SET attempts = attempts WHERE id = :i"), {"i": probe["read"]})
            conn.commit()

    interleave("migration.0005.batch_done", lambda: migrations.upgrade(pg_url, "0005"),
               read_and_write_an_image).get()
    assert probe["read"]
    assert migrations.current_revision(pg_url) == "0005"
    assert latest_is_newest(pg_url)
