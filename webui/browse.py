"""Browse every image with filters, and one image's whole history."""
from __future__ import annotations

import re

from flask import Blueprint, render_template, request
from werkzeug.exceptions import NotFound

from store import browse as store_browse
from store import queries as q
from store.schema import CLASSES, IMAGE_STATES
from workers.routing import REASONS

from .context import db, int_arg

bp = Blueprint("browse", __name__)
PAGE = 60


def _float(name: str) -> float | None:
    try:
        value = float(request.args.get(name, ""))
    except ValueError:
        return None
    return min(max(value, 0.0), 1.0)


def _tri(name: str) -> bool | None:
    return {"yes": True, "no": False}.get(request.args.get(name, ""))


def parse_filter() -> store_browse.BrowseFilter:
    """Filters from the query string; anything unknown is ignored rather than an error."""
    a = request.args
    reason = a.get("reason", "")
    return store_browse.BrowseFilter(
        batch_id=int_arg("batch"),
        status=a.get("status") if a.get("status") in IMAGE_STATES else None,
        predicted_class=a.get("class") if a.get("class") in CLASSES else None,
        score_min=_float("min"), score_max=_float("max"),
        routed=_tri("routed"), labeled=_tri("labeled"),
        reason=reason if re.fullmatch(r"[a-z_]{1,40}", reason) else None)


@bp.get("/browse")
def index():
    f = parse_filter()
    after = int_arg("after")
    with db() as s:
        rows = store_browse.browse_images(s, f, after=after, limit=PAGE + 1)
        batches = q.list_batches(s)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    args = {k: v for k, v in request.args.items() if k != "after" and v != ""}
    return render_template("browse.html", rows=rows, f=f, batches=batches, classes=CLASSES,
                           states=IMAGE_STATES, reasons=REASONS, args=args, after=after,
                           next_after=rows[-1][0].id if more and rows else None)


@bp.get("/browse/<int:image_id>")
def item(image_id: int):
    with db() as s:
        history = store_browse.image_history(s, image_id)
    if history is None:
        raise NotFound(f"no image {image_id}")
    return render_template("item.html", h=history, image=history["image"])
