"""Services that go away mid-run: Redis restarts, Postgres stops. Each test runs its own server
on a free port, so the machine's services are never touched."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from store.db import dispose_engines, session_scope
from tests.conftest import need, verge
from tests.corpus import varied_photo_copies
from tests.services import free_port

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None) if Path("/usr/lib/postgresql").is_dir() else None


def wait_until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def batch_status(env, batch):
    proc = verge(env, "status", batch, "--json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


class OwnRedis:
    def __init__(self, folder: Path):
        self.port, self.folder = free_port(), folder
        folder.mkdir(parents=True, exist_ok=True)

    def start(self):
        subprocess.run(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "yes",
                        "--dir", str(self.folder), "--appendonly", "yes", "--save", "",
                        "--logfile", str(self.folder / "redis.log"), "--pidfile", str(self.folder / "redis.pid")],
                       check=True)
        wait_until(lambda: socket.create_connection(("127.0.0.1", self.port), 1).close() or True, 20, "redis")

    def stop(self):
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown"], capture_output=True)
        wait_until(lambda: not (self.folder / "redis.pid").exists(), 20, "redis to stop")


@pytest.mark.services
@pytest.mark.slow
def test_a_redis_restart_mid_run_loses_nothing(tmp_path, tiny_env, pg_url, start_worker):
    need("redis-server", shutil.which("redis-server") is not None, "apt-get install redis-server")
    redis = OwnRedis(tmp_path / "redis")
    redis.start()
    try:
        env = {**tiny_env, "VERGE_DATABASE_URL": pg_url, "VERGE_BROKER_URL": f"redis://127.0.0.1:{redis.port}/0",
               "VERGE_CHUNK_SIZE": "10", "VERGE_VISIBILITY_TIMEOUT": "20"}
        varied_photo_copies(tmp_path / "a", 400)
        verge(env, "db", "upgrade")
        start_worker(env)
        verge(env, "submit", str(tmp_path / "a"), "--batch", "before")
        wait_until(lambda: batch_status(env, "before")["scored"] > 20, 120, "scoring to start")
        redis.stop()
        # while it is down a submission fails in one line and registers nothing
        down = verge(env, "submit", str(tmp_path / "a"), "--batch", "during", check=False)
        assert down.returncode == 1 and "cannot reach the broker" in down.stderr
        assert batch_status(env, "during") is None
        time.sleep(3)
        redis.start()
        wait_until(lambda: batch_status(env, "before")["queued"] == 0, 300, "the run to finish after the restart")
        st = batch_status(env, "before")
        assert (st["scored"], st["failed"]) == (400, 0), st
        varied_photo_copies(tmp_path / "b", 30)
        after = json.loads(verge(env, "submit", str(tmp_path / "b"), "--batch", "after", "--wait",
                                 "--timeout", "120", "--json").stdout)["status"]
        assert after["scored"] == after["total"]  # the same worker reconnected and carries on
        with session_scope(pg_url) as s:
            dups = s.execute(text("SELECT count(*) FROM (SELECT image_id FROM prediction GROUP BY image_id, "
                                  "model_version_id HAVING count(*) > 1) d")).scalar()
        assert dups == 0
    finally:
        redis.stop()


class ThrowawayPostgres:
    """A cluster of our own (initdb as the postgres user), started and stopped at will."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="verge-pg-"))
        os.chmod(self.dir, 0o755)
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = free_port()
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _pg(self, tool, *args):
        return subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / tool), *args],
                              check=True, capture_output=True, text=True, timeout=120)

    @property
    def url(self):
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self):
        self._pg("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.dir / "log"), "-o",
                 f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self):
        self._pg("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")

    def remove(self):
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.data),
                        "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.mark.services
@pytest.mark.slow
def test_postgres_stopping_mid_run_is_waited_out(tmp_path, tiny_env, redis_url, start_worker):
    need("PostgreSQL server binaries", PG_BIN is not None and os.geteuid() == 0 and shutil.which("runuser"),
         "needs /usr/lib/postgresql/*/bin and root (to run initdb as postgres)")
    pg = ThrowawayPostgres()
    try:
        pg.start()
        env = {**tiny_env, "VERGE_DATABASE_URL": pg.url, "VERGE_BROKER_URL": redis_url,
               "VERGE_QUEUE": f"verge-pgstop-{uuid.uuid4().hex[:8]}", "VERGE_CHUNK_SIZE": "10",
               "VERGE_TASK_MAX_RETRIES": "8"}
        n = 1200
        varied_photo_copies(tmp_path / "a", n)
        verge(env, "db", "upgrade")
        worker = start_worker(env)
        verge(env, "submit", str(tmp_path / "a"), "--batch", "run")
        wait_until(lambda: batch_status(env, "run")["scored"] > 0, 120, "scoring to start")
        pg.stop()
        time.sleep(8)  # chunks fail to reach the database and retry with backoff
        pg.start()
        wait_until(lambda: batch_status(env, "run")["queued"] == 0, 300, "the run to finish")
        st = batch_status(env, "run")
        assert (st["scored"], st["failed"]) == (n, 0), st
        assert worker.proc.poll() is None  # the worker rode it out
        assert "transient failure (OperationalError)" in worker.log.read_text()  # it did hit the outage
        dispose_engines()
        with session_scope(pg.url) as s:
            dups = s.execute(text("SELECT count(*) FROM (SELECT image_id FROM prediction GROUP BY image_id, "
                                  "model_version_id HAVING count(*) > 1) d")).scalar()
        assert dups == 0
    finally:
        dispose_engines()
        pg.remove()
