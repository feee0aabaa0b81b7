"""Chunks the embedded broker would lose, and telling waiting images from lost ones.

kombu's filesystem transport deletes a message's file when a worker fetches it, so a worker that
dies whole (parent and pool, ``kill -9``, a power cut) takes its running chunk with it: no
message is left to redeliver. Each chunk a worker receives is therefore recorded in
``<broker>/running/<task id>.json`` with the receiving process's pid (and its start time, so a
reused pid is not mistaken for it) and removed when the chunk ends. A worker that starts re-sends
the chunks whose holder is gone (``recover_dead_chunks``). Redis and RabbitMQ keep unacknowledged
messages themselves and need none of this.

The sweeper's question, "is this image lost or just waiting?", is answered with the broker:
while scoring messages are waiting in the queue, an image that no worker has started is
waiting, not lost (``workers.app.requeue_stalled``).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from celery.signals import task_postrun, task_received, worker_ready

from verge.settings import Settings

from .app import SCORE_CHUNK, app, enqueue, settings_of

log = logging.getLogger("verge.recovery")


def running_dir(settings: Settings) -> Path:
    return settings.broker_dir / "running"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or _start_time(pid) in (None, started)


@task_received.connect
def _record_chunk(request=None, **_):
    """In the worker's main process, as soon as it takes a chunk off the embedded broker."""
    settings = settings_of(app)
    if not settings.embedded_broker or request is None or request.name != SCORE_CHUNK:
        return
    args, kwargs = request.args or [[]], request.kwargs or {}
    folder = running_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{request.id}.json"
    tmp = path.with_suffix(".tmp")
    pid = os.getpid()
    tmp.write_text(json.dumps({"pid": pid, "started": _start_time(pid), "image_ids": list(args[0]),
                               "batch_id": kwargs.get("batch_id")}))
    os.replace(tmp, path)


@task_postrun.connect
def _forget_chunk(task_id=None, task=None, **_):
    """In the pool process, when the chunk is done (scored, failed, or handed to a retry, which
    the main process records again when it receives it)."""
    if task is None or task.name != SCORE_CHUNK:
        return
    settings = settings_of(app)
    if settings.embedded_broker:
        try:
            (running_dir(settings) / f"{task_id}.json").unlink()
        except FileNotFoundError:
            pass


def recover_dead_chunks(settings: Settings) -> int:
    """Re-send every recorded chunk whose worker is gone; returns how many. Two workers starting
    at once cannot both take one: the file is claimed by an atomic rename first."""
    folder = running_dir(settings)
    if not settings.embedded_broker or not folder.is_dir():
        return 0
    sent = 0
    for path in sorted(folder.glob("*.json")):
        try:
            held = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written or removed right now
        if _alive(int(held["pid"]), held.get("started")):
            continue
        claimed = path.with_name(f"{path.stem}.recovering-{os.getpid()}")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            continue  # another worker took it, or the chunk ended
        enqueue(settings, held["image_ids"], held.get("batch_id"))
        claimed.unlink()
        sent += 1
        log.warning("re-sent a chunk of %d images that a dead worker (pid %s) held",
                    len(held["image_ids"]), held["pid"])
    return sent


@worker_ready.connect
def _recover_at_start(**_):
    """A worker that starts picks up what a dead one was holding."""
    try:
        recover_dead_chunks(settings_of(app))
    except Exception:  # the sweeper tries again; a worker must start regardless
        log.exception("could not recover the chunks of dead workers")
