"""What a short Redis visibility timeout may and may not redeliver: a scoring chunk is
idempotent, but a retrain running longer than the timeout must never be handed to a second
worker (it is acknowledged when it starts; its database lock guards the rest)."""
from __future__ import annotations

import re
import time
import uuid

import pytest

from tests.conftest import verge


@pytest.mark.services
@pytest.mark.slow
def test_a_retrain_longer_than_the_visibility_timeout_runs_once(tiny_env, pg_url, redis_url, start_worker):
    env = {**tiny_env, "VERGE_DATABASE_URL": pg_url, "VERGE_BROKER_URL": redis_url,
           "VERGE_QUEUE": f"verge-retrain-{uuid.uuid4().hex[:8]}", "VERGE_VISIBILITY_TIMEOUT": "2"}
    verge(env, "db", "upgrade")
    # two pool processes: a redelivered retrain would find the second one free
    worker = start_worker({**env, "VERGE_TEST_PAUSE_RETRAIN": "12"}, concurrency=2)
    from verge.settings import Settings
    from workers.app import app, configure

    configure(Settings.from_env(env))
    task_id = app.send_task("verge.retrain", args=["test"], queue=env["VERGE_QUEUE"]).id
    deadline = time.monotonic() + 120
    pattern = re.compile(rf"Task verge\.retrain\[{task_id}\] (received|succeeded)")
    while "succeeded" not in [m.group(1) for m in pattern.finditer(worker.log.read_text())]:
        assert time.monotonic() < deadline, worker.log.read_text()
        time.sleep(0.5)
    time.sleep(3)  # a redelivery would have shown up by now (restore runs every second)
    events = [m.group(1) for m in pattern.finditer(worker.log.read_text())]
    assert events == ["received", "succeeded"], worker.log.read_text()
    assert "not enough labeled images" in worker.log.read_text()  # it ran, once, to the end
