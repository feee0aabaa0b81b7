"""The services the tests and the benchmarks run verge against, in one place: free ports, a
throwaway Postgres database (created, migrated by the real migrations, dropped WITH FORCE), a
private Redis queue (its keys removed afterwards), a real ``verge worker`` and other long-running
processes (own session, output in a log, clean shutdown), the ``verge`` command line, and an S3
server (moto's standalone server, over HTTP).

Imported by tests/conftest.py (pytest) and by bench/_common.py (plain scripts, which put the
checkout first on sys.path). So nothing here imports pytest, and nothing here decides between
skip and fail: a caller probes (``port_open``, ``postgres_available`` ...) and decides. A service
that does not come up raises ``ServiceError`` with the tail of its log.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_DEFAULT = "redis://127.0.0.1:6379/0"
MOTO_SERVER = Path(sys.executable).with_name("moto_server")


class ServiceError(AssertionError):
    """A service did not come up, or a `verge` command failed; the message says why. An
    AssertionError, so in a test it reads as a failed check."""


# --------------------------------------------------------------------------- ports
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def host_port(url: str, default_port: int) -> tuple[str, int]:
    """(host, port) of a database or broker URL."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return u.host or "127.0.0.1", u.port or default_port


def wait_until(ready: Callable[[], bool], timeout: float, what: str, interval: float = 0.2,
               proc: subprocess.Popen | None = None, log: Path | None = None,
               alive: Callable[[], bool] | None = None) -> None:
    """Poll ``ready`` until it is true; ServiceError when ``timeout`` passes, or first when
    ``proc`` exits or ``alive()`` turns false (with the tail of ``log``, when given)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"gave up waiting for {what}: the process exited "
                               f"{proc.returncode}{_tail(log)}")
        if alive is not None and not alive():
            raise ServiceError(f"gave up waiting for {what}: the worker died{_tail(log)}")
        if time.monotonic() > deadline:
            raise ServiceError(f"gave up waiting for {what} after {timeout:.0f} s{_tail(log)}")
        time.sleep(interval)


def wait_for_port(host: str, port: int, timeout: float = 60, what: str | None = None,
                  proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Wait until something listens on host:port (see ``wait_until``)."""
    wait_until(lambda: port_open(host, port), timeout, what or f"{host}:{port} to listen", 0.1, proc,
               log)


def _tail(log: Path | None, chars: int = 4000) -> str:
    if log is None:
        return ""
    try:
        return ":\n" + Path(log).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# --------------------------------------------------------------------------- environment, CLI
