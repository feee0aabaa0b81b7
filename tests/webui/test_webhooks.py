"""Webhooks to a receiver on 127.0.0.1: signed, with a delivery id, recorded, retried with
backoff by the Celery task, failures listed for admins; the request that raised the event never
waits for the receiver."""
from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from store.db import session_scope
from store.schema import WebhookDelivery

from .conftest import login, make_app

SECRET = "webhook-test-secret"


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST; ``hold`` makes it wait before
    answering until released, ``status`` is what it answers."""

    def __init__(self, status: int = 204):
        self.got: list[dict] = []
        self.status = status
        self.hold = threading.Event()
        self.hold.set()
        self.arrived = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append({"headers": dict(self.headers), "body": body})
                outer.arrived.set()
                outer.hold.wait(30)
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/verge"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def down_url() -> str:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/hook"


def check_signed(req: dict, event: str) -> dict:
    h = {k.lower(): v for k, v in req["headers"].items()}
    want = "sha256=" + hmac.new(SECRET.encode(), req["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(h["x-verge-signature"], want)
    assert h["x-verge-event"] == event and h["content-type"] == "application/json"
    payload = json.loads(req["body"])
    assert payload["event"] == event and payload["delivery"] == h["x-verge-delivery"]
    return payload


def deliveries(url) -> list[WebhookDelivery]:
    with session_scope(url) as s:
        rows = list(s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))
        s.expunge_all()
        return rows


def deliver_now(pk: int):
    """Run the Celery task in this process (eagerly: its retries run at once, countdowns
    skipped) -- the same code a worker runs."""
    from workers.webhooks import deliver

    return deliver.apply(args=[pk]).get()


def test_conflicting_labels_raise_a_signed_webhook_without_waiting_for_the_receiver(
        web_settings, seed, receiver):
    app = make_app(web_settings, webhook_urls=(receiver.url,), webhook_secret=SECRET)
    image, task = seed.routed(0.9)
    seed.user("ann")
    seed.user("bob", "admin")  # reviewers label only what they claimed; an admin's label on
    ann, bob = login(app, "ann"), login(app, "bob")  # the closed task is the second opinion
    receiver.hold.clear()  # the receiver would now hang every request
    assert ann.post("/review/api/claim", json={}).get_json()["task"]["task_id"] == task
    assert ann.post("/review/api/label", json={"task_id": task, "class": "road"}).status_code == 201
    assert deliveries(seed.url) == []  # people agreeing (so far) is no event
    r = bob.post("/review/api/label", json={"task_id": task, "class": "field"})
    assert r.status_code == 201
    assert not receiver.arrived.is_set()  # the label was answered; nothing was posted inline
    (row,) = deliveries(seed.url)
    assert (row.event, row.state, row.url, row.attempts) == ("label.conflict", "pending", receiver.url, 0)
    queued = list((web_settings.broker_dir / "queue").glob("*.msg"))
    assert queued, "the delivery was not handed to the broker"

    receiver.hold.set()
    assert deliver_now(row.id) == "delivered"
    payload = check_signed(receiver.got[-1], "label.conflict")
    assert payload["delivery"] == row.delivery_id
    assert payload["data"]["image_id"] == image and payload["data"]["label"]["class"] == "field"
    assert payload["data"]["other_labels"] == [{"reviewer": "ann", "class": "road"}]
    (row,) = deliveries(seed.url)
    assert (row.state, row.attempts, row.last_status) == ("delivered", 1, 204)


def test_promotion_and_rollback_are_announced(web_settings, seed, receiver):
    from workers.activation import activate, rollback

    settings = make_app(web_settings, webhook_urls=(receiver.url,), webhook_secret=SECRET).config["VERGE_SETTINGS"]
    old = seed.model(state="candidate")
    new = seed.model(state="candidate")
    activate(settings, old)
    activate(settings, new)
    rollback(settings)
    rows = deliveries(seed.url)
    assert [r.event for r in rows] == ["model.promoted", "model.promoted", "model.rolled_back"]
    for r in rows[1:]:
        assert deliver_now(r.id) == "delivered"
    promoted = check_signed(receiver.got[0], "model.promoted")
    assert promoted["data"]["version"] == new and promoted["data"]["previous_version"] == old
    rolled = check_signed(receiver.got[1], "model.rolled_back")
    assert (rolled["data"]["from_version"], rolled["data"]["to_version"]) == (new, old)


def test_a_receiver_that_is_down_is_retried_with_backoff_then_listed_as_failed(
        web_settings, seed, receiver):
    down = down_url()
    app = make_app(web_settings, webhook_urls=(receiver.url, down), webhook_secret=SECRET,
                   webhook_max_retries=2, webhook_backoff=0.01)
    settings = app.config["VERGE_SETTINGS"]
    from workers.webhooks import emit

    ids = emit(settings, "batch.done", {"batch": {"id": 1}}, dedupe_key="batch.done:1:5")
    assert len(ids) == 2
    assert emit(settings, "batch.done", {"batch": {"id": 1}}, dedupe_key="batch.done:1:5") == []
    rows = {r.url: r for r in deliveries(seed.url)}
    assert deliver_now(rows[receiver.url].id) == "delivered"
    assert deliver_now(rows[down].id) == "failed"
    failed = {r.url: r for r in deliveries(seed.url)}[down]
    assert failed.state == "failed" and failed.attempts == 3  # the first try and two retries
    assert "ConnectionRefusedError" in failed.last_error or "refused" in failed.last_error

    receiver.status = 500  # a receiver that answers, but with an error, is retried too
    (pk,) = [r.id for r in deliveries(seed.url) if r.url == receiver.url]
    with session_scope(seed.url) as s:
        s.get(WebhookDelivery, pk).state = "pending"
    assert deliver_now(pk) == "failed"
    assert {r.url: r for r in deliveries(seed.url)}[receiver.url].last_status == 500

    seed.user("ada", "admin")
    page = login(app, "ada").get("/admin/webhooks").get_data(as_text=True)
    assert down in page and failed.delivery_id in page and "2 failed" in page
    seed.user("rev")
    assert login(app, "rev").get("/admin/webhooks").status_code == 403


def test_retries_back_off_exponentially_under_the_default_settings(settings):
    from workers.webhooks import backoff

    settings = replace(settings, broker_url="redis://127.0.0.1:6379/0")  # where the timeout applies
    assert settings.webhook_max_retries == 8 and settings.webhook_backoff == 10
    waits = [backoff(settings, n) for n in range(settings.webhook_max_retries)]
    # a countdown longer than Redis's visibility timeout would be delivered twice: the waits
    # double from 10 s up to half of it (60 s by default, issue 11)
    cap = min(1800, settings.visibility_timeout / 2)
    for n, w in enumerate(waits):
        nominal = min(cap, 10 * 2 ** n)
        assert 0.75 * nominal <= w <= 1.25 * nominal
    assert max(waits) <= cap * 1.25 < settings.visibility_timeout


@pytest.mark.parametrize("broker_url", ["amqp://guest:guest@127.0.0.1:5672//", ""],
                         ids=["rabbitmq", "embedded"])
def test_retries_follow_the_documented_schedule_where_no_visibility_timeout_applies(settings, broker_url):
    """RabbitMQ and the embedded broker never hand a message a worker holds to another one, so
    Redis's visibility timeout must not cut the schedule short: eight retries doubling from 10 s
    (VERGE_WEBHOOK_BACKOFF) wait ~42 min in all, not the ~3.5 min a 60 s timeout allows."""
    from workers.webhooks import MAX_BACKOFF, backoff

    settings = replace(settings, broker_url=broker_url)
    waits = [backoff(settings, n) for n in range(settings.webhook_max_retries)]
    for n, w in enumerate(waits):
        nominal = min(MAX_BACKOFF, 10 * 2 ** n)
        assert 0.75 * nominal <= w <= 1.25 * nominal
    assert max(waits) >= 0.75 * 1280 > settings.visibility_timeout
    assert sum(waits) >= 0.75 * 10 * (2 ** 8 - 1) > 30 * 60
    slow = replace(settings, webhook_backoff=1000.0)  # still at most 30 min (with its jitter)
    assert 0.75 * MAX_BACKOFF <= backoff(slow, 3) <= 1.25 * MAX_BACKOFF == 1.25 * 1800


def test_webhook_urls_must_be_http(tiny_env):
    from verge.settings import Settings, SettingsError

    s = Settings.from_env({**tiny_env, "VERGE_WEBHOOK_URL": "http://a.example/x, https://b.example/y"})
    assert s.webhook_urls == ("http://a.example/x", "https://b.example/y")
    with pytest.raises(SettingsError, match="VERGE_WEBHOOK_URL"):
        Settings.from_env({**tiny_env, "VERGE_WEBHOOK_URL": "ftp://a.example/x"})
