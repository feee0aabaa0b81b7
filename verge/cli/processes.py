"""``verge worker``, ``verge beat`` and ``verge up``: the long-running processes."""
from __future__ import annotations

import dataclasses
import os
import socket

import click

from verge.clikit import UserError, friendly, load_settings, with_database


@click.command()
@click.option("--concurrency", "-c", type=int, default=None,
              help="Worker processes (default VERGE_WORKER_CONCURRENCY).")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--name", default=None, help="Worker node name (default verge-<pid>@<host>).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics on this port (default VERGE_WORKER_METRICS_PORT; 0 = off).")
@click.option("--queues", type=click.Choice(["all", "scoring", "jobs"]), default="all", show_default=True,
              help="What to consume: scoring chunks (VERGE_QUEUE), the periodic and follow-up jobs "
                   "(VERGE_JOBS_QUEUE: sweeper, retrain, re-score), or both.")
@with_database
def worker(concurrency, loglevel, name, metrics_port, queues, settings):
    """Run a Celery worker that scores chunks (CUDA when present, else CPU)."""
    from models.encoder import EncoderSpec
    from workers.app import app, configure
    from workers.weights import verify_weights

    from models.jpeg_decoders import missing_library

    if concurrency:  # the pool processes size their torch thread pools by it
        settings = dataclasses.replace(settings, worker_concurrency=concurrency)
    # Fail here, in one line, rather than in every task; each worker process loads its own copy.
    # the blob store must answer (a missing bucket, refused credentials, no endpoint)
    from store.blobs import open_blobs

    open_blobs(settings.resolved_blob_url).check()
    verify_weights(EncoderSpec(settings.encoder, settings.pretrained))
    if settings.device != "cpu" and (why := missing_library(settings.gpu_decode)):
        raise UserError(why)
    configure(settings)
    import workers.tasks  # noqa: F401 - registers the tasks

    port = settings.worker_metrics_port if metrics_port is None else metrics_port
    if port:  # before the pool forks: its processes write samples the exporter here sums
        from workers.metrics import start_metrics_server

        try:
            start_metrics_server(port, settings.data_dir / "metrics" / f"worker-{os.getpid()}")
        except OSError as exc:
            raise UserError(str(exc)) from None
    node = name or f"verge-{os.getpid()}@{socket.gethostname()}"
    quiet = []
    if settings.log_format == "json":  # no banner: every line on the output is a JSON object
        from verge.logs import json_logging_for_celery, use_json

        use_json(loglevel)
        json_logging_for_celery()
        quiet = ["--quiet"]
    consume = {"all": [settings.queue, settings.resolved_jobs_queue], "scoring": [settings.queue],
               "jobs": [settings.resolved_jobs_queue]}[queues]
    app.worker_main([*quiet, "worker", f"--loglevel={loglevel}", "-Q", ",".join(consume), "-n", node,
                     "-c", str(concurrency or settings.worker_concurrency), "--pool", "prefork",
                     "--without-mingle", "--without-gossip"])


@click.command()
@click.option("--loglevel", default="INFO", show_default=True)
@friendly
def beat(loglevel):
    """Run Celery beat: the periodic jobs (re-queue stalled images; retraining joins later)."""
    from workers.app import app, configure

    settings = load_settings()
    configure(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.log_format == "json":
        from verge.logs import use_json

        use_json(loglevel)
    app.Beat(loglevel=loglevel, schedule=str(settings.data_dir / "celerybeat-schedule"),
             quiet=settings.log_format == "json").run()


@click.command()
@click.option("--no-web", is_flag=True, help="Start the worker (and beat) only.")
@with_database
def up(no_web, settings):
    """Embedded mode in one command: migrate, start a worker, beat and the web UI; Ctrl-C stops."""
    from verge.supervisor import supervise

    supervise(settings, web=not no_web)