def child_env(overrides: dict, clean: bool = False) -> dict:
    """The environment of a verge subprocess: this one's, without its VERGE_* settings when
    ``clean``, with ``overrides`` (as strings) on top."""
    env = {k: v for k, v in os.environ.items() if not (clean and k.startswith("VERGE_"))}
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def verge(env: dict, *args: str, check: bool = True, timeout: float = 300, input: str | None = None,
          cwd: Path | None = None, clean: bool = False) -> subprocess.CompletedProcess:
    """Run the real `verge` command line (``python -m verge``) with ``env`` over this process's
    environment (see ``child_env``); ServiceError with its output when ``check`` and it fails."""
    proc = subprocess.run([sys.executable, "-m", "verge", *args], env=child_env(env, clean),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise ServiceError(f"verge {' '.join(args)} exited {proc.returncode}\n"
                           f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


# --------------------------------------------------------------------------- processes
class Service:
    """A long-running process in its own session, stdout and stderr in ``log``. ``stop()``
    sends SIGTERM (to the process, or its whole group) and SIGKILLs the group if it lingers."""

    what = "process"
    group_stop = False  # SIGTERM to the whole group rather than to the process

    def __init__(self, argv: list[str], log: Path, env: dict, cwd: Path | None = None):
        self.log = Path(log)
        self.fh = open(self.log, "w")
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self.fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, ready: Callable[[], bool], timeout: float, interval: float = 0.2) -> None:
        try:
            wait_until(ready, timeout, f"{self.what} to come up", interval, self.proc, self.log)
        except BaseException:  # not up, or interrupted while waiting: leave nothing running
            self.stop()
            raise

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            if self.group_stop:
                os.killpg(self.proc.pid, signal.SIGTERM)
            else:
                self.proc.terminate()  # for a Celery worker: its warm shutdown
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group we started, by its id
                self.proc.wait()
        if not self.fh.closed:
            self.fh.close()


class Worker(Service):
    """A real `verge worker` (Celery prefork), ready when its log says so. ``env`` goes over
    this process's environment (without its VERGE_* settings when ``clean``)."""

    what = "verge worker"

    def __init__(self, env: dict, log: Path, concurrency: int = 1, name: str | None = None,
                 ready_timeout: float = 120, cwd: Path | None = None, clean: bool = False):
        argv = [sys.executable, "-m", "verge", "worker", "-c", str(concurrency), "--loglevel", "INFO"]
        if name:
            argv += ["--name", name]
        super().__init__(argv, log, child_env(env, clean), cwd)
        self.wait_ready(lambda: "ready." in self.log_text(), ready_timeout)


class S3Server(Service):
    """A real S3-compatible server (moto's standalone server) in its own process on 127.0.0.1.
    verge reaches it only over HTTP through boto3, as it would MinIO or AWS."""

    what = "moto_server"
    group_stop = True
    KEY, SECRET, REGION = "verge-test", "verge-test-secret", "us-east-1"

    def __init__(self, log: Path, env: dict | None = None):
        if not MOTO_SERVER.exists():
            raise ServiceError(f"no {MOTO_SERVER} (pip install 'moto[server]')")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        super().__init__([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)], log,
                         child_env(env or {}))
        self.wait_ready(lambda: port_open("127.0.0.1", self.port), 60, interval=0.1)

    @property
    def env(self) -> dict:
        """The standard AWS variables a verge process gets (no verge-specific copies)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.KEY,
                "AWS_SECRET_ACCESS_KEY": self.SECRET, "AWS_DEFAULT_REGION": self.REGION}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.KEY,
                            aws_secret_access_key=self.SECRET, region_name=self.REGION)

    def bucket(self) -> str:
        name = f"verge-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


# --------------------------------------------------------------------------- Postgres
def postgres_available(admin_url: str) -> bool:
    return port_open(*host_port(admin_url, 5432))


class ThrowawayDatabase:
    """CREATE DATABASE <prefix>_<random> on the server of ``admin_url`` (migrated to head by the
    real migrations when ``migrate``); ``drop()`` removes it WITH (FORCE). ``url`` is its
    SQLAlchemy URL (postgresql+psycopg). Also a context manager."""

    def __init__(self, admin_url: str = PG_ADMIN_DEFAULT, prefix: str = "verge_test",
                 migrate: bool = False):
        import psycopg
        from sqlalchemy.engine import make_url

        admin = make_url(admin_url)
        self._admin = admin.set(drivername="postgresql", database="postgres") \
            .render_as_string(hide_password=False)
        self.name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self._admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.url = admin.set(drivername="postgresql+psycopg", database=self.name) \
            .render_as_string(hide_password=False)
        if migrate:
            try:
                import migrations

                migrations.upgrade(self.url)
            except BaseException:
                self.drop()
                raise

    def drop(self) -> None:
        import psycopg

        from store.db import dispose_engines

        dispose_engines()  # our own pooled connections first
        with psycopg.connect(self._admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def __enter__(self) -> "ThrowawayDatabase":
        return self

    def __exit__(self, *exc) -> None:
        self.drop()


# --------------------------------------------------------------------------- Redis
def redis_available(url: str = REDIS_DEFAULT) -> bool:
    return port_open(*host_port(url, 6379))


class PrivateQueue:
    """A Celery queue name nobody else uses on the Redis at ``url``, and a worker node name;
    ``clean()`` deletes the queue's keys and our node's entries in kombu's shared bindings."""

    def __init__(self, url: str, tag: str, prefix: str = "verge"):
        import redis  # imported now: at interpreter exit it may no longer import

        token = uuid.uuid4().hex[:8]
        self.name = f"{prefix}-{tag}-{token}"
        self.node = f"{prefix}-{tag}-{token}@{socket.gethostname()}"
        self._redis = redis.Redis.from_url(url)
        self._redis.ping()

    def clean(self) -> None:
        r, queue, node = self._redis, self.name.encode(), self.node.encode()
        keys = list(r.scan_iter(match=f"{self.name}*")) + \
            list(r.scan_iter(match=f"_kombu.binding*.{self.name}*"))  # the queue and its -jobs
        if keys:
            r.delete(*keys)
        for shared in r.scan_iter(match="_kombu.binding.*"):  # our node's pidbox/event bindings
            for member in r.smembers(shared):
                if node in member or queue in member:
                    r.srem(shared, member)
