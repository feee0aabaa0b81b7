"""Webhooks: a signed JSON POST to every ``VERGE_WEBHOOK_URL`` when something a team acts on
happens (a batch is done, a model is promoted or rolled back, people disagree on a label, training
labels look wrong).

``emit`` only writes one ``webhook_delivery`` row per receiver and hands its id to the broker, so
the request or chunk that raised the event never waits for a receiver. A Celery task
(``verge.deliver_webhook``) makes each attempt with a short timeout and retries with exponential
backoff (Celery's own retry: the message waits in the broker or the worker's timer, not in a pool
process); every attempt is recorded, and a delivery that exhausted its retries stays ``failed``
for the admin page (/admin/webhooks).

Headers: ``X-Verge-Event``, ``X-Verge-Delivery`` (a UUID, the same on every retry), and with
``VERGE_WEBHOOK_SECRET`` set ``X-Verge-Signature: sha256=<hex HMAC-SHA256 of the body>``.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import urllib.error
import urllib.request
import uuid

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from store.db import session_scope
from store.images import batch_counts, find_batch
from store.schema import BatchImage, Image, Label, User, WebhookDelivery, utcnow
from verge.settings import Settings

from .app import DELIVER_WEBHOOK, app, configure, is_redis, settings_of

log = logging.getLogger("verge.webhooks")

EVENTS = ("batch.done", "model.promoted", "model.rolled_back", "label.conflict", "label.suspect")
USER_AGENT = "verge-webhooks/1"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


MAX_BACKOFF = 1800.0  # a retry waits at most 30 min, whatever VERGE_WEBHOOK_BACKOFF doubles to


def backoff(settings: Settings, retries: int) -> float:
    """Seconds before retry number ``retries + 1``: doubling from VERGE_WEBHOOK_BACKOFF with
    jitter, at most MAX_BACKOFF. A retry waits in the worker that holds its message,
    unacknowledged; on Redis such a message is handed to another worker once
    VERGE_VISIBILITY_TIMEOUT passes, so there the wait is also capped below half of it (a longer
    countdown would be delivered twice). RabbitMQ and the embedded broker have no such timeout."""
    cap = MAX_BACKOFF
    if is_redis(settings.broker_url):
        cap = min(cap, settings.visibility_timeout / 2)
    return min(cap, settings.webhook_backoff * 2 ** retries) * (0.75 + random.random() / 2)


def emit(settings: Settings, event: str, data: dict, dedupe_key: str | None = None) -> list[str]:
    """Record the event for each receiver and hand its delivery to the broker; returns the delivery ids
    (none when no receiver is configured or this occurrence was already sent). Never raises:
    an unreachable database or broker is logged, and the caller's work stands."""
    if not settings.webhook_urls:
        return []
    assert event in EVENTS, event
    try:
        return _emit(settings, event, data, dedupe_key)
    except Exception:
        log.exception("webhook %s not sent", event)
        return []


def _emit(settings: Settings, event: str, data: dict, dedupe_key: str | None) -> list[str]:
    rows = []
    for url in settings.webhook_urls:
        delivery_id = str(uuid.uuid4())
        body = json.dumps({"event": event, "delivery": delivery_id, "created_at": utcnow().isoformat(),
                           "data": data}, default=str, ensure_ascii=False)
        try:
            with session_scope(settings.resolved_database_url) as s:
                row = WebhookDelivery(delivery_id=delivery_id, event=event, url=url, body=body,
                                      dedupe_key=dedupe_key, state="pending", attempts=0,
                                      created_at=utcnow(), updated_at=utcnow())
                s.add(row)
                s.flush()
                rows.append((row.id, delivery_id))
        except IntegrityError:  # another process recorded this very occurrence first
            continue
    if rows:
        configure(settings)  # the web process and the CLI have not necessarily done so yet
    for pk, delivery_id in rows:
        try:
            app.send_task(DELIVER_WEBHOOK, args=[pk], queue=settings.resolved_jobs_queue, retry=True,
                          retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5})
        except Exception as exc:
            _record(settings, pk, state="pending", error=f"not queued: {str(exc).splitlines()[0][:200]}")
            log.warning("webhook %s (delivery %s) not queued: %s", event, delivery_id, exc)
    return [d for _, d in rows]


def _record(settings: Settings, pk: int, **values) -> None:
    with session_scope(settings.resolved_database_url) as s:
        s.execute(update(WebhookDelivery).where(WebhookDelivery.id == pk)
                  .values(updated_at=utcnow(), **{("last_error" if k == "error" else k): v
                                                  for k, v in values.items()}))


