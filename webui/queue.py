"""The queue at a glance: open tasks by reason and by batch, the oldest waiting, who is active."""
from __future__ import annotations

from flask import Blueprint, render_template

from store import review as store_review
from store.schema import utcnow

from .context import db

bp = Blueprint("queue", __name__)


@bp.get("/queue")
def overview():
    with db() as s:
        o = store_review.queue_overview(s)
    return render_template("queue.html", o=o, now=utcnow())
