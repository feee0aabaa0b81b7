"""VERGE_LOG_FORMAT=json: beat and the web UI log one JSON object per line (the worker's chunk
lines, with their fields, are pinned in tests/test_integrations.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from tests.conftest import port_open, verge
from tests.services import free_port


def run_for(args: list[str], env: dict, log, until, timeout: float = 60) -> list[dict]:
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "verge", *args], env={**os.environ, **env},
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while not until():
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    assert lines
    return [json.loads(ln) for ln in lines]  # every line is one JSON object


def test_beat_logs_json(tmp_path):
    env = {"VERGE_DATA_DIR": str(tmp_path / "var"), "VERGE_LOG_FORMAT": "json"}
    log = tmp_path / "beat.log"
    records = run_for(["beat"], env, log, lambda: "Starting" in log.read_text())
    assert any(r["message"].startswith("beat: Starting") and r["level"] == "INFO" for r in records), records


def test_web_logs_json_including_requests(tmp_path):
    port = free_port()
    env = {"VERGE_DATA_DIR": str(tmp_path / "var"), "VERGE_LOG_FORMAT": "json", "VERGE_WEB_PORT": str(port)}
    verge(env, "db", "upgrade")
    log = tmp_path / "web.log"
    fetched = []

    def served():
        if not port_open("127.0.0.1", port):
            return False
        if not fetched:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
                fetched.append(resp.status)
        return "/healthz" in log.read_text()

    records = run_for(["web"], env, log, served)
    assert fetched == [200]
    assert any(r["logger"] == "werkzeug" and "GET /healthz" in r["message"] for r in records), records
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)


def test_gunicorn_as_docker_compose_runs_it_logs_json(tmp_path):
    """The compose file's web command (gunicorn with webui.gunicorn_conf): gunicorn's own lines and
    its access log are JSON objects too."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    cmd = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]["web"]["command"]
    args = list(cmd)
    port = free_port()
    args[args.index("-w") + 1] = "1"
    args[args.index("-b") + 1] = f"127.0.0.1:{port}"
    env = {"VERGE_DATA_DIR": str(tmp_path / "var"), "VERGE_LOG_FORMAT": "json"}
    verge(env, "db", "upgrade")
    log = tmp_path / "gunicorn.log"
    fetched = []

    def served():
        if not port_open("127.0.0.1", port):
            return False
        if not fetched:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
                fetched.append(resp.status)
        return "GET /healthz" in log.read_text()

    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    with open(log, "w") as fh:
        proc = subprocess.Popen([gunicorn, *args], cwd=root, env={**os.environ, **env}, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while not served():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    records = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]
    assert any(r["logger"] == "gunicorn.error" and r["message"].startswith("Starting gunicorn") for r in records)
    assert any(r["logger"] == "gunicorn.access" and "GET /healthz" in r["message"] for r in records)
