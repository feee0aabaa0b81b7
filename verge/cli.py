"""The ``verge`` command line. Thin: parse, call the function that does the work, print.

Errors a user can cause end in one line on stderr and exit status 1, never a traceback.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
from tqdm import tqdm

from .settings import Settings, SettingsError, settings_table


class UserError(click.ClickException):
    def show(self, file=None):
        click.echo(f"verge: error: {self.message}", err=True)


def _friendly(fn):
    """Turn the errors people cause into one clear line (and a non-zero exit)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from sqlalchemy.exc import OperationalError

        from models.errors import HeadMismatch, UnknownEncoder, WeightsUnavailable
        from store.s3 import ObjectStoreError
        from workers.errors import BrokerUnavailable, TrainingDataError

        try:
            return fn(*args, **kwargs)
        except ObjectStoreError as exc:
            raise UserError(str(exc)) from None
        except WeightsUnavailable as exc:
            raise UserError(f"{exc}; set VERGE_PRETRAINED to a local weights file, to a cached tag, "
                            f"or to 'none' for random weights") from None
        except (SettingsError, UnknownEncoder, HeadMismatch, BrokerUnavailable, TrainingDataError) as exc:
            raise UserError(str(exc)) from None
        except OperationalError as exc:
            url = _settings().resolved_database_url
            raise UserError(f"cannot use the database at {_redact(url)} (VERGE_DATABASE_URL): "
                            f"{str(exc.orig).strip().splitlines()[0][:200]}") from None
    return wrapper


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


@functools.lru_cache(maxsize=1)
def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise UserError(str(exc)) from None


def _migrated(settings: Settings) -> None:
    """Embedded SQLite migrates itself; a shared database is migrated on purpose (verge db upgrade)."""
    import migrations

    url = settings.resolved_database_url
    current = migrations.current_revision(url)
    if current == migrations.head_revision():
        return
    if url.startswith("sqlite"):
        migrations.upgrade(url)
        return
    raise UserError(f"the database at {_redact(url)} is at revision {current or 'none'}, "
                    f"not {migrations.head_revision()}; run `verge db upgrade`")


def _bar(desc: str, unit: str = "img"):
    return lambda total: tqdm(total=total, desc=desc, unit=unit, disable=None, file=sys.stderr)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """verge: submit images, score them with CLIP workers, review the uncertain ones."""


# ----------------------------------------------------------------------------- db
@main.group()
def db():
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@_friendly
def db_upgrade(revision):
    """Create or migrate the schema to the newest revision."""
    import migrations

    url = _settings().resolved_database_url
    migrations.upgrade(url, revision)
    click.echo(f"database {_redact(url)} is at revision {migrations.current_revision(url)}")


@db.command("current")
@_friendly
def db_current():
    """Print the schema revision of the database."""
    import migrations

    click.echo(migrations.current_revision(_settings().resolved_database_url) or "none (empty database)")


# ----------------------------------------------------------------------------- submit
@main.command()
@click.argument("paths", nargs=-1, type=str)
@click.option("--batch", "batch_name", help="Batch name (default: batch-<time>-<random>). "
              "An existing name adds to that batch.")
@click.option("--from", "path_lists", multiple=True, type=click.Path(path_type=Path),
              help="Text file of paths, one per line ('.txt' files given as PATH whose every line "
                   "is an existing path are read the same way).")
