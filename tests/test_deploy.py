"""deploy/: the Prometheus scrape config passes `promtool check config`, a live `verge web`'s
/metrics passes `promtool check metrics`, and the Grafana dashboard parses and queries only
metrics verge exposes."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import need, verge
from tests.services import Service, free_port, port_open

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "verge-dashboard.json"
SCRAPE = ROOT / "deploy" / "prometheus.yml"


def promtool() -> str:
    exe = shutil.which("promtool")
    need("promtool (Debian package prometheus)", exe is not None, "apt-get install prometheus")
    return exe


def check_metrics(text: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory) -> str:
    """/metrics of a real `verge web` process over a database with an image of every kind, a
    routed task, labels and an active head, so every family has samples."""
    from tests.webui.conftest import Seeder
    from verge.settings import Settings

    data = tmp_path_factory.mktemp("deploy") / "var"
    port = free_port()
    env = {"VERGE_DATA_DIR": str(data), "VERGE_WEB_PORT": str(port)}
    verge(env, "db", "upgrade")
    seed = Seeder(Settings.from_env(env))
    mv = seed.model()
    seed.user("rev")
    image, task = seed.routed(0.8, reasons="near_threshold,disagreement")
    seed.predict(seed.image(), 0.9, 0.8, model_version_id=mv)
    seed.image(status="failed")
    from store.db import session_scope
    from store.schema import Label

    with session_scope(seed.url) as s:
        s.add(Label(image_id=image, user_id=seed.users["rev"], task_id=task, source="review", cls="road"))
    web = Service([sys.executable, "-m", "verge", "web"], data.parent / "web.log", {**os.environ, **env})
    try:
        web.wait_ready(lambda: port_open("127.0.0.1", port), 60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            yield resp.read().decode()
    finally:
        web.stop()
        from store.db import dispose_engines

        dispose_engines()


def test_promtool_accepts_a_live_metrics_page(live_metrics):
    assert "verge_routed_total{reason=\"disagreement\"} 1.0" in live_metrics
    out = check_metrics(live_metrics)
    assert out.returncode == 0, out.stdout + out.stderr
    # and promtool is no rubber stamp: a counter without _total fails its lint
    bad = check_metrics("# HELP verge_oops Oops.\n# TYPE verge_oops counter\nverge_oops 1\n")
    assert bad.returncode != 0


def test_promtool_accepts_the_scrape_config(tmp_path):
    exe = promtool()
    # the config reads the API token from `verge-token` beside it; the check wants it to exist
    shutil.copy(SCRAPE, tmp_path / "prometheus.yml")
    (tmp_path / "verge-token").write_text("vrg_example\n")
    out = subprocess.run([exe, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    (tmp_path / "verge-token").unlink()
    out = subprocess.run([exe, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "verge-token" in out.stdout + out.stderr


def _sample_names(text: str) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def _worker_metric_names() -> set[str]:
    """The worker's exposition as prometheus_client renders the instruments it registers (in
    this process's default registry; the worker's exporter sums the same across its pool)."""
    from prometheus_client import REGISTRY, generate_latest

    import workers.metrics as wm

    wm._get()
    return _sample_names(generate_latest(REGISTRY).decode())


def test_the_dashboard_parses_and_queries_only_metrics_that_exist(live_metrics):
    dash = json.loads(DASHBOARD.read_text())
    exposed = _sample_names(live_metrics) | _worker_metric_names()
    assert {"verge_chunk_seconds_bucket", "verge_images_scored_total"} <= exposed
    used = set()
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\b(verge_[a-z_]+)\b", target["expr"]))
            assert names, target["expr"]
            used |= names
    assert used - exposed == set(), f"the dashboard queries metrics verge does not expose: {used - exposed}"
    # what the issue asks the dashboard to show
    for wanted in ("verge_images", "verge_routed_total", "verge_queue_depth", "verge_chunk_seconds_bucket",
                   "verge_labels", "verge_active_model_version"):
        assert wanted in used, wanted
    # scrape jobs for both exporters
    import yaml

    jobs = {j["job_name"] for j in yaml.safe_load(SCRAPE.read_text())["scrape_configs"]}
    assert jobs == {"verge-web", "verge-worker"}
