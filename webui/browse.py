"""Browse every image with filters, and one image's whole history."""
from __future__ import annotations

import re

from flask import Blueprint, render_template, request
from werkzeug.exceptions import BadRequest, NotFound

from store import browse as store_browse
from store import queries as q
from store.schema import CLASSES, IMAGE_STATES
from workers.routing import REASONS

from .context import db, int_arg

bp = Blueprint("browse", __name__)
PAGE = 60
# the query parameters a page link carries on (never arbitrary keys: they would reach url_for)
FILTER_PARAMS = ("batch", "status", "class", "min", "max", "routed", "labeled", "reason")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")


def _float(name: str) -> float | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    if not _DECIMAL.fullmatch(raw):
        raise BadRequest(f"'{name}' must be a number from 0 to 1")
    return min(max(float(raw), 0.0), 1.0)


def _tri(name: str) -> bool | None:
    return {"yes": True, "no": False}.get(request.args.get(name, ""))


def parse_filter() -> store_browse.BrowseFilter:
    """Filters from the query string: a malformed number is a 400; an unknown status, class or
    reason is ignored."""
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
    args = {k: request.args[k] for k in FILTER_PARAMS if request.args.get(k, "") != ""}
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
