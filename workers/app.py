"""The Celery app and the broker, named in one place: the task names, the queues, checking the
broker, and sending scoring tasks (``enqueue``, ``requeue``, beat's ``requeue_stalled``).

Embedded default: kombu's filesystem transport under the data dir (no server). At scale:
Redis or RabbitMQ via VERGE_BROKER_URL. Either way delivery is at-least-once (acks_late, requeue
when a worker dies, prefetch 1) and scoring is idempotent, so a redelivered chunk changes nothing.

A worker host that dies whole (no goodbye) holds its chunks unacknowledged: RabbitMQ redelivers
them as soon as the connection drops; Redis once VERGE_VISIBILITY_TIMEOUT has passed (short by
default, since a chunk scored twice writes nothing twice; retrains are acknowledged on receipt).
On RabbitMQ the queues are durable quorum queues (replicated, delivery-counted).

Two Celery queues: scoring chunks go to VERGE_QUEUE (``settings.queue``); the periodic and
follow-up jobs (sweeper, retrain, label check, re-score, webhook deliveries) to the jobs queue
(``settings.resolved_jobs_queue``), so a scoring backlog never delays them. "Queue" here always
means a Celery queue; people's work is the review queue (``store.review``).

Importing this module stays cheap (no torch, no settings read): the CLI, the web UI and Celery's
own command line import it, and senders name tasks by the constants below instead of importing
``workers.tasks``, which loads the model code.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Sequence

from celery import Celery
from celery.schedules import crontab
from kombu.exceptions import OperationalError
from sqlalchemy import select, update

from store.clock import sql_ago, sql_now
from store.db import session_scope
from store.schema import BatchImage, Image
from verge.settings import Settings, SettingsError

from .errors import BrokerUnavailable

log = logging.getLogger("verge.broker")

app = Celery("verge", include=["workers.tasks"])

# ----------------------------------------------------------------------------- task names
SCORE_CHUNK = "verge.score_chunk"          # scoring queue: one chunk of image ids
RESCORE_OPEN = "verge.rescore_open"        # jobs queue: open review tasks, with the active head
REQUEUE_STALLED = "verge.requeue_stalled"  # jobs queue, beat: the sweeper
RETRAIN = "verge.retrain"                  # jobs queue, beat: the cron schedule
MAYBE_RETRAIN = "verge.maybe_retrain"      # jobs queue, beat: the label counter
DELIVER_WEBHOOK = "verge.deliver_webhook"  # jobs queue: one attempt of one webhook delivery

# publishing to a broker that blips (a Redis restart) is retried within reason; past that the
# images stay `queued` in the database and `verge requeue` / beat's sweeper sends them again
PUBLISH_RETRY = {"max_retries": 20, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 3.0}
REQUEUE_PAGE = 10_000  # image ids read and re-sent at a time: bounded memory at any backlog


def broker_options(settings: Settings) -> tuple[str, dict]:
    if settings.embedded_broker:
        queue_dir = settings.broker_dir / "queue"
        control_dir = settings.broker_dir / "control"  # broadcast (pidbox) messages
        for d in (queue_dir, control_dir):
            d.mkdir(parents=True, exist_ok=True)
        return "filesystem://localhost/", {
            "data_folder_in": str(queue_dir), "data_folder_out": str(queue_dir),
            "control_folder": str(control_dir), "store_processed": False,
            # kombu sleeps this long whenever it may not take a message (prefetch 1 and a chunk
            # running) or finds none: its default of 1 s would leave a fast worker idle between chunks
            "polling_interval": 0.05,
        }
    vt = settings.visibility_timeout
    options = {
        "visibility_timeout": vt,
        # sweep for chunks a dead worker left unacknowledged every few seconds (kombu's default
        # scans only every 100 s) and never let a dead sweeper's mutex outlive the timeout
        "unacked_restore_interval": max(1, min(10, vt // 3)),
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": max(5, min(300, vt)),
    }
    if is_redis(settings.broker_url):
        # kombu keeps every client's unacknowledged messages in one hash per Redis database, and
        # any client restores whatever is older than ITS timeout: another deployment (or test)
        # on the same database with a shorter one would hand our running chunks out early. Our
        # own keys, named after the queue every process of one deployment shares.
        options.update({"unacked_key": f"{settings.queue}.unacked",
                        "unacked_index_key": f"{settings.queue}.unacked_index",
                        "unacked_mutex_key": f"{settings.queue}.unacked_mutex"})
    return settings.broker_url, options


def beat_schedule(settings: Settings) -> dict:
    """The periodic jobs: sweep stalled images; retrain on a cron schedule and/or label count.
    They go to the jobs queue: behind a scoring backlog they would wait for all of it."""
    opts = {"queue": settings.resolved_jobs_queue}
    schedule = {
        "requeue-stalled": {"task": REQUEUE_STALLED,
                            "schedule": timedelta(seconds=max(60, settings.requeue_after // 6)),
                            "options": opts},
    }
    if settings.retrain_cron:
        schedule["retrain-cron"] = {"task": RETRAIN, "schedule": parse_cron(settings.retrain_cron),
                                    "args": ("schedule",), "options": opts}
    if settings.retrain_after_labels:
        schedule["retrain-on-labels"] = {"task": MAYBE_RETRAIN,
                                         "schedule": timedelta(minutes=5), "options": opts}
    return schedule


def parse_cron(expr: str) -> crontab:
    parts = expr.split()
    if len(parts) != 5:
        raise SettingsError(f"VERGE_RETRAIN_CRON={expr!r} is not valid: needs five fields "
                            f"'minute hour day month weekday', e.g. '0 3 * * *'")
    minute, hour, day, month, weekday = parts
    try:
        return crontab(minute=minute, hour=hour, day_of_month=day, month_of_year=month,
                       day_of_week=weekday)
    except Exception as exc:
        raise SettingsError(f"VERGE_RETRAIN_CRON={expr!r} is not valid: {exc}") from None


def is_amqp(url: str) -> bool:
    return url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp")


def is_redis(url: str) -> bool:
    """The Redis transport: the one where VERGE_VISIBILITY_TIMEOUT applies."""
    return url.startswith(("redis", "rediss"))


def task_queues(settings: Settings):
    """RabbitMQ: the scoring queue as a durable quorum queue (and any queue created on demand,
    e.g. by a sender naming one). Other brokers: Celery's default."""
    if not is_amqp(settings.broker_url):
        return None
    from kombu import Exchange, Queue

    return [Queue(settings.queue, Exchange(settings.queue), routing_key=settings.queue, durable=True,
                  queue_arguments={"x-queue-type": "quorum"})]


