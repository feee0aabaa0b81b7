"""Re-scoring after a promotion past 65,535 open tasks on Postgres (more parameters than one
statement may carry): it pages through the queue in bounded id ranges and finishes."""
from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select, text

import migrations
from models.heads import THREE_CLASS
from store.db import get_engine, session_scope
from store.model_versions import active_model
from store.pausepoints import pausing
from store.schema import Image, Prediction, ReviewTask
from tests.test_learning import KEY, cluster_data
from tests.test_races import add_head

pytestmark = [pytest.mark.services, pytest.mark.slow]

OPEN_TASKS = 66_000


def bulk_queue(url: str, n: int) -> None:
    """n scored images, each with a stored embedding and an open review task: set-based INSERTs
    and one COPY, through the real (migrated) schema."""
    X, _ = cluster_data(200)
    rng = np.random.default_rng(7)
    vectors = X[rng.integers(0, len(X), n)] + rng.normal(scale=0.05, size=(n, X.shape[1])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with get_engine(url).begin() as conn:
        conn.execute(text(
            "INSERT INTO image (sha256, storage_key, source_name, size_bytes, status, attempts, created_at) "
            "SELECT md5(g::text) || md5(g::text), md5(g::text), 'i' || g, 1, 'scored', 0, now() "
            "FROM generate_series(1, :n) g"), {"n": n})
        ids = [i for (i,) in conn.execute(text("SELECT id FROM image ORDER BY id"))]
        cur = conn.connection.dbapi_connection.cursor()
        with cur.copy("COPY embedding (image_id, encoder, dim, vector) FROM STDIN") as copy:
            for iid, v in zip(ids, vectors):
                copy.write_row((iid, KEY, v.shape[0], v.astype("<f4").tobytes()))
        conn.execute(text(
            "INSERT INTO review_task (image_id, state, reasons, priority, created_at, updated_at) "
            "SELECT id, 'open', 'near_threshold', 0.5, now(), now() FROM image"))


def test_rescore_pages_past_65535_open_tasks_on_postgres(tiny_env, pg_url, tiny_encoder):
    from verge.settings import Settings
    from workers.scoring import Scorer

    migrations.upgrade(pg_url)
    settings = Settings.from_env({**tiny_env, "VERGE_DATABASE_URL": pg_url})
    bulk_queue(pg_url, OPEN_TASKS)
    X, y = cluster_data(40)
    v = add_head(settings, THREE_CLASS, X, y)
    pages = []
    with pausing("rescore.before_write", lambda: pages.append(1)):
        report = Scorer(settings, encoder=tiny_encoder).rescore_open_tasks()
    assert report["rescored"] == OPEN_TASKS
    assert len(pages) > 1  # written page by page, never all at once
    with session_scope(pg_url) as s:
        assert s.scalar(select(func.count()).select_from(Prediction)
                        .where(Prediction.model_version_id == v)) == OPEN_TASKS
        stale = s.scalar(select(func.count()).select_from(ReviewTask)
                         .join(Image, Image.id == ReviewTask.image_id)
                         .join(Prediction, Prediction.id == Image.latest_prediction_id)
                         .where(ReviewTask.state == "open", Prediction.model_version_id != v))
        assert stale == 0
        resolved = s.scalar(select(func.count()).select_from(ReviewTask).where(
            ReviewTask.state == "resolved", ReviewTask.resolved_by_version_id == v))
        assert resolved == report["resolved"] > 0
        assert active_model(s).id == v
    assert Scorer(settings, encoder=tiny_encoder).rescore_open_tasks()["rescored"] == 0  # idempotent
