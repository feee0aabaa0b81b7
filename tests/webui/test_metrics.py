"""/metrics: Prometheus text format from the database and the broker; only loopback callers
(without proxy headers) and API-token holders may scrape it."""
from __future__ import annotations

import io
import uuid

import pytest

from store.db import session_scope
from store.schema import Label

from .conftest import jpeg, login, make_app, need, port_open

REMOTE = {"REMOTE_ADDR": "203.0.113.7"}


def parse(text: str) -> dict:
    """{(sample name, frozenset(labels)): value} from the exposition format, by the official parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _token(seed, name: str, role: str = "reviewer") -> str:
    from store import users
    from webui.security import new_token

    uid = seed.user(name, role)
    token, digest = new_token()
    with session_scope(seed.url) as s:
        users.set_token_hash(s, uid, digest)
    return token


def test_loopback_and_token_holders_may_scrape_nobody_else(app, seed):
    c = app.test_client()
    r = c.get("/metrics", environ_base=REMOTE)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "API token" in r.get_data(as_text=True)
    # a proxy on this host relays outside requests: they are remote whatever the socket says
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        assert c.get("/metrics", headers={header: "203.0.113.7"}).status_code == 401, header
    assert c.get("/metrics", environ_base=REMOTE,
                 headers={"Authorization": "Bearer vrg_not-a-real-token"}).status_code == 401
    # a cookie session is not enough from outside either
    browser = login(app, seed.user("ann") and "ann")
    assert browser.client.get("/metrics", environ_base=REMOTE).status_code == 401
    token = _token(seed, "prom")
    r = c.get("/metrics", environ_base=REMOTE, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.content_type.startswith("text/plain")
    for addr in ("127.0.0.1", "::1", "127.0.0.2"):
        assert c.get("/metrics", environ_base={"REMOTE_ADDR": addr}).status_code == 200, addr


def test_gauges_follow_the_database(app, seed):
    a, _ = seed.routed(0.9, reasons="near_threshold")
    b, _ = seed.routed(0.8, reasons="near_threshold,disagreement")
    seed.routed(0.7, reasons="audit")
    seed.image(status="failed")
    seed.image(status="queued")
    mv = seed.model(kind="three_class", state="active")
    uid = seed.user("rev")
    with session_scope(seed.url) as s:
        s.add_all([Label(image_id=a, user_id=uid, source="review", cls="road"),
                   Label(image_id=b, user_id=uid, source="api", cls="field"),
                   Label(image_id=b, source="training:/photos", cls="field")])
    text = app.test_client().get("/metrics").get_data(as_text=True)
    m = parse(text)
    assert value(m, "verge_images", status="scored") == 3
    assert value(m, "verge_images", status="failed") == 1
    assert value(m, "verge_images", status="queued") == 1
    assert value(m, "verge_images", status="registered") == 0
    assert value(m, "verge_review_tasks", state="open") == 3
    assert value(m, "verge_review_tasks", state="done") == 0
    assert value(m, "verge_routed_total", reason="near_threshold") == 2
    assert value(m, "verge_routed_total", reason="disagreement") == 1
    assert value(m, "verge_routed_total", reason="audit") == 1
    assert value(m, "verge_labels", source="review") == 1
    assert value(m, "verge_labels", source="api") == 1
    assert value(m, "verge_labels", source="training") == 1
    assert value(m, "verge_active_model", version=str(mv), kind="three_class",
                 encoder="verge-tiny:none") == 1
    assert value(m, "verge_active_model_version") == mv
    assert value(m, "verge_batches") == 1
    assert value(m, "verge_database_up") == 1 and value(m, "verge_broker_up") == 1
    assert value(m, "verge_queue_depth", queue="verge") == 0
    assert "# TYPE verge_routed_total counter" in text and "# HELP verge_images " in text


def test_scrapes_share_the_database_counts_for_a_while(app, seed, monkeypatch):
    """The database gauges are whole-table GROUP BYs: scrapes within ``DB_FIGURES_TTL_S`` of the
    one that read them get its figures and run none; after it, the next scrape reads again."""
    from sqlalchemy import event

    from store.db import get_engine
    from webui import metrics as metrics_module

    seed.image(status="queued")
    grouped = []

    def count(conn, cursor, statement, *args):
        if "GROUP BY" in statement.upper():
            grouped.append(statement)

    engine = get_engine(seed.url)
    event.listen(engine, "before_cursor_execute", count)
    try:
        c = app.test_client()
        first = parse(c.get("/metrics").get_data(as_text=True))
        assert len(grouped) == 4 and value(first, "verge_images", status="queued") == 1
        seed.image(status="queued")
        for _ in range(3):
            again = parse(c.get("/metrics").get_data(as_text=True))
            assert value(again, "verge_images", status="queued") == 1  # the shared figures
        assert len(grouped) == 4  # no scrape since the first ran a GROUP BY
        monkeypatch.setattr(metrics_module, "DB_FIGURES_TTL_S", 0.0)  # their time is up
        later = parse(c.get("/metrics").get_data(as_text=True))
        assert value(later, "verge_images", status="queued") == 2 and len(grouped) == 8
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_queue_depth_counts_the_filesystem_brokers_messages(web_settings, seed):
    seed.user("ada", "admin")
    app = make_app(web_settings, chunk_size=2)
    ada = login(app, "ada")
    files = [(io.BytesIO(jpeg((i, 2 * i, 3))), f"{i}.jpg") for i in range(5)]
    r = ada.client.post("/batches/upload", data={"csrf_token": ada.token, "files": files},
                        content_type="multipart/form-data")
    assert r.status_code == 302
    m = parse(app.test_client().get("/metrics").get_data(as_text=True))
    assert value(m, "verge_queue_depth", queue="verge") == 3  # 5 images in chunks of 2
    assert value(m, "verge_images", status="queued") == 5


def test_queue_depth_on_redis_and_a_broker_that_is_down(web_settings, seed):
    need("Redis", port_open("127.0.0.1", 6379), "nothing listens on 127.0.0.1:6379")
    import redis

    queue = f"verge-test-{uuid.uuid4().hex[:8]}"
    url = "redis://127.0.0.1:6379/0"
    seed.user("ada", "admin")
    app = make_app(web_settings, broker_url=url, queue=queue, chunk_size=1)
    client = redis.Redis.from_url(url)
    try:
        ada = login(app, "ada")
        files = [(io.BytesIO(jpeg((60 * i, 9, 200 - 50 * i))), f"{i}.jpg") for i in range(3)]
        r = ada.client.post("/batches/upload", data={"csrf_token": ada.token, "files": files},
                            content_type="multipart/form-data")
        assert r.status_code == 302, r.get_data(as_text=True)
        m = parse(app.test_client().get("/metrics").get_data(as_text=True))
        assert value(m, "verge_queue_depth", queue=queue) == 3 == client.llen(queue)
        assert value(m, "verge_broker_up") == 1
    finally:
        client.delete(queue)
    down = make_app(web_settings, broker_url="redis://127.0.0.1:1/0")
    r = down.test_client().get("/metrics")
    assert r.status_code == 200
    m = parse(r.get_data(as_text=True))
    assert value(m, "verge_broker_up") == 0 and value(m, "verge_database_up") == 1
    assert not any(name == "verge_queue_depth" for name, _ in m)


@pytest.mark.parametrize("addr,expected", [("127.0.0.1", True), ("::1", True),
                                           ("::ffff:127.0.0.1", True), ("10.0.0.1", False),
                                           ("203.0.113.7", False), ("", False), ("garbage", False)])
def test_what_counts_as_loopback(app, addr, expected):
    from webui.metrics import _from_loopback

    with app.test_request_context("/metrics", environ_base={"REMOTE_ADDR": addr}):
        assert _from_loopback() is expected


def test_a_worker_metrics_port_in_use_is_one_clear_error(tmp_path, monkeypatch):
    """(The exporter itself, summing a real worker's pool processes: test_bad_input.py.)"""
    import socket

    from prometheus_client import values

    from workers import metrics as worker_metrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "restored-afterwards")
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=rf"cannot serve worker metrics on 127.0.0.1:{port} "
                                          rf"\(--metrics-port / VERGE_WORKER_METRICS_PORT\)"):
            worker_metrics.start_metrics_server(port, tmp_path / "samples", addr="127.0.0.1")
