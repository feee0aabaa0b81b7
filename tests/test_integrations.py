"""End to end with a real `verge worker` on Redis + Postgres: a webhook receiver on 127.0.0.1 gets
a signed `batch.done` (and a receiver that is down ends `failed` after its retries), the worker's
log is JSON with the chunk's fields, and the `hf` export with embeddings loads in `datasets`."""
from __future__ import annotations

import json
import time
import urllib.request
import uuid

import numpy as np
import pytest
from sqlalchemy import select

from tests.conftest import TINY, verge
from tests.corpus import jpeg_bytes
from tests.test_deploy import check_metrics, free_port
from tests.webui.test_webhooks import SECRET, Receiver, check_signed, down_url


def wait_for(what: str, check, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.3)


@pytest.mark.slow
@pytest.mark.services
def test_a_worker_on_redis_announces_batch_done_logs_json_and_exports_embeddings(
        tmp_path, pg_url, redis_url, start_worker):
    from store.db import session_scope
    from store.embeddings import stored_embeddings
    from store.schema import BatchImage, WebhookDelivery

    receiver = Receiver()
    down = down_url()
    try:
        env = {**TINY, "VERGE_DATA_DIR": str(tmp_path / "var"), "VERGE_DATABASE_URL": pg_url,
               "VERGE_BROKER_URL": redis_url, "VERGE_QUEUE": f"verge-hooks-{uuid.uuid4().hex[:8]}",
               "VERGE_CHUNK_SIZE": "4", "VERGE_LOG_FORMAT": "json",
               "VERGE_WEBHOOK_URL": f"{receiver.url} {down}", "VERGE_WEBHOOK_SECRET": SECRET,
               "VERGE_WEBHOOK_BACKOFF": "0.2", "VERGE_WEBHOOK_MAX_RETRIES": "2",
               "VERGE_WORKER_METRICS_PORT": str(free_port())}
        verge(env, "db", "upgrade")
        folder = tmp_path / "in"
        folder.mkdir()
        for i in range(10):
            (folder / f"p{i}.jpg").write_bytes(jpeg_bytes(700 + i))
        worker = start_worker(env)
        out = json.loads(verge(env, "submit", str(folder), "--batch", "hooked", "--wait", "--json",
                               "--timeout", "240").stdout)
        assert out["status"]["scored"] == 10

        got = wait_for("batch.done at the receiver", lambda: receiver.got)
        payload = check_signed(got[0], "batch.done")
        assert payload["data"]["batch"] == {"id": out["batch_id"], "name": "hooked", "total": 10,
                                            "scored": 10, "failed": 0, "routed": out["status"]["routed"]}

        def settled():
            with session_scope(pg_url) as s:
                rows = {r.url: (r.state, r.attempts, r.event) for r in s.scalars(select(WebhookDelivery))}
            return rows if rows.get(down, ("pending",))[0] == "failed" else None

        rows = wait_for("the down receiver's delivery to fail", settled)
        assert rows == {receiver.url: ("delivered", 1, "batch.done"), down: ("failed", 3, "batch.done")}
        assert len(receiver.got) == 1  # three chunks, one announcement

        lines = [ln for ln in worker.log.read_text().splitlines() if ln.strip()]
        records = [json.loads(ln) for ln in lines]  # every line is one JSON object
        chunks = [r for r in records if r["message"].startswith("chunk of")]
        assert len(chunks) == 3
        with session_scope(pg_url) as s:
            ids = sorted(s.scalars(select(BatchImage.image_id).where(BatchImage.batch_id == out["batch_id"])))
        covered = []
        for r in chunks:
            assert r["batch_id"] == out["batch_id"] and r["task_id"] and r["level"] == "INFO"
            covered += [i for i in ids if r["first_image"] <= i <= r["last_image"]]
        assert sorted(covered) == ids
        assert any("failed after 3 attempts" in r["message"] for r in records)

        # the worker's own exporter, live, passes promtool's lint
        url = f"http://127.0.0.1:{env['VERGE_WORKER_METRICS_PORT']}/metrics"
        with urllib.request.urlopen(url, timeout=30) as resp:
            page = resp.read().decode()
        assert "verge_images_scored_total 10.0" in page
        checked = check_metrics(page)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        receiver.close()

    datasets = pytest.importorskip("datasets")
    verge(env, "export", "--format", "hf", "--embeddings", "--split", "train=0.7,test=0.3",
          str(tmp_path / "hf"))
    ds = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "hf"), cache_dir=str(tmp_path / "c"))
    rows = [r for split in ds.values() for r in split]
    assert len(rows) == 10
    with session_scope(pg_url) as s:
        encoder = rows[0]["embedding_encoder"]
        stored = stored_embeddings(s, [r["image_id"] for r in rows], encoder)
    for r in rows:
        assert np.allclose(np.asarray(r["embedding"], np.float32), stored[r["image_id"]])
        assert r["label"] == r["predicted_class"] and r["label_source"] == "model"