def celery_config(settings: Settings) -> dict:
    url, options = broker_options(settings)
    return dict(
        broker_url=url,
        broker_transport_options=options,
        broker_connection_retry_on_startup=True,
        result_backend=None,
        task_ignore_result=True,            # outcomes live in the database, not in a backend
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,                # ack after the chunk is written, not before
        task_reject_on_worker_lost=True,    # a killed worker's chunk goes back on the queue
        worker_prefetch_multiplier=1,       # a slow worker never hoards chunks
        task_default_queue=settings.queue,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        beat_schedule=beat_schedule(settings),
        task_queues=task_queues(settings),
        task_create_missing_queue_type="quorum" if is_amqp(settings.broker_url) else "classic",
    )


def configure(settings: Settings) -> Celery:
    config = celery_config(settings)
    if getattr(app, "verge_settings", None) is not None and (
            app.conf.broker_url, app.conf.broker_transport_options) != (
            config["broker_url"], config["broker_transport_options"]):
        # kombu pools connections and producers per broker URL, process-wide; a pool made for
        # another broker (or another data dir's folders, which share one filesystem:// URL) must
        # not carry on, and neither may a closed one be handed out later for the same URL
        from kombu import pools

        pools.reset()
        app._pool = None
        app.amqp._producer_pool = None
    app.verge_settings = settings
    app.conf.update(config)
    app.amqp.queues = app.conf.task_queues  # rebuilt for this broker (a cached property)
    return app


def _config_from_env() -> dict:
    """Celery's own command line (``celery -A workers.app inspect ping``, ``events``, ``flower``)
    imports this module and reads the configuration without calling ``configure``: it then comes
    from the ``VERGE_*`` environment, read only when Celery first needs it, so importing the app
    stays cheap. Once verge's entry points configured the app, their settings are the ones."""
    if getattr(app, "verge_settings", None) is not None:
        return {}
    settings = Settings.from_env()
    app.verge_settings = settings
    return celery_config(settings)


app.add_defaults(_config_from_env)


def settings_of(celery_app: Celery = app) -> Settings:
    """The settings the app runs under; read from the environment if nobody configured it
    (e.g. ``celery -A workers.app worker`` started by hand)."""
    if getattr(celery_app, "verge_settings", None) is None:
        configure(Settings.from_env())
    return celery_app.verge_settings



# ----------------------------------------------------------------------------- the broker
def check_broker(settings: Settings, timeout: float = 5.0) -> None:
    """Raise BrokerUnavailable (one line) unless the broker answers."""
    configure(settings)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:
        where = settings.broker_url or f"filesystem:{settings.broker_dir}"
        raise BrokerUnavailable(
            f"cannot reach the broker at {where} (VERGE_BROKER_URL): {str(exc).splitlines()[0][:200]}"
        ) from None


