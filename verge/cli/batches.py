"""``verge submit``, ``verge status`` and ``verge requeue``: batches of images in, their
progress out."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

from verge.batchstatus import FAILURES_SHOWN, batch_status, status_line, wait_for_batch
from verge.clikit import UserError, find_batch_id, friendly, migrated_settings, progress_bar, with_database
from verge.settings import Settings


@click.command()
@click.argument("paths", nargs=-1, type=str)
@click.option("--batch", "batch_name", help="Batch name (default: batch-<time>-<random>). "
              "An existing name adds to that batch.")
@click.option("--from", "path_lists", multiple=True, type=click.Path(path_type=Path),
              help="Text file of paths, one per line ('.txt' files given as PATH whose every line "
                   "is an existing path are read the same way).")
@click.option("--wait", is_flag=True, help="Show a progress bar until every image is scored or failed.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@friendly
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
    settings = migrated_settings()
    urls = [p for p in paths if is_object_url(p)]
    if urls:
        result = _register_in_place(settings, urls, [p for p in paths if not is_object_url(p)],
                                    path_lists, batch_name, as_json)
    else:
        result = submit_paths(settings, [Path(p) for p in paths], batch_name, path_lists,
                              progress_factory=None if as_json else progress_bar("submitting", "file"))
    if not as_json:
        for path, reason in result.skipped:
            click.echo(f"skipped {path}: {reason}", err=True)
        click.echo(f"batch {result.batch}: {result.submitted} files, {result.new} new, "
                   f"{result.duplicates} already known, {result.enqueued} queued in {result.chunks} tasks")
    status = wait_for_batch(settings, result.batch_id, timeout, quiet=as_json) if wait else None
    if as_json:
        click.echo(json.dumps({**result.as_dict(), **({"status": status} if status else {})}, indent=2))
    elif status:
        click.echo(status_line(status))
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
            bars.append(progress_bar("registering", "obj")(None))
        bars[0].update(n)

    try:
        return register_prefix(settings, urls[0], batch_name, progress=None if as_json else progress)
    finally:
        for bar in bars:
            bar.close()


@click.command()
@click.argument("batch", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (keys: batch, total, queued, scored, "
              "failed, routed, failures, and failures_not_listed when --failures cut the list).")
@click.option("--failures", "n_failures", type=click.IntRange(min=0), default=FAILURES_SHOWN,
              show_default=True, help="With BATCH: list at most this many failures (0: all).")
@with_database
def status(batch, as_json, n_failures, settings):
    """Progress of one batch, or of everything (and which head is active)."""
    from store.db import session_scope
    from store.images import batch_counts, list_batches, totals as image_totals
    from store.model_versions import active_model

    if batch:
        st = batch_status(settings, batch, n_failures or None)
        if as_json:
            click.echo(json.dumps(st, indent=2))
            return
        click.echo(status_line(st))
        for f in st["failures"]:
            click.echo(f"  failed {f['name']}: {f['reason']}")
        if st.get("failures_not_listed"):
            click.echo(f"  ... and {st['failures_not_listed']} more failures (--failures 0 lists all)")
        return
    with session_scope(settings.resolved_database_url) as s:
        mv = active_model(s)
        head = ({"id": mv.id, "kind": mv.kind, "encoder": mv.encoder, "metrics": mv.metrics}
                if mv else None)
        totals = image_totals(s)
        batches = list_batches(s)
        counts = batch_counts(s)
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
        click.echo("  " + status_line(r))


@click.command()
@click.argument("batch", required=False)
@with_database
def requeue(batch, settings):
    """Send scoring tasks again for images still queued (e.g. after a broker restart)."""
    from store.db import session_scope
    from workers.app import check_broker, requeue as do_requeue

    check_broker(settings)
    found = None
    if batch:
        with session_scope(settings.resolved_database_url) as s:
            found = find_batch_id(s, batch)
    click.echo(f"re-queued {do_requeue(settings, found)} images")
