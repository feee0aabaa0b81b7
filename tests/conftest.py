"""Shared fixtures: settings for the tiny encoder, throwaway Postgres databases, Redis queues,
real worker processes. Services absent -> skip with a reason, except under
VERGE_REQUIRE_SERVICES=1 (CI), where absence fails the test."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.corpus import SHARED_PHOTOS

REQUIRE = os.environ.get("VERGE_REQUIRE_SERVICES") == "1"
PG_ADMIN = os.environ.get("VERGE_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("VERGE_TEST_REDIS", "redis://127.0.0.1:6379/0")
TINY = {"VERGE_ENCODER": "verge-tiny", "VERGE_PRETRAINED": "none"}


def need(what: str, available: bool, how: str) -> None:
    if available:
        return
    if REQUIRE:
        pytest.fail(f"{what} is required (VERGE_REQUIRE_SERVICES=1) but not available: {how}")
    pytest.skip(f"{what} not available: {how}")


def port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


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
    """A throwaway Postgres database, dropped afterwards."""
    need("PostgreSQL", port_open("127.0.0.1", 5432), "nothing listens on 127.0.0.1:5432")
    import psycopg

    name = f"verge_test_{uuid.uuid4().hex[:10]}"
    admin = PG_ADMIN.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    yield url
    from store.db import dispose_engines

    dispose_engines()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url():
    need("Redis", port_open("127.0.0.1", 6379), "nothing listens on 127.0.0.1:6379")
    return REDIS_URL


def verge(env: dict, *args: str, check: bool = True, timeout: float = 300, input: str | None = None):
    """Run the real `verge` command line with the given environment."""
    full_env = {**os.environ, **env}
    proc = subprocess.run([sys.executable, "-m", "verge", *args], env=full_env, capture_output=True,
                          text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"verge {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


class Worker:
    """A real `verge worker` process; stopped (or killed) at teardown."""

    def __init__(self, env: dict, log: Path, concurrency: int = 1):
        self.log = log
        self.fh = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "verge", "worker", "-c", str(concurrency), "--loglevel", "INFO"],
            env={**os.environ, **env}, stdout=self.fh, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while "ready." not in log.read_text():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready after 120 s:\n{log.read_text()}")
            time.sleep(0.2)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.fh.close()


@pytest.fixture
def start_worker(tmp_path):
    started = []

    def start(env: dict, concurrency: int = 1) -> Worker:
        w = Worker(env, tmp_path / f"worker-{len(started)}.log", concurrency)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


MOTO_SERVER = Path(sys.executable).with_name("moto_server")


class S3Server:
    """A real S3-compatible server (moto's standalone server) in its own process on 127.0.0.1.
    verge reaches it only over HTTP through boto3, as it would MinIO or AWS."""

    def __init__(self, log: Path, env: dict | None = None):
        need("moto_server (pip install 'moto[server]')", MOTO_SERVER.exists(), f"no {MOTO_SERVER}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.fh = open(log, "w")
        self.proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
                                     env={**os.environ, **(env or {})}, stdout=self.fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"moto_server did not start:\n{log.read_text()}")
            time.sleep(0.1)

    @property
    def env(self) -> dict:
        """The standard AWS variables a verge process gets (no verge-specific copies)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "verge-test",
                "AWS_SECRET_ACCESS_KEY": "verge-test-secret", "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="verge-test",
                            aws_secret_access_key="verge-test-secret", region_name="us-east-1")

    def bucket(self) -> str:
        name = f"verge-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=30)
        self.fh.close()


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
