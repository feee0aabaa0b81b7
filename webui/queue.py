"""The queue at a glance: open tasks by reason and by batch, the oldest waiting, who is active."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.exceptions import BadRequest

from store import leases
from store import review as store_review
from store.schema import utcnow

from .auth import admin_required
from .context import db

bp = Blueprint("queue", __name__)


@bp.get("/queue")
def overview():
    with db() as s:
        o = store_review.queue_overview(s)
    return render_template("queue.html", o=o, now=utcnow())


@bp.post("/queue/release")
@admin_required
def release():
    """An admin hands back every image a reviewer holds (they left without signing out)."""
    name = request.form.get("reviewer", "").strip()
    if not name or len(name) > 100:
        raise BadRequest("'reviewer' (the name whose claims to release) is required")
    with db() as s:
        n = leases.release_all(s, name)
    flash(f"Released {n} image{'s' if n != 1 else ''} held by {name}; anyone can review "
          f"{'them' if n != 1 else 'it'} now." if n else f"{name} holds no images now.", "info")
    return redirect(url_for("queue.overview"))
