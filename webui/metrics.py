"""``/metrics``: the system's state in Prometheus text format, read at scrape time.

Gauges come from the database (images by status, review tasks by state, routing reasons,
labels, the active head: read at most every ``DB_FIGURES_TTL_S`` seconds per process, as they
are whole-table counts) and from the broker (the scoring queue's depth: ``LLEN`` on Redis,
message files in the queue folder for the embedded filesystem broker). Worker-side figures
(chunk durations, images scored and failed per worker) are served by the workers themselves
(``verge worker --metrics-port``, see ``workers/metrics.py``).

Who may scrape: Prometheus cannot sign in, so this route is outside the login guard and admits

* requests from the loopback interface (an agent on the same host) that carry no proxy header
  -- a request relayed by a reverse proxy on this host counts as remote, and
* requests with any user's API token: ``Authorization: Bearer vrg_...`` (``bearer_token`` in a
  Prometheus scrape config).

Everyone else gets 401.
"""
from __future__ import annotations

import ipaddress
import os
import threading
import time

from flask import Blueprint, Response, request
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from store.model_versions import active_model
from store.review import split_reasons
from store.schema import IMAGE_STATES, TASK_STATES, Batch, Image, Label, ReviewTask
from verge.settings import Settings

from .auth import bearer_user
from .context import db, settings

bp = Blueprint("metrics", __name__)
PROXY_HEADERS = ("X-Forwarded-For", "X-Forwarded-Host", "Forwarded", "X-Real-IP")


def _from_loopback() -> bool:
    if any(h in request.headers for h in PROXY_HEADERS):
        return False
    try:
        ip = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@bp.get("/metrics")
def metrics():
    if not _from_loopback() and bearer_user() is None:
        resp = Response("/metrics answers the loopback interface or a valid API token: "
                        "'Authorization: Bearer vrg_...'\n", status=401, mimetype="text/plain")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="verge"'
        return resp
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(settings()))
    resp = Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def queue_depth(s: Settings) -> int:
    """Messages waiting in the scoring queue (not counting the ones workers hold)."""
    if s.embedded_broker:
        # kombu's filesystem transport: one file per message, named <ms>_<uuid>.<queue>.msg
        folder = s.broker_dir / "queue"
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return 0
        wanted = f"{s.queue}.msg"
        return sum(1 for name in names if name.partition(".")[2] == wanted)
    from workers.app import app, configure

    configure(s)
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
        client = getattr(conn.default_channel, "client", None)
        if client is None or not hasattr(client, "llen"):
            raise RuntimeError(f"queue depth is not available for the {conn.transport_cls} broker")
        return int(client.llen(s.queue))


# The database gauges are whole-table counts (four GROUP BYs over images, tasks and labels: a
# second or more each at a million rows); a scrape within this many seconds of the last one that
# read them gets the same figures, so several scrapers, or a short scrape interval, do not each
# run them. Per process and database.
DB_FIGURES_TTL_S = 30.0
_figures: dict = {}  # database url -> (monotonic time read, figures)
_figures_lock = threading.Lock()


def database_figures(url: str) -> tuple:
    """(images by status, tasks by state, (reasons, n) rows, (label source, n) rows, active head,
    batch count): read from the database at most once per ``DB_FIGURES_TTL_S`` (concurrent
    scrapes wait for the one reading them)."""
    with _figures_lock:
        cached = _figures.get(url)
        if cached is not None and time.monotonic() - cached[0] < DB_FIGURES_TTL_S:
            return cached[1]
        with db() as s:
            by_status = dict(s.execute(select(Image.status, func.count()).group_by(Image.status)).all())
            by_state = dict(s.execute(select(ReviewTask.state, func.count())
                                      .group_by(ReviewTask.state)).all())
            by_reasons = s.execute(select(ReviewTask.reasons, func.count())
                                   .group_by(ReviewTask.reasons)).all()
            by_source = s.execute(select(Label.source, func.count()).group_by(Label.source)).all()
            active = active_model(s)
            active = (active.id, active.kind, active.encoder) if active else None
            batches = s.scalar(select(func.count()).select_from(Batch))
        figures = (by_status, by_state, by_reasons, by_source, active, batches)
        _figures[url] = (time.monotonic(), figures)
        return figures


class Collector:
    """A prometheus_client custom collector: every scrape asks the broker, and the database unless
    another scrape read its figures in the last ``DB_FIGURES_TTL_S`` seconds."""

    def __init__(self, s: Settings):
        self.settings = s

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            yield from self._database(GaugeMetricFamily, CounterMetricFamily)
            up = 1
        except SQLAlchemyError:
            up = 0
        yield GaugeMetricFamily("verge_database_up", "1 when the database answered this scrape.", value=up)
        depth = GaugeMetricFamily("verge_queue_depth", "Scoring tasks waiting in the Celery queue.",
                                  labels=["queue"])
        try:
            depth.add_metric([self.settings.queue], queue_depth(self.settings))
            up = 1
        except Exception:  # a broker that is down is a number here, not an error page
            up = 0
        if up:
            yield depth
        yield GaugeMetricFamily("verge_broker_up", "1 when the broker answered this scrape.", value=up)

    def _database(self, Gauge, Counter):
        by_status, by_state, by_reasons, by_source, active, batches = database_figures(
            self.settings.resolved_database_url)

        images = Gauge("verge_images", "Images by status: registered, queued, scored, failed.",
                       labels=["status"])
        for status in IMAGE_STATES:
            images.add_metric([status], by_status.get(status, 0))
        yield images
        tasks = Gauge("verge_review_tasks", "Review tasks by state (open ones wait for a reviewer).",
                      labels=["state"])
        for state in TASK_STATES:
            tasks.add_metric([state], by_state.get(state, 0))
        yield tasks
        reasons: dict[str, int] = {}
        for text, n in by_reasons:
            for reason in split_reasons(text):
                reasons[reason] = reasons.get(reason, 0) + n
        routed = Counter("verge_routed", "Images routed to review, by reason (a review task routed "
                                         "for two reasons counts under both).", labels=["reason"])
        for reason, n in sorted(reasons.items()):
            routed.add_metric([reason], n)
        yield routed
        sources: dict[str, int] = {}
        for source, n in by_source:
            key = source.split(":", 1)[0] if source else "unknown"  # training:<dir> -> training
            sources[key] = sources.get(key, 0) + n
        labels = Gauge("verge_labels", "Labels by source: review (web page), api, training (folders).",
                       labels=["source"])
        for source, n in sorted(sources.items()):
            labels.add_metric([source], n)
        yield labels
        model = Gauge("verge_active_model", "The active head (value 1; none when no head is active, "
                                            "zero-shot only).", labels=["version", "kind", "encoder"])
        if active:
            model.add_metric([str(active[0]), active[1], active[2]], 1)
        yield model
        yield Gauge("verge_active_model_version", "Id of the active head's model version (0: none).",
                    value=active[0] if active else 0)
        yield Gauge("verge_batches", "Batches submitted.", value=batches or 0)
