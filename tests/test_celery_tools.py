"""Celery's own tools (``inspect``, ``status``, ``events``, Flower) against a running ``verge worker``
with nothing but the ``VERGE_*`` environment: the app configures itself from it when Celery's
command line imports ``workers.app``."""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import TINY
from tests.services import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]


def celery(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    # `python -m celery` is the `celery` script of this environment, run from the repo root
    return subprocess.run([sys.executable, "-m", "celery", "-A", "workers.app", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)


def node_of(worker) -> str:
    return f"verge-{worker.proc.pid}@{socket.gethostname()}"


def ping(env: dict, node: str) -> dict:
    # a generous reply timeout: the machine running the tests may be busy (Celery's default is 1 s)
    proc = celery(env, "inspect", "ping", "-d", node, "--json", "--timeout", "10")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def event_dump(env: dict, seconds: float) -> str:
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.app", "events", "--dump"],
                            cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    time.sleep(seconds)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out


def get(url: str, auth: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=90) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.slow
@pytest.mark.services
def test_celery_inspect_status_events_and_flower_reach_a_verge_worker_on_redis(
        tmp_path, redis_url, start_worker):
    env = {**TINY, "VERGE_DATA_DIR": str(tmp_path / "var"), "VERGE_BROKER_URL": redis_url,
           "VERGE_QUEUE": f"verge-celerytools-{uuid.uuid4().hex[:8]}"}
    worker = start_worker(env)
    node = node_of(worker)

    assert ping(env, node) == {node: {"ok": "pong"}}
    # other workers may share this Redis; ours is among the nodes `status` lists
    status = celery(env, "status", "--timeout", "10")
    assert status.returncode == 0 and f"{node}: OK" in status.stdout, status.stdout + status.stderr
    # without VERGE_BROKER_URL the same command looks at the embedded broker, where nobody runs
    alone = celery({**env, "VERGE_BROKER_URL": "", "VERGE_DATA_DIR": str(tmp_path / "empty")},
                   "inspect", "ping", "-d", node, "--timeout", "2")
    assert node not in alone.stdout

    dump = event_dump(env, 8)
    assert f"{node} [" in dump and "heartbeat" in dump, dump

    port = free_port()
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.app", "flower", f"--port={port}",
         "--address=127.0.0.1", "--basic-auth=admin:s3cret", "--inspect_timeout=10000"],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        wait_for_port("127.0.0.1", port, 60, "flower", proc=flower)
        assert get(f"http://127.0.0.1:{port}/api/workers")[0] == 401  # behind authentication
        # asking one worker by name: the inspection ends when it replied, not at the timeout
        code, body = get(f"http://127.0.0.1:{port}/api/workers?refresh=1&workername={node}",
                         "admin:s3cret")
        assert code == 200 and node in json.loads(body), body[:500]
    finally:
        os.killpg(flower.pid, signal.SIGTERM)
        flower.wait(timeout=30)


@pytest.mark.slow
def test_celery_inspect_ping_and_events_work_on_the_embedded_filesystem_broker(tmp_path, start_worker):
    """kombu's filesystem transport carries broadcast (pidbox) and event messages through its
    control folder, so remote control works without any server too."""
    env = {**TINY, "VERGE_DATA_DIR": str(tmp_path / "var")}
    worker = start_worker(env)
    node = node_of(worker)
    assert ping(env, node) == {node: {"ok": "pong"}}
    dump = event_dump(env, 8)
    assert f"{node} [" in dump and "heartbeat" in dump, dump


def test_importing_the_app_reads_no_settings_until_celery_needs_them(tmp_path):
    """`import workers.app` stays cheap and side-effect free; the configuration comes from the
    environment only when Celery reads it, and verge's own `configure` wins over it."""
    code = (
        "import sys, workers.app as a\n"
        "assert 'torch' not in sys.modules and not a.app.configured\n"
        "assert getattr(a.app, 'verge_settings', None) is None\n"
        "print(a.app.conf.broker_url, a.app.conf.task_default_queue)\n"
    )
    env = {**os.environ, **TINY, "VERGE_BROKER_URL": "redis://127.0.0.1:6399/3",
           "VERGE_QUEUE": "from-env", "VERGE_DATA_DIR": str(tmp_path / "var")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["redis://127.0.0.1:6399/3", "from-env"]

    code = (
        "import workers.app as a\n"
        "from verge.settings import Settings\n"
        "a.configure(Settings.from_env({'VERGE_QUEUE': 'configured', 'VERGE_DATA_DIR': %r}))\n"
        "print(a.app.conf.broker_url, a.app.conf.task_default_queue)\n" % str(tmp_path / "other")
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["filesystem://localhost/", "configured"]
    assert not (tmp_path / "var").exists()  # the environment's data dir was never touched
