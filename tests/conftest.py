"""Shared fixtures: settings for the tiny encoder, throwaway Postgres databases, Redis queues,
real worker processes, an S3 server. The services themselves live in tests/services.py (shared
with bench/); what is the tests' own is here: the fixtures, and the one decision ``need`` makes
-- a service that is absent skips the test with a reason, except under
VERGE_REQUIRE_SERVICES=1 (CI), where absence fails it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import services
from tests.corpus import SHARED_PHOTOS
from tests.services import Worker, port_open, verge  # noqa: F401  (the tests import them from here)

REQUIRE = os.environ.get("VERGE_REQUIRE_SERVICES") == "1"
PG_ADMIN = os.environ.get("VERGE_TEST_PG_ADMIN", services.PG_ADMIN_DEFAULT)
REDIS_URL = os.environ.get("VERGE_TEST_REDIS", services.REDIS_DEFAULT)
TINY = {"VERGE_ENCODER": "verge-tiny", "VERGE_PRETRAINED": "none"}


def need(what: str, available: bool, how: str) -> None:
    if available:
        return
    if REQUIRE:
        pytest.fail(f"{what} is required (VERGE_REQUIRE_SERVICES=1) but not available: {how}")
    pytest.skip(f"{what} not available: {how}")


def need_postgres() -> None:
    host, port = services.host_port(PG_ADMIN, 5432)
    need("PostgreSQL", services.postgres_available(PG_ADMIN), f"nothing listens on {host}:{port}")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Tests never inherit a developer's VERGE_* settings."""
    for key in list(os.environ):
        if key.startswith("VERGE_") and key != "VERGE_REQUIRE_SERVICES":
            monkeypatch.delenv(key)


@pytest.fixture
def tiny_env(tmp_path) -> dict:
    return {**TINY, "VERGE_DATA_DIR": str(tmp_path / "var")}


@pytest.fixture
def settings(tiny_env):
    from verge.settings import Settings

    return Settings.from_env(tiny_env)


@pytest.fixture(scope="session")
def tiny_encoder():
    from models.encoder import EncoderSpec, load_encoder

    return load_encoder(EncoderSpec("verge-tiny", "none"), "cpu")


@pytest.fixture
def photos() -> Path:
    need("the shared fields-roads photos", SHARED_PHOTOS.is_dir(), f"no folder {SHARED_PHOTOS}")
    return SHARED_PHOTOS


@pytest.fixture
def pg_url():
    """A throwaway Postgres database (not migrated), dropped afterwards."""
    need_postgres()
    with services.ThrowawayDatabase(PG_ADMIN, "verge_test") as db:
        yield db.url


@pytest.fixture
def redis_url():
    host, port = services.host_port(REDIS_URL, 6379)
    need("Redis", services.redis_available(REDIS_URL), f"nothing listens on {host}:{port}")
    return REDIS_URL


@pytest.fixture
def start_worker(tmp_path):
    """``start_worker(env, concurrency=1)``: a real `verge worker`, stopped at teardown."""
    started = []

    def start(env: dict, concurrency: int = 1) -> Worker:
        w = Worker(env, tmp_path / f"worker-{len(started)}.log", concurrency)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


class S3Server(services.S3Server):
    """moto's standalone server (tests/services.py), or a skip (a failure under CI) without it."""

    def __init__(self, log: Path, env: dict | None = None):
        need("moto_server (pip install 'moto[server]')", services.MOTO_SERVER.exists(),
             f"no {services.MOTO_SERVER}")
        super().__init__(log, env)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch) -> S3Server:
    """The S3 server, with this process's AWS variables pointing at it (subprocesses get
    ``s3.env`` explicitly)."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    from store import s3 as s3_module

    s3_module._clients.clear()  # clients remember the endpoint they were made for
    return s3_server


@pytest.fixture
def amqp_url():
    need("RabbitMQ", port_open("127.0.0.1", 5672), "nothing listens on 127.0.0.1:5672")
    return "amqp://guest:guest@127.0.0.1:5672//"
