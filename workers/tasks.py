"""Celery tasks. Thin: each one reads the app's settings and calls the function that does the work."""
from __future__ import annotations

import logging
import random

from celery.signals import worker_process_init
from sqlalchemy.exc import InterfaceError, OperationalError

from store.db import dispose_engines

from . import metrics, recovery
from .app import RESCORE_OPEN, SCORE_CHUNK, app, settings_of
from .scoring import scorer_for

log = logging.getLogger("verge.tasks")

# A database or broker that is down is a reason to wait and retry, never to drop a chunk.
_TRANSIENT = (OperationalError, InterfaceError, ConnectionError, TimeoutError)


@worker_process_init.connect
def _fresh_process(**_):
    dispose_engines()  # connections must never be shared across a fork


@app.task(name=SCORE_CHUNK, bind=True)
def score_chunk(self, image_ids: list[int], batch_id: int | None = None) -> dict:
    settings = settings_of(app)
    try:
        report = scorer_for(settings).score_chunk(image_ids)
    except _TRANSIENT as exc:
        # Exponential backoff with jitter; past the limit the task fails and its images stay
        # queued, where the beat sweeper finds them again (nothing is dropped).
        delay = min(120, 2 ** self.request.retries) * (0.5 + random.random())
        log.warning("chunk of %d: transient failure (%s); retry %d in %.1fs (task %s, batch %s, images %s-%s)",
                    len(image_ids), type(exc).__name__, self.request.retries + 1, delay,
                    self.request.id, batch_id, min(image_ids, default=None), max(image_ids, default=None))
        raise self.retry(exc=exc, countdown=delay, max_retries=settings.task_max_retries)
    log.info("chunk of %d: scored=%d failed=%d routed=%d skipped=%d embedded=%d in %.2fs "
             "(task %s, batch %s, images %s-%s)", len(image_ids), report.scored, report.failed,
             report.routed, report.skipped, report.embedded, report.seconds, self.request.id, batch_id,
             min(image_ids, default=None), max(image_ids, default=None))
    metrics.observe_chunk(report)
    return {"scored": report.scored, "failed": report.failed, "routed": report.routed,
            "skipped": report.skipped}


@app.task(name="verge.requeue_stalled")
def requeue_stalled() -> int:
    from .submission import requeue_stalled as requeue

    settings = settings_of(app)
    recovery.recover_dead_chunks(settings)
    return requeue(settings)


@worker_process_init.connect
def _warm_model(**_):
    """Load the model when the process starts, not inside the first chunk."""
    try:
        settings = settings_of(app)
        scorer_for(settings).encoder.warm_up(settings.batch_size)
    except Exception:  # the first task reports it; a worker process must not die at boot
        log.exception("could not load the model at worker start")


@app.task(name=RESCORE_OPEN)
def rescore_open() -> dict:
    """After a promotion: open review tasks re-scored with the new head (workers hold the encoder
    whose text embeddings zero-shot needs)."""
    return scorer_for(settings_of(app)).rescore_open_tasks()


@app.task(name="verge.retrain")
def retrain(trigger: str = "schedule") -> dict:
    from store.locks import LockBusy

    from .retrain import retrain as run

    try:
        outcome = run(settings_of(app), trigger=trigger)
    except LockBusy as exc:
        log.info("retrain skipped: %s", exc)
        return {"skipped": str(exc)}
    if outcome.promoted:
        rescore_open.apply_async(queue=settings_of(app).resolved_jobs_queue)
    return outcome.as_dict()


@app.task(name="verge.maybe_retrain")
def maybe_retrain() -> dict | None:
    """Beat's label counter: retrain once enough new human labels arrived."""
    from .retrain import new_labels_since_last_model

    settings = settings_of(app)
    if settings.retrain_after_labels and new_labels_since_last_model(settings) >= settings.retrain_after_labels:
        return retrain("labels")
    return None