@click.option("--wait", is_flag=True, help="Show a progress bar until every image is scored or failed.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@_friendly
def submit(paths, batch_name, path_lists, wait, timeout, as_json):
    """Submit image files, folders (recursive) or lists of paths as one batch; or register the
    images under s3://BUCKET/PREFIX in place (nothing is downloaded)."""
    from workers.inplace import is_object_url
    from workers.submission import submit_paths

    if not paths and not path_lists:
        raise UserError("nothing to submit: give files, folders or --from LIST")
    missing = _missing(paths, path_lists)
    if len(missing) == len(paths) + len(path_lists):  # nothing given exists: no (empty) batch
        for path in missing:
            click.echo(f"skipped {path}: no such file or folder", err=True)
        given = "the path given does not" if len(missing) == 1 else \
            f"none of the {len(missing)} paths given"
        raise UserError(f"nothing to submit: {given} exist; no batch was created")
    settings = _settings()
    _migrated(settings)
    urls = [p for p in paths if is_object_url(p)]
    if urls:
        result = _register_in_place(settings, urls, [p for p in paths if not is_object_url(p)],
                                    path_lists, batch_name, as_json)
    else:
        result = submit_paths(settings, [Path(p) for p in paths], batch_name, path_lists,
                              progress_factory=None if as_json else _bar("submitting", "file"))
    if not as_json:
        for path, reason in result.skipped:
            click.echo(f"skipped {path}: {reason}", err=True)
        click.echo(f"batch {result.batch}: {result.submitted} files, {result.new} new, "
                   f"{result.duplicates} already known, {result.enqueued} queued in {result.chunks} tasks")
    status = _wait(settings, result.batch_id, timeout, quiet=as_json) if wait else None
    if as_json:
        click.echo(json.dumps({**result.as_dict(), **({"status": status} if status else {})}, indent=2))
    elif status:
        click.echo(_status_line(status))
    if missing:  # as cp and rsync do: the rest went in, and the exit status says not all did
        raise UserError(f"{len(missing)} of {len(paths) + len(path_lists)} paths given do not "
                        f"exist (named above); the rest were submitted as batch {result.batch}")
    if status and status["queued"]:
        sys.exit(2)


def _missing(paths, path_lists) -> list:
    """The paths and --from lists given that do not exist (URLs such as s3://... are left to
    the submission to judge)."""
    def local(p) -> bool:
        return not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", str(p))

    return ([p for p in paths if local(p) and not Path(p).exists()]
            + [p for p in path_lists if local(p) and not Path(p).is_file()])


def _register_in_place(settings: Settings, urls, paths, path_lists, batch_name, as_json):
    from workers.inplace import register_prefix

    if paths or path_lists or len(urls) > 1:
        raise UserError("give one s3://BUCKET/PREFIX per submission, without local paths "
                        "(submit folders as a separate batch)")
    bars = []  # made on the first registered page: a bucket that fails prints only its error

    def progress(n):
        if not bars:
            bars.append(_bar("registering", "obj")(None))
        bars[0].update(n)

    try:
        return register_prefix(settings, urls[0], batch_name, progress=None if as_json else progress)
    finally:
        for bar in bars:
            bar.close()


FAILURES_SHOWN = 1000  # failures `verge status BATCH` lists unless --failures says otherwise


def _batch_status(settings: Settings, batch_ref, failures: int | None = FAILURES_SHOWN) -> dict:
    """The batch's counts and (the first ``failures``, None = all) failures: read once, when
    it is shown, never on every poll."""
    from store import queries as q
    from store.db import session_scope

    with session_scope(settings.resolved_database_url) as s:
        batch = q.find_batch(s, batch_ref)
        if batch is None:
            raise UserError(f"no batch named or numbered {batch_ref!r}")
        counts = q.batch_counts(s, [batch.id]).get(batch.id, {})
        failed = q.failed_images(s, batch.id, limit=failures)
    st = {"batch": batch.name, "batch_id": batch.id, "total": counts.get("total", 0),
          "queued": counts.get("queued", 0) + counts.get("registered", 0),
          "scored": counts.get("scored", 0), "failed": counts.get("failed", 0),
          "routed": counts.get("routed", 0),
          "failures": [{"name": n, "reason": r} for n, r in failed]}
    if st["failed"] > len(failed):
        st["failures_not_listed"] = st["failed"] - len(failed)
    return st


def _batch_progress(settings: Settings, batch_id: int) -> dict:
    """What ``--wait`` polls: the batch's counts per status, one cheap query."""
    from store import queries as q
    from store.db import session_scope

    with session_scope(settings.resolved_database_url) as s:
        c = q.batch_progress(s, batch_id)
    return {"total": c["total"], "queued": c["queued"] + c["registered"], "scored": c["scored"],
            "failed": c["failed"]}


def _status_line(st: dict) -> str:
    return (f"batch {st['batch']}: {st['total']} images, {st['scored']} scored, {st['failed']} failed, "
            f"{st['queued']} queued, {st['routed']} routed to review")


def _wait(settings: Settings, batch_id: int, timeout: float | None, quiet: bool = False) -> dict:
    started = time.monotonic()
    status = _batch_progress(settings, batch_id)
    bar = tqdm(total=status["total"], desc="scoring", unit="img", disable=quiet or None, file=sys.stderr)
    hinted = False
    last_done, last_change = -1, time.monotonic()
    try:
        while True:
            done = status["scored"] + status["failed"]
            bar.update(done - bar.n)
            if status["queued"] == 0:
                return _batch_status(settings, batch_id)
            if done != last_done:
                last_done, last_change = done, time.monotonic()
            elif not hinted and not quiet and time.monotonic() - last_change > 60:
                bar.write("no progress for 60 s: is a worker running? (`verge worker`)")
                hinted = True
            if timeout is not None and time.monotonic() - started > timeout:
                bar.write(f"gave up waiting after {timeout:g} s; {status['queued']} images still queued")
                return _batch_status(settings, batch_id)
            time.sleep(0.5)
            status = _batch_progress(settings, batch_id)
    finally:
        bar.close()


# ----------------------------------------------------------------------------- status
@main.command()
@click.argument("batch", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (keys: batch, total, queued, scored, "
              "failed, routed, failures, and failures_not_listed when --failures cut the list).")
@click.option("--failures", "n_failures", type=click.IntRange(min=0), default=FAILURES_SHOWN,
              show_default=True, help="With BATCH: list at most this many failures (0: all).")
@_friendly
def status(batch, as_json, n_failures):
    """Progress of one batch, or of everything (and which head is active)."""
    from store import queries as q
    from store.db import session_scope

    settings = _settings()
    _migrated(settings)
    if batch:
        st = _batch_status(settings, batch, n_failures or None)
        if as_json:
            click.echo(json.dumps(st, indent=2))
            return
        click.echo(_status_line(st))
        for f in st["failures"]:
            click.echo(f"  failed {f['name']}: {f['reason']}")
        if st.get("failures_not_listed"):
            click.echo(f"  ... and {st['failures_not_listed']} more failures (--failures 0 lists all)")
        return
    with session_scope(settings.resolved_database_url) as s:
        mv = q.active_model(s)
        head = ({"id": mv.id, "kind": mv.kind, "encoder": mv.encoder, "metrics": mv.metrics}
                if mv else None)
        totals = q.totals(s)
        batches = q.list_batches(s)
        counts = q.batch_counts(s)
    rows = [{"batch": b.name, "batch_id": b.id, **{k: counts.get(b.id, {}).get(k, 0) for k in
             ("total", "queued", "scored", "failed", "routed")}} for b in batches]
    if as_json:
        click.echo(json.dumps({"head": head, "totals": totals, "batches": rows}, indent=2, default=str))
        return
    if head:
        acc = head["metrics"].get("train_accuracy")
        click.echo(f"active head: version {head['id']} ({head['kind']}, encoder {head['encoder']}"
                   + (f", train accuracy {acc:.3f}" if acc is not None else "") + ")")
    else:
        click.echo("no head is active: images are scored by zero-shot only and routed on its "
                   "p(road); train one with `verge train binary DIR`")
    click.echo(f"images: {totals['images']} ({totals['scored']} scored, {totals['failed']} failed, "
               f"{totals['queued']} queued); open review tasks: {totals['open_review_tasks']}")
    for r in rows:
        click.echo("  " + _status_line(r))


@main.command()
@click.argument("batch", required=False)
@_friendly
def requeue(batch):
    """Send scoring tasks again for images still queued (e.g. after a broker restart)."""
    from store import queries as q
    from store.db import session_scope
    from workers.submission import check_broker, requeue as do_requeue

    settings = _settings()
    _migrated(settings)
    check_broker(settings)
    batch_id = None
    if batch:
        with session_scope(settings.resolved_database_url) as s:
            found = q.find_batch(s, batch)
            if found is None:
                raise UserError(f"no batch named or numbered {batch!r}")
            batch_id = found.id
    click.echo(f"re-queued {do_requeue(settings, batch_id)} images")


# ----------------------------------------------------------------------------- processes
@main.command()
@click.option("--concurrency", "-c", type=int, default=None,
              help="Worker processes (default VERGE_WORKER_CONCURRENCY).")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--name", default=None, help="Worker node name (default verge-<pid>@<host>).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics on this port (default VERGE_WORKER_METRICS_PORT; 0 = off).")
@click.option("--queues", type=click.Choice(["all", "scoring", "jobs"]), default="all", show_default=True,
              help="What to consume: scoring chunks (VERGE_QUEUE), the periodic and follow-up jobs "
                   "(VERGE_JOBS_QUEUE: sweeper, retrain, re-score), or both.")
@_friendly
def worker(concurrency, loglevel, name, metrics_port, queues):
    """Run a Celery worker that scores chunks (CUDA when present, else CPU)."""
    from models.encoder import EncoderSpec, verify_weights
    from workers.app import app, configure

    from models.jpeg_decoders import missing_library

    settings = _settings()
    if concurrency:  # the pool processes size their torch thread pools by it
        settings = dataclasses.replace(settings, worker_concurrency=concurrency)
    _migrated(settings)
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
        from workers.metrics import serve

        try:
            serve(port, settings.data_dir / "metrics" / f"worker-{os.getpid()}")
        except OSError as exc:
            raise UserError(str(exc)) from None
    node = name or f"verge-{os.getpid()}@{socket.gethostname()}"
    quiet = []
    if settings.log_format == "json":  # no banner: every line on the output is a JSON object
        from .logs import json_logging_for_celery, use_json

        use_json(loglevel)
        json_logging_for_celery()
        quiet = ["--quiet"]
    consume = {"all": [settings.queue, settings.resolved_jobs_queue], "scoring": [settings.queue],
               "jobs": [settings.resolved_jobs_queue]}[queues]
    app.worker_main([*quiet, "worker", f"--loglevel={loglevel}", "-Q", ",".join(consume), "-n", node,
                     "-c", str(concurrency or settings.worker_concurrency), "--pool", "prefork",
                     "--without-mingle", "--without-gossip"])


@main.command()
@click.option("--loglevel", default="INFO", show_default=True)
@_friendly
def beat(loglevel):
    """Run Celery beat: the periodic jobs (re-queue stalled images; retraining joins later)."""
    from workers.app import app, configure

    settings = _settings()
    configure(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.log_format == "json":
        from .logs import use_json

        use_json(loglevel)
    app.Beat(loglevel=loglevel, schedule=str(settings.data_dir / "celerybeat-schedule"),
             quiet=settings.log_format == "json").run()


@main.command()
@click.option("--no-web", is_flag=True, help="Start the worker (and beat) only.")
@_friendly
def up(no_web):
    """Embedded mode in one command: migrate, start a worker, beat and the web UI; Ctrl-C stops."""
    settings = _settings()
    _migrated(settings)
    serve(settings, web=not no_web)


def serve(settings: Settings, web: bool = True, env: dict | None = None) -> None:
    """Run a worker, beat and (optionally) the web UI as child processes until Ctrl-C or until
    one of them stops; then stop the others."""
    env = {**os.environ, **(env or {})}
    # the jobs (sweeper, retrain, re-score) get a worker process of their own: a scoring backlog
    # never holds them up, and a retrain never takes a scoring process's place
    commands = {"worker": ["worker", "--queues", "scoring"],
                "jobs": ["worker", "--queues", "jobs", "-c", "1", "--metrics-port", "0"],
                "beat": ["beat"], **({"web": ["web"]} if web else {})}
    names = list(commands)
    procs = {name: subprocess.Popen([sys.executable, "-m", "verge", *cmd], env=env)
             for name, cmd in commands.items()}
    where = f"http://{settings.web_host}:{settings.web_port}/" if web else "no web UI"
    click.echo(f"verge is up ({', '.join(names)}; data in {settings.data_dir.resolve()}; {where}); "
               f"submit with `verge submit PATH`; Ctrl-C stops")
    try:
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        stopped = [n for n, p in procs.items() if p.poll() is not None]
        click.echo(f"verge: {', '.join(stopped)} stopped; stopping the rest", err=True)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


# ----------------------------------------------------------------------------- training
@main.group()
def train():
    """Train heads on stored embeddings."""


@train.command("binary")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=int, default=7, show_default=True)
@click.option("--class-weighting", is_flag=True, help="Weigh classes by n / (k * n_class).")
@click.option("--lr-halve-every", type=int, default=0, help="Halve the learning rate every N epochs.")
@click.option("--early-stopping", type=int, default=0, metavar="PATIENCE",
              help="Hold out a stratified 20 %% validation split, stop after PATIENCE epochs without a "
                   "better validation loss, keep the best epoch's weights; prints held-out metrics.")
@click.option("--augment", type=int, default=0, metavar="K",
              help="Add K augmented views of each minority-class image (embeddings cached).")
@click.option("--batch-size", type=int, default=3, show_default=True)
@click.option("--no-activate", is_flag=True, help="Record the head as a candidate only.")
@_friendly
def train_binary_cmd(folder, seed, epochs, class_weighting, lr_halve_every, early_stopping, augment,
                     batch_size, no_activate):
    """The seed's recipe (BCE, Adam lr 3e-3, batch 3, 7 epochs, fixed seed) on FOLDER/fields and
    FOLDER/roads; the seed's proposed fixes are flags, each off by default."""
    from models.training import Recipe
    from workers.training import train_binary_dir

    settings = _settings()
    _migrated(settings)
    recipe = Recipe(seed=seed, epochs=epochs, batch_size=batch_size, class_weighting=class_weighting,
                    lr_halve_every=lr_halve_every, val_fraction=0.2 if early_stopping else 0.0,
                    patience=early_stopping)
    out = train_binary_dir(
        settings, folder, recipe, on_epoch=lambda st: click.echo(
            f"epoch {st.epoch}: loss {st.loss:.4f}  accuracy {st.accuracy:.4f}"
            + (f"  val loss {st.val['log_loss']:.4f}  val macro-F1 {st.val['macro_f1']:.3f}" if st.val else "")),
        progress_factory=_bar("embedding"), activate=not no_activate, augment=augment)
    for name, reason in out.failed:
        click.echo(f"left out {name}: {reason}", err=True)
    val = out.metrics.get("validation")
    if val:
        click.echo(f"held-out (best epoch {out.metrics['best_epoch']}): accuracy {val['accuracy']:.3f}, "
                   f"macro-F1 {val['macro_f1']:.3f}, ECE {val['ece']:.3f}, confusion {val['confusion']} "
                   f"(rows: field, road)")
    click.echo(f"model version {out.version_id} ({'active' if not no_activate else 'candidate'}): "
               f"{out.examples} examples ({out.reused} embeddings reused, {out.embedded} computed"
               + (f", {out.metrics['augmented_views']} augmented views" if augment else "")
               + f"), checkpoint kept in the database")


@main.group()
def models():
    """Model versions."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
@_friendly
def models_list(as_json):
    """List model versions, newest first."""
    from sqlalchemy import select

    from store.db import session_scope
    from store.schema import ModelVersion

    settings = _settings()
    _migrated(settings)
    with session_scope(settings.resolved_database_url) as s:
        rows = [{"id": m.id, "kind": m.kind, "state": m.state, "encoder": m.encoder,
                 "created_at": m.created_at.isoformat(), "metrics": m.metrics, "path": m.path}
                for m in s.scalars(select(ModelVersion).order_by(ModelVersion.id.desc()))]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no model versions yet; train one with `verge train binary DIR`")
    for r in rows:
        acc = r["metrics"].get("train_accuracy")
        click.echo(f"{r['id']:>4}  {r['state']:<11} {r['kind']:<12} {r['encoder']:<32} "
                   f"{r['created_at'][:19]}" + (f"  train acc {acc:.3f}" if acc is not None else ""))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.option("--no-rescore", is_flag=True, help="Do not re-score open review tasks after a promotion.")
@_friendly
def retrain(as_json, no_rescore):
    """Train a three-class candidate on all labels; promote it only if it beats the active head."""
    from store.locks import LeaseLost, LockBusy
    from workers.retrain import retrain as run

    settings = _settings()
    _migrated(settings)
    requested = []  # the re-score is requested as soon as the promotion commits
    try:
        out = run(settings, trigger="manual", on_epoch=None if as_json else (
            lambda st: click.echo(f"epoch {st.epoch}: loss {st.loss:.4f}  train acc {st.accuracy:.3f}"
                                  + (f"  val macro-F1 {st.val['macro_f1']:.3f}" if st.val else ""))),
            on_promoted=None if no_rescore else (lambda _v: requested.append(_after_activation(settings))))
    except LockBusy as exc:
        raise UserError(f"another retrain is running: {exc}") from None
    except LeaseLost as exc:
        raise UserError(f"this retrain stopped without promoting: {exc}") from None
    rescored = requested[0] if requested else None
    if as_json:
        click.echo(json.dumps({**out.as_dict(), "rescore": rescored}, indent=2, default=str))
        return
    if out.version_id is None:
        click.echo(f"nothing trained: {out.reason}")
        return
    c = out.candidate
    click.echo(f"candidate version {out.version_id}: held-out accuracy {c['accuracy']:.3f}, "
               f"macro-F1 {c['macro_f1']:.3f}, ECE {c['ece']:.3f} on {c['n']} images "
               f"({out.labels} labeled, {len(out.ties)} ties left for adjudication)")
    if out.active:
        click.echo(f"active version {out.active_version_id} on the same images: accuracy "
                   f"{out.active['accuracy']:.3f}, macro-F1 {out.active['macro_f1']:.3f}")
    click.echo(("PROMOTED: " if out.promoted else "kept as candidate: ") + out.reason)
    if out.suspects:
        click.echo(f"{out.suspects} training labels look wrong and were routed to review (suspect_label)")
    if out.seconds:
        click.echo("steps: " + ", ".join(f"{step} {s:.1f} s" for step, s in out.seconds.items()))
    if rescored:
        click.echo(rescored)


def _after_activation(settings: Settings) -> str:
    """Ask the workers to re-score open review tasks with the newly active head."""
    from workers.app import request_rescore

    problem = request_rescore(settings)
    if problem:
        return f"open review tasks not re-scored ({problem}); run `verge models rescore` later"
    return "re-scoring open review tasks with the new head (a worker does it)"


@models.command("activate")
@click.argument("version", type=int)
@_friendly
def models_activate(version):
    """Make VERSION the active head (workers switch on their next chunk)."""
    from workers.retrain import activate

    settings = _settings()
    _migrated(settings)
    try:
        mv = activate(settings, version)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"version {mv.id} ({mv.kind}) is active; {_after_activation(settings)}")


@models.command("rollback")
@_friendly
def models_rollback():
    """Re-activate the previous head and reopen the review tasks the current one resolved."""
    from workers.retrain import rollback

    settings = _settings()
    _migrated(settings)
    try:
        old, new, reopened = rollback(settings)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"rolled back from version {old} to version {new}; {reopened} resolved review tasks reopened")


@models.command("rescore")
@_friendly
def models_rescore():
    """Re-score open review tasks with the active head (normally automatic after a promotion)."""
    settings = _settings()
    _migrated(settings)
    click.echo(_after_activation(settings))


@main.command()
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "imagefolder", "hf", "label-studio"]),
              default="csv", show_default=True,
              help="csv/jsonl: one row per image. imagefolder: DIR/[SPLIT/]CLASS/ image files. hf: the "
                   "same plus metadata.parquet, for datasets.load_dataset('imagefolder', data_dir=DIR). "
                   "label-studio: tasks JSON with verge's predictions as pre-annotations.")
@click.option("--batch", default=None, help="Only this batch (name or number).")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Write here instead of standard output (the folder, for imagefolder and hf).")
@click.argument("dest", required=False, type=click.Path(path_type=Path))
@click.option("--split", default=None, metavar="NAME=F,...",
              help="imagefolder/hf: split by image hash, e.g. train=0.8,val=0.2.")
@click.option("--embeddings", is_flag=True, help="hf: add each image's stored CLIP embedding.")
@click.option("--image-url", default=None, metavar="TEMPLATE",
              help="label-studio: where Label Studio loads each image; {id} and {sha256} are "
                   "replaced (default: this verge web UI, http://VERGE_WEB_HOST:VERGE_WEB_PORT/images/{id}).")
@_friendly
def export(fmt, batch, output, dest, split, embeddings, image_url):
    """Per image: hash, source name, latest prediction, model version, human labels, final label.
    DEST is the same as --output."""
    from store import queries as q
    from store.db import session_scope
    from store.export import write_export

    settings = _settings()
    if dest and output and dest != output:
        raise UserError("give the destination once: DEST or --output")
    output = output or dest
    if fmt not in ("csv", "jsonl"):
        from .exports import export_more

        return export_more(settings, fmt, batch, output, split, embeddings, image_url, _migrated)
    if split or embeddings or image_url:
        raise UserError("--split, --embeddings and --image-url go with --format imagefolder, hf or label-studio")
    _migrated(settings)
    with session_scope(settings.resolved_database_url) as s:
        batch_id = None
        if batch:
            found = q.find_batch(s, batch)
            if found is None:
                raise UserError(f"no batch named or numbered {batch!r}")
            batch_id = found.id
        if output:
            with open(output, "w", newline="", encoding="utf-8") as fh:
                n = write_export(s, fh, fmt, batch_id)
            click.echo(f"wrote {n} images to {output}", err=True)
        else:
            write_export(s, sys.stdout, fmt, batch_id)


@main.group("import")
def import_():
    """Bring labels made elsewhere into verge."""


@import_.command("label-studio")
@click.argument("export_file", type=click.Path(path_type=Path))
@click.option("--user", "user_map", multiple=True, metavar="LS_USER=NAME",
              help="Map a Label Studio annotator (numeric id or email) to an existing verge user; "
                   "unmapped annotators get a verge user of their own (a reviewer without a password).")
@_friendly
def import_label_studio(export_file, user_map):
    """Labels from a Label Studio JSON export of tasks made by `verge export --format label-studio`."""
    from .exports import import_label_studio as run

    settings = _settings()
    _migrated(settings)
    run(settings, export_file, user_map)


# ----------------------------------------------------------------------------- misc
@main.command("settings")
@click.option("--markdown", is_flag=True, help="As the README's table.")
def settings_cmd(markdown):
    """Print every setting, its default and what it does."""
    if markdown:
        click.echo("| variable | default | meaning |\n|---|---|---|")
    for env, default, doc in settings_table():
        if markdown:
            click.echo(f"| `{env}` | `{default}` | {doc} |".replace("|this", "\\|this")
                       .replace("by `|`", "by `\\|`"))
        else:
            click.echo(f"{env:<30} {default:<24} {doc}")


@main.command()
@click.option("--data", "data", type=click.Path(path_type=Path), default=None,
              help="Folder with fields/ and roads/ (default: the shared photos, else generated ones).")
@click.option("--no-serve", is_flag=True, help="Exit after the table instead of serving the web UI.")
@_friendly
def demo(data, no_serve):
    """Set up, train the seed's head, score a batch with a worker, print what was routed, then
    serve the web UI with a demo login (Ctrl-C stops)."""
    from .demo import run_demo

    run_demo(_settings(), data, serve_after=not no_serve)


from webui.cli import register as _register_web; _register_web(main)
from .gold_cli import register as _register_gold; _register_gold(main)

if __name__ == "__main__":  # pragma: no cover
    main()