def attempt(settings: Settings, row: WebhookDelivery) -> tuple[int | None, str | None]:
    """One POST: (HTTP status or None, error or None when the receiver took it)."""
    body = row.body.encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "X-Verge-Event": row.event, "X-Verge-Delivery": row.delivery_id}
    if settings.webhook_secret:
        headers["X-Verge-Signature"] = signature(settings.webhook_secret, body)
    req = urllib.request.Request(row.url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=settings.webhook_timeout) as resp:
            return resp.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"{type(reason).__name__}: {reason}"[:500]


@app.task(name=DELIVER_WEBHOOK, bind=True, acks_late=True)
def deliver(self, pk: int) -> str:
    settings = settings_of(app)
    with session_scope(settings.resolved_database_url) as s:
        row = s.get(WebhookDelivery, pk)
        if row is None or row.state == "delivered":
            return "gone" if row is None else "delivered"
        s.expunge(row)
    status, error = attempt(settings, row)
    attempts = row.attempts + 1
    if error is None:
        _record(settings, pk, state="delivered", attempts=attempts, last_status=status, error=None)
        log.info("webhook %s delivered to %s (delivery %s, attempt %d)", row.event, row.url,
                 row.delivery_id, attempts)
        return "delivered"
    final = self.request.retries >= settings.webhook_max_retries
    _record(settings, pk, state="failed" if final else "pending", attempts=attempts,
            last_status=status, error=error)
    if final:
        log.warning("webhook %s to %s failed after %d attempts: %s (delivery %s)", row.event, row.url,
                    attempts, error, row.delivery_id)
        return "failed"
    delay = backoff(settings, self.request.retries)
    log.info("webhook %s to %s: %s; retry in %.1fs (delivery %s)", row.event, row.url, error, delay,
             row.delivery_id)
    raise self.retry(countdown=delay, max_retries=settings.webhook_max_retries)


# ----------------------------------------------------------------------------- events
def batches_finished(settings: Settings, image_ids, batch_id: int | None = None) -> None:
    """After a chunk: ``batch.done`` for each batch of these images with nothing left queued.
    The key holds the batch's size, so a batch that grows and finishes again is announced again."""
    if not settings.webhook_urls or not image_ids:
        return
    try:
        with session_scope(settings.resolved_database_url) as s:
            ids = {batch_id} if batch_id is not None else set(s.scalars(
                select(BatchImage.batch_id).where(BatchImage.image_id.in_(list(image_ids)[:1000]))
                .distinct()))
            done = []
            for bid in sorted(ids):
                counts = batch_counts(s, [bid]).get(bid, {})
                if counts.get("total") and not counts.get("queued") and not counts.get("registered"):
                    batch = find_batch(s, bid)
                    done.append({"id": bid, "name": batch.name if batch else None,
                                 **{k: counts.get(k, 0) for k in ("total", "scored", "failed", "routed")}})
    except Exception:
        log.exception("could not check whether batch %s is done", batch_id)
        return
    for b in done:
        emit(settings, "batch.done", {"batch": b}, dedupe_key=f"batch.done:{b['id']}:{b['total']}")


def label_posted(settings: Settings, image_id: int, user_id: int, cls: str, label_id: int) -> None:
    """``label.conflict`` when another person gave this image a different class."""
    if not settings.webhook_urls:
        return
    try:
        with session_scope(settings.resolved_database_url) as s:
            others = s.execute(select(User.name, Label.cls).join(User, User.id == Label.user_id)
                               .where(Label.image_id == image_id, Label.user_id != user_id,
                                      Label.cls != cls)).all()
            if not others:
                return
            me = s.scalar(select(User.name).where(User.id == user_id))
            sha = s.scalar(select(Image.sha256).where(Image.id == image_id))
    except Exception:
        log.exception("could not check label %s for a conflict", label_id)
        return
    emit(settings, "label.conflict",
         {"image_id": image_id, "sha256": sha, "label": {"id": label_id, "reviewer": me, "class": cls},
          "other_labels": [{"reviewer": n, "class": c} for n, c in others]},
         dedupe_key=f"label.conflict:{label_id}")


def failed_deliveries(session, limit: int = 200) -> list[WebhookDelivery]:
    return list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.state == "failed")
                                .order_by(WebhookDelivery.id.desc()).limit(limit)))


def delivery_counts(session) -> dict[str, int]:
    return dict(session.execute(select(WebhookDelivery.state, func.count())
                                .group_by(WebhookDelivery.state)).all())
