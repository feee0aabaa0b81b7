"""Batches with their progress, one batch's status, and (for admins) uploading a new one."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.exceptions import NotFound

from store import browse as store_browse
from store.progress import labeled_counts
from workers.errors import BrokerUnavailable

from .auth import admin_required
from .context import db, int_arg, settings
from .errors import error_response
from .uploads import batch_name, submit_uploads

bp = Blueprint("batches", __name__)
PAGE = 50
SHOWN_SKIPS = 5


@bp.get("/batches")
def index():
    before = int_arg("before")
    with db() as s:
        rows = store_browse.batches_page(s, before=before, limit=PAGE + 1)
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        labeled = labeled_counts(s, [b.id for b, _ in rows])
    return render_template("batches.html", rows=rows, before=before, labeled=labeled,
                           next_before=rows[-1][0].id if more else None,
                           max_file_bytes=settings().max_file_bytes,
                           max_upload_bytes=settings().max_upload_bytes)


@bp.get("/batches/<int:batch_id>")
def detail(batch_id: int):
    with db() as s:
        st = store_browse.batch_status(s, batch_id, int_arg("failures_offset", 0, lo=0))
    if st is None:
        raise NotFound(f"no batch {batch_id}")
    return render_template("batch.html", st=st)


@bp.post("/batches/upload")
@admin_required
def upload():
    name = batch_name(request.form.get("batch"))
    files = request.files.getlist("files") + request.files.getlist("folder")
    try:
        result = submit_uploads(settings(), files, name, source="web")
    except BrokerUnavailable as exc:
        return error_response(503, f"{exc}; nothing was submitted")
    msg = (f"Batch {result.batch}: {result.submitted} files, {result.new} new, "
           f"{result.duplicates} already known, {result.enqueued} sent for scoring.")
    flash(msg, "info")
    # flashes travel in the session cookie (4 KB at most): a few, shortened
    for path, reason in result.skipped[:SHOWN_SKIPS]:
        flash(f"Skipped {_short(str(path))}: {_short(reason)}", "warn")
    if len(result.skipped) > SHOWN_SKIPS:
        flash(f"... and {len(result.skipped) - SHOWN_SKIPS} more skipped files.", "warn")
    return redirect(url_for("batches.detail", batch_id=result.batch_id))


@bp.post("/batches/register")
@admin_required
def register():
    """Register the image objects under an s3:// prefix in place (nothing is copied)."""
    from .inplace import register as register_prefix

    result = register_prefix(request.form.get("url"), batch_name(request.form.get("batch")), "web")
    flash(f"Batch {result.batch}: {result.submitted} objects registered in place, {result.new} new, "
          f"{result.enqueued} sent for scoring.", "info")
    for path, reason in result.skipped[:SHOWN_SKIPS]:
        flash(f"Skipped {_short(str(path))}: {_short(reason)}", "warn")
    if len(result.skipped) > SHOWN_SKIPS:
        flash(f"... and {len(result.skipped) - SHOWN_SKIPS} more skipped objects.", "warn")
    return redirect(url_for("batches.detail", batch_id=result.batch_id))


def _short(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