def waiting_messages(settings: Settings, queue: str | None = None) -> int:
    """Messages waiting in a Celery queue (default: the scoring queue), not counting those a
    worker holds."""
    configure(settings)
    with app.connection_for_read() as conn:
        try:
            return conn.default_channel.queue_declare(queue or settings.queue, passive=True).message_count
        except Exception as exc:  # a queue nobody declared yet holds nothing
            if "NOT_FOUND" in str(exc) or "404" in str(exc):
                return 0
            raise


# ----------------------------------------------------------------------------- sending
def _chunks(settings: Settings, image_ids: Sequence[int]) -> list[list[int]]:
    ids = list(image_ids)
    return [ids[i:i + settings.chunk_size] for i in range(0, len(ids), settings.chunk_size)]


def _send(settings: Settings, chunks: list[list[int]], batch_id: int | None) -> int:
    configure(settings)
    if chunks:
        with app.producer_or_acquire() as producer:
            for chunk in chunks:
                # sent by name: importing workers.tasks would load torch into every submitter
                app.send_task(SCORE_CHUNK, args=[chunk], kwargs={"batch_id": batch_id},
                              queue=settings.queue, producer=producer, retry=True,
                              retry_policy=PUBLISH_RETRY)
    return len(chunks)


def publish(settings: Settings, image_ids: Sequence[int], batch_id: int | None = None) -> int:
    """Scoring tasks of ``chunk_size`` images each, on one producer, for images whose
    ``queued_at`` was stamped when they were registered (in place): nothing is written."""
    return _send(settings, _chunks(settings, image_ids), batch_id)


def enqueue(settings: Settings, image_ids: Sequence[int], batch_id: int | None = None) -> int:
    """Send scoring tasks of ``chunk_size`` images each and stamp the images' ``queued_at``."""
    chunks = _chunks(settings, image_ids)
    if not _send(settings, chunks, batch_id):
        return 0
    with session_scope(settings.resolved_database_url) as s:
        now = sql_now(s)  # the database's clock: the sweeper compares with it, on any host
        for chunk in chunks:
            s.execute(update(Image).where(Image.id.in_(chunk)).values(queued_at=now))
    return len(chunks)


def requeue(settings: Settings, batch_id: int | None = None, older_than_s: float | None = None) -> int:
    """Send scoring tasks again for images still ``queued`` (lost messages, a broker restart).
    Safe at any time: scoring skips what is already scored.

    ``older_than_s`` counts on the database's clock, as ``queued_at`` is stamped (``enqueue``,
    a worker starting a chunk): hosts' clocks may disagree, the database's is the one they share."""
    stmt = select(Image.id).where(Image.status == "queued")
    if batch_id is not None:
        stmt = stmt.join(BatchImage, BatchImage.image_id == Image.id).where(BatchImage.batch_id == batch_id)
    sent, last = 0, 0
    while True:
        with session_scope(settings.resolved_database_url) as s:
            page = stmt
            if older_than_s is not None:
                page = page.where(Image.queued_at.is_(None) | (Image.queued_at < sql_ago(s, older_than_s)))
            ids = list(s.scalars(page.where(Image.id > last).order_by(Image.id).limit(REQUEUE_PAGE)))
        if not ids:
            return sent
        enqueue(settings, ids, batch_id)
        sent, last = sent + len(ids), ids[-1]


def requeue_stalled(settings: Settings) -> int:
    """Beat's sweeper. ``queued_at`` is stamped (on the database's clock) when a task is sent and
    again when a worker starts the image's chunk, so an image untouched for ``VERGE_REQUEUE_AFTER`` was never started
    or was started long ago; it is re-sent only when no scoring message is waiting in the queue:
    behind a backlog an image that nobody started is waiting its turn, not lost."""
    waiting = waiting_messages(settings)
    if waiting:
        log.info("sweeper: %d scoring messages are waiting; nothing is re-sent behind them", waiting)
        return 0
    return requeue(settings, older_than_s=settings.requeue_after)


def request_rescore(settings: Settings) -> str | None:
    """Ask a worker to re-score open review tasks with the active head. Returns None, or why the
    request could not be sent (the broker is down): callers report it, the switch stands."""
    try:
        check_broker(settings)
        app.send_task(RESCORE_OPEN, queue=settings.resolved_jobs_queue, retry=True,
                      retry_policy={"max_retries": 3, "interval_start": 0.5, "interval_step": 0.5})
    except (BrokerUnavailable, OperationalError, OSError) as exc:
        return str(exc).splitlines()[0][:200]
    return None
