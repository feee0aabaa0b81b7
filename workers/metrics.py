"""Worker-side Prometheus metrics: how long chunks take, how many images were scored or failed.

A ``verge worker`` is a parent process and a pool of forked children that run the chunks, so
the figures live in prometheus_client's multiprocess mode: each child writes its samples to
memory-mapped files in one folder, and the parent's exporter (``start_metrics_server``) sums the
folder on every scrape. ``verge worker --metrics-port N`` (or ``VERGE_WORKER_METRICS_PORT``)
turns it on; without it the instruments still count, in memory, and nobody reads them.

* ``verge_chunk_seconds`` (histogram): wall time of a scoring chunk, decode to commit.
* ``verge_images_scored_total`` / ``verge_images_failed_total`` (counters).

Database-wide figures (scoring queue depth, images by status, review tasks, the active head)
are the web UI's ``/metrics``.
"""
from __future__ import annotations

import atexit
import os
import shutil
from pathlib import Path

BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_instruments = None


def _get():
    """Created on first use, in the process that observes (a pool child, after the fork)."""
    global _instruments
    if _instruments is None:
        from prometheus_client import Counter, Histogram

        _instruments = (
            Histogram("verge_chunk_seconds", "Wall time of one scoring chunk (decode, embed, score, "
                      "write).", buckets=BUCKETS),
            Counter("verge_images_scored", "Images scored by this worker's processes."),
            Counter("verge_images_failed", "Images recorded as failed (with a reason) by this "
                    "worker's processes."),
        )
    return _instruments


def observe_chunk(report) -> None:
    """Record one chunk's ``ChunkReport``."""
    seconds, scored, failed = _get()
    seconds.observe(report.seconds)
    scored.inc(report.scored)
    failed.inc(report.failed)


def start_metrics_server(port: int, folder: Path, addr: str = "0.0.0.0") -> None:
    """In the worker's parent, before the pool forks: multiprocess mode with samples in
    ``folder`` (emptied first: a previous run's counts are not this one's) and an HTTP exporter
    on ``addr:port`` that sums them. The folder is removed when the parent exits."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server, values

    # the value class is chosen when prometheus_client is first imported; whoever imported it
    # before the variable was set must not leave the children counting in private memory
    values.ValueClass = values.get_value_class()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(folder))
    try:
        start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise OSError(f"cannot serve worker metrics on {addr}:{port} (--metrics-port / "
                      f"VERGE_WORKER_METRICS_PORT): {exc.strerror or exc}") from None
    parent = os.getpid()

    def _cleanup():
        if os.getpid() == parent:
            shutil.rmtree(folder, ignore_errors=True)

    atexit.register(_cleanup)
