"""Celery tasks. Thin: each one reads the app's settings and calls the function that does the work."""
from __future__ import annotations

import logging
import os
import random
import time

from celery.signals import worker_process_init
from sqlalchemy.exc import InterfaceError, OperationalError

from store.db import dispose_engines
from store.s3 import ObjectStoreUnavailable

from . import metrics, recovery, webhooks
from .app import (
    MAYBE_RETRAIN, REQUEUE_STALLED, RESCORE_OPEN, RETRAIN, SCORE_CHUNK, app, requeue_stalled as sweep,
    settings_of,
)
from .scoring import scorer_for

log = logging.getLogger("verge.tasks")

# A database or broker that is down is a reason to wait and retry, never to drop a chunk.
_TRANSIENT = (OperationalError, InterfaceError, ConnectionError, TimeoutError, ObjectStoreUnavailable)


def _test_pause(point: str) -> None:
    """Where a test holds a task to force an interleaving (``VERGE_TEST_PAUSE_<POINT>=seconds``,
    never set in production): e.g. a retrain outliving Redis's visibility timeout."""
    seconds = os.environ.get(f"VERGE_TEST_PAUSE_{point}")
    if seconds:
        time.sleep(float(seconds))


@worker_process_init.connect
def _fresh_process(**_):
    dispose_engines()  # connections must never be shared across a fork
    from models.pipeline import set_intra_op_threads

    settings = settings_of(app)
    threads = set_intra_op_threads(settings.torch_threads, settings.worker_concurrency)
    log.info("pool process %d: %d torch intra-op threads (%d pool processes)",
             os.getpid(), threads, settings.worker_concurrency)


def _chunk_fields(task_id, batch_id, image_ids) -> dict:
    """What identifies a chunk in its log lines: kept as fields in JSON logs (VERGE_LOG_FORMAT)."""
    return {"task_id": task_id, "batch_id": batch_id, "first_image": min(image_ids, default=None),
            "last_image": max(image_ids, default=None)}


@app.task(name=SCORE_CHUNK, bind=True)
def score_chunk(self, image_ids: list[int], batch_id: int | None = None) -> dict:
    _test_pause("SCORE_CHUNK")  # a test kills a host while it surely holds a chunk
    settings = settings_of(app)
    try:
        report = scorer_for(settings).score_chunk(image_ids)
    except _TRANSIENT as exc:
        # Exponential backoff with jitter; past the limit the task fails and its images stay
        # queued, where the beat sweeper finds them again (nothing is dropped).
        delay = min(120, 2 ** self.request.retries) * (0.5 + random.random())
        fields = _chunk_fields(self.request.id, batch_id, image_ids)
        log.warning("chunk of %d: transient failure (%s); retry %d in %.1fs (task %s, batch %s, images %s-%s)",
                    len(image_ids), type(exc).__name__, self.request.retries + 1, delay,
                    self.request.id, batch_id, min(image_ids, default=None), max(image_ids, default=None),
                    extra=fields)
        raise self.retry(exc=exc, countdown=delay, max_retries=settings.task_max_retries)
    log.info("chunk of %d: scored=%d failed=%d routed=%d skipped=%d embedded=%d linked=%d in %.2fs "
             "(task %s, batch %s, images %s-%s)", len(image_ids), report.scored, report.failed,
             report.routed, report.skipped, report.embedded, report.linked, report.seconds, self.request.id, batch_id,
             min(image_ids, default=None), max(image_ids, default=None),
             extra={**_chunk_fields(self.request.id, batch_id, image_ids), "images": len(image_ids),
                    "scored": report.scored, "failed": report.failed, "routed": report.routed,
                    "seconds": round(report.seconds, 3)})
    metrics.observe_chunk(report)
    webhooks.batches_finished(settings, image_ids, batch_id)
    return {"scored": report.scored, "failed": report.failed, "routed": report.routed,
            "skipped": report.skipped}


@app.task(name=REQUEUE_STALLED)
def requeue_stalled() -> int:
    settings = settings_of(app)
    recovery.recover_dead_chunks(settings)
    return sweep(settings)


def consumes_scoring(settings) -> bool:
    """Whether this worker takes scoring chunks (``-Q``/``--queues`` as the worker selected them;
    all queues when it selected none)."""
    try:
        return settings.queue in app.amqp.queues.consume_from
    except Exception:  # pragma: no cover - be safe: load the model
        return True


@worker_process_init.connect
def _warm_model(**_):
    """Load the model when the process starts, not inside the first chunk. A jobs-only worker
    (``verge worker --queues jobs``) scores nothing: it does not load CLIP (a re-score there reads
    the caption embeddings scoring workers recorded)."""
    try:
        settings = settings_of(app)
        if not consumes_scoring(settings):
            log.info("pool process %d: jobs only; the encoder is not loaded", os.getpid())
            return
        encoder = scorer_for(settings).encoder
        encoder.warm_up(settings.batch_size)
        from models.pipeline import warm_up_decoder

        warm_up_decoder(encoder, settings.gpu_decode, settings.decode_threads)
    except Exception:  # the first task reports it; a worker process must not die at boot
        log.exception("could not load the model at worker start")


@app.task(name=RESCORE_OPEN)
def rescore_open() -> dict:
    """After a promotion: open review tasks re-scored with the new head, from stored embeddings
    and the caption embeddings scoring workers recorded (the encoder is used only if this process
    has it loaded already, or loaded if no worker recorded them yet)."""
    from .scoring import loaded_scorer, rescore_open_tasks

    settings = settings_of(app)
    return rescore_open_tasks(settings, loaded_scorer(settings))


# Acknowledged when a worker takes it, not when it ends: a retrain outlives a short Redis visibility
# timeout, and a second worker must never be handed one that is still running. A retrain lost
# with its worker is not redelivered; beat's next trigger runs it (its lock lease has expired).
@app.task(name=RETRAIN, acks_late=False)
def retrain(trigger: str = "schedule") -> dict:
    from store.locks import LockBusy

    from .retrain import retrain as run

    settings = settings_of(app)

    def request_rescore(version_id: int) -> None:
        # the moment the promotion commits, before the suspect pass: a run that dies later (or
        # is redelivered) leaves the promotion with its re-score requested; re-scoring twice is
        # harmless (it skips images the active head already scored)
        rescore_open.apply_async(queue=settings.resolved_jobs_queue)

    _test_pause("RETRAIN")
    try:
        outcome = run(settings, trigger=trigger, on_promoted=request_rescore)
    except LockBusy as exc:
        log.info("retrain skipped: %s", exc)
        return {"skipped": str(exc)}
    return outcome.as_dict()


@app.task(name=MAYBE_RETRAIN, acks_late=False)
def maybe_retrain() -> dict | None:
    """Beat's label counter: retrain once enough new human labels arrived."""
    from .retrain import new_labels_since_last_model

    settings = settings_of(app)
    if settings.retrain_after_labels and new_labels_since_last_model(settings) >= settings.retrain_after_labels:
        return retrain("labels")
    return None
