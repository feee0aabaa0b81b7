"""The Celery app, configured from verge's settings.

Embedded default: kombu's filesystem transport under the data dir (no server). At scale:
Redis via VERGE_BROKER_URL. Either way delivery is at-least-once (acks_late, requeue when a
worker dies, prefetch 1) and scoring is idempotent, so a redelivered chunk changes nothing.
"""
from __future__ import annotations

from datetime import timedelta

from celery import Celery

from verge.settings import Settings

app = Celery("verge", include=["workers.tasks"])


def broker_options(settings: Settings) -> tuple[str, dict]:
    if settings.embedded_broker:
        queue_dir = settings.broker_dir / "queue"
        queue_dir.mkdir(parents=True, exist_ok=True)
        return "filesystem://localhost/", {
            "data_folder_in": str(queue_dir), "data_folder_out": str(queue_dir),
            "store_processed": False,
        }
    return settings.broker_url, {"visibility_timeout": settings.visibility_timeout}


def configure(settings: Settings) -> Celery:
    url, options = broker_options(settings)
    app.conf.update(
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
        beat_schedule={
            "requeue-stalled": {
                "task": "verge.requeue_stalled",
                "schedule": timedelta(seconds=max(60, settings.requeue_after // 6)),
                "options": {"queue": settings.queue},
            },
        },
    )
    app.verge_settings = settings
    return app


def settings_of(celery_app: Celery = app) -> Settings:
    """The settings the app runs under; read from the environment if nobody configured it
    (e.g. ``celery -A workers.app worker`` started by hand)."""
    if getattr(celery_app, "verge_settings", None) is None:
        configure(Settings.from_env())
    return celery_app.verge_settings

