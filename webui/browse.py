"""Browse every image with filters, and one image's whole history."""
from __future__ import annotations

import re

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from werkzeug.exceptions import BadRequest, Conflict, NotFound

from store import browse as store_browse
from store import corrections
from models.classes import CLASSES
from store.images import list_batches
from store.schema import IMAGE_STATES, Label
from workers.routing import REASONS

from .context import db, int_arg, wants_json
from .filters import class_name
from .payloads import body

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
        batches = list_batches(s)
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        mine = own_labels(s, [image.id for image, _, _ in rows])
    args = {k: request.args[k] for k in FILTER_PARAMS if request.args.get(k, "") != ""}
    return render_template("browse.html", rows=rows, f=f, batches=batches, classes=CLASSES,
                           states=IMAGE_STATES, reasons=REASONS, args=args, after=after,
                           next_after=rows[-1][0].id if more and rows else None, mine=mine,
                           back_to=request.full_path.rstrip("?"))


def own_labels(session, image_ids: list[int]) -> dict[int, str]:
    """The signed-in reviewer's label that counts (their newest) for each of these images."""
    if not image_ids:
        return {}
    out: dict[int, str] = {}
    for image_id, cls in session.execute(
            select(Label.image_id, Label.cls).where(Label.user_id == current_user.id,
                                                    Label.image_id.in_(image_ids))
            .order_by(Label.id)):
        out[image_id] = cls
    return out


@bp.get("/browse/<int:image_id>")
def item(image_id: int):
    with db() as s:
        history = store_browse.image_history(s, image_id)
        if history is None:
            raise NotFound(f"no image {image_id}")
        mine = corrections.own_label(s, image_id, current_user.id)
        mine = mine.cls if mine is not None else None
    return render_template("item.html", h=history, image=history["image"], mine=mine,
                           classes=CLASSES, back_to=request.path)


def _back(image_id: int) -> str:
    """Where the form came from: a path on this site (browse or the item page)."""
    target = request.form.get("next", "")
    if target.startswith("/browse") and "//" not in target and "\\" not in target:
        return target
    return url_for("browse.item", image_id=image_id)


@bp.post("/browse/<int:image_id>/label")
def relabel(image_id: int):
    """Correct your own label of an image (from its page or from browse): the earlier label
    stays in the history, the new one is final for you."""
    cls = body().get("class")
    if cls not in CLASSES:
        raise BadRequest(f"'class' must be one of {', '.join(CLASSES)}")
    with db() as s:
        try:
            done = corrections.relabel(s, image_id, current_user.id, cls)
        except corrections.NotYours as exc:
            raise Conflict(str(exc)) from None
        except LookupError:
            raise NotFound(f"no image {image_id}") from None
    if wants_json():
        return jsonify(image_id=image_id, previous=done.previous, label=cls, changed=done.changed)
    if done.changed:
        flash(f"Image #{image_id}: your label is now “{class_name(cls)}” (was "
              f"“{class_name(done.previous)}”, kept in the history).", "info")
    else:
        flash(f"Image #{image_id} already has your label “{class_name(cls)}”.", "info")
    return redirect(_back(image_id))
